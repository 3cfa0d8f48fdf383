"""The modality contract: how one kind of item is checked, identified and put into a prompt."""

import abc

import numpy as np


class Modality(abc.ABC):
    """What the core needs to know about a kind of item, and nothing more.

    A modality checks a batch (:meth:`check`: the items in the form models receive, and a problem
    per item or None), names each item's content for the call cache and for recorded answers
    (:meth:`key`), and says how an item enters a chat prompt (:meth:`content`: a string, or a chat
    content part such as an image). Deciding and calibrating never look at items at all.
    """

    #: Registry name (``"text"``, ``"rows"``, ``"image"``).
    name: str = ""
    #: How the default prompt introduces the item ("Text: ...").
    noun: str = "Text"

    @classmethod
    @abc.abstractmethod
    def recognises(cls, X) -> bool:
        """Whether ``modality="auto"`` should read ``X`` as this kind of item."""

    @classmethod
    def for_data(cls, X) -> "Modality":
        """An instance suited to ``X`` (for example, one that knows a table's column names)."""
        return cls()

    @abc.abstractmethod
    def check(self, X) -> tuple[np.ndarray, list | None]:
        """``(items, problems)``: the items as models receive them, and one problem (a string) or None per item.

        ``problems`` is None when no single item can be wrong (the batch as a whole was checked).
        A batch that cannot be read at all raises :class:`~datashunt.exceptions.DataError`.
        """

    @abc.abstractmethod
    def key(self, item) -> str:
        """The item's content as a string, for cache keys and recorded-answer lookups."""

    @abc.abstractmethod
    def content(self, item):
        """The item as it enters a chat prompt: a string, or a chat content part (a dict)."""

    def prompt_key(self, item):
        """What stands for the item in the cache key of a prompt: its content, unless that is large."""
        return self.content(item)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def object_column(values) -> np.ndarray:
    """A 1-D object array holding ``values`` as they are (arrays stay whole items).

    Examples
    --------
    >>> object_column([np.zeros((2, 2)), np.ones((2, 2))]).shape
    (2,)
    """
    out = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        out[i] = value
    return out
