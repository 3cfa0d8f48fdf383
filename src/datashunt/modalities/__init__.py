"""Modalities: what an item is (a text, a row of features, an image), known in one place.

:func:`as_inputs` reads a batch as one modality, chosen by name or recognised from the data, and
returns the items as models receive them with a problem (or None) per item. A new modality is one
file with a :class:`~datashunt.modalities.base.Modality` subclass and an entry in ``REGISTRY``.
"""

from dataclasses import dataclass

import numpy as np

from ..exceptions import ConfigError
from .base import Modality
from .image import Image
from .rows import Rows
from .text import Text

REGISTRY = {"text": Text, "rows": Rows, "image": Image}
NAMES = ("auto", *REGISTRY)


@dataclass
class Inputs:
    """A checked batch: ``items`` (1-D object array, or a 2-D array of rows), ``problems`` (one
    string or None per item; None when no single item can be wrong) and the ``modality`` read."""

    items: np.ndarray
    problems: list | None
    modality: Modality

    def __len__(self) -> int:
        return len(self.items)

    @property
    def valid(self) -> np.ndarray:
        if self.problems is None:
            return np.ones(len(self.items), dtype=bool)
        return np.array([p is None for p in self.problems], dtype=bool)


def get_modality(modality="auto", X=None) -> Modality:
    """The modality named ``modality`` (an instance passes through), or the one ``X`` looks like.

    Examples
    --------
    >>> get_modality("auto", ["a text"]).name, get_modality("auto", np.zeros((3, 2))).name
    ('text', 'rows')
    >>> get_modality("auto", np.zeros((3, 8, 8))).name
    'image'
    """
    if isinstance(modality, Modality):
        return modality
    if modality == "auto":
        for cls in (Image, Rows, Text):
            if cls.recognises(X):
                return cls.for_data(X)
        return Rows.for_data(X)  # scikit-learn's checks say what is wrong with it
    if modality not in REGISTRY:
        raise ConfigError(f"unknown modality {modality!r}; choose one of {list(NAMES)}")
    return REGISTRY[modality].for_data(X)


def as_inputs(X, modality="auto") -> Inputs:
    """Check a batch as ``modality`` (``"auto"``: recognised from ``X``).

    Examples
    --------
    >>> batch = as_inputs(["fine", "  ", None, 3])
    >>> batch.modality.name, batch.problems
    ('text', [None, 'blank text', 'missing text (None/NaN)', 'not a string (int)'])
    """
    chosen = get_modality(modality, X)
    items, problems = chosen.check(X)
    return Inputs(items, problems, chosen)
