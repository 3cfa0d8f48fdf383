"""Prompts for the large model.

The item's text comes last so that every prompt of a run shares one long prefix (the
instruction and the label list), which a local model evaluates once and reuses.
"""

import string
from dataclasses import dataclass

import numpy as np

from ..exceptions import ConfigError

MAX_PROMPT_CHARS = 100_000
TEMPLATE_FIELDS = ("instruction", "labels", "hint", "text")
ITEM_LINE = "{noun}: {{text}}"
ITEM_MARK = "\x00item\x00"  # where a non-text item goes in a formatted template
DEFAULT_TEMPLATE = "{instruction}\nAnswer with exactly one word from this list: {labels}.\n{hint}\nText: {text}"


def default_template(noun: str = "Text") -> str:
    """The template used when a prompt gives none: the item introduced by its modality's noun.

    Examples
    --------
    >>> default_template() == DEFAULT_TEMPLATE
    True
    """
    return DEFAULT_TEMPLATE.replace("Text: {text}", ITEM_LINE.format(noun=noun))


@dataclass(frozen=True)
class Prompt:
    """A chat prompt that asks the large model for one label.

    ``template`` None uses :func:`default_template` for the item's modality ("Text: ...",
    "Image: ..."). An item that is not text (an image) enters the message as its own content part
    where ``{text}`` stands.

    Examples
    --------
    >>> p = Prompt("Is this movie review positive or negative?")
    >>> p.messages("A gem.", ["negative", "positive"])[0]["content"].splitlines()[-1]
    'Text: A gem.'
    >>> parts = p.messages({"type": "image_url", "image_url": {"url": "data:,"}}, ["cat", "dog"], noun="Image")
    >>> [part["type"] for part in parts[0]["content"]]
    ['text', 'image_url']
    """

    instruction: str = "Classify the text."
    template: str | None = None
    system: str | None = None

    def __post_init__(self):
        if not isinstance(self.instruction, str):
            raise ConfigError(f"prompt instruction must be a string, got {type(self.instruction).__name__}")
        for name in ("template", "system"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                raise ConfigError(f"prompt {name} must be a string or None, got {type(getattr(self, name)).__name__}")
        size = len(self.instruction) + len(self.template or DEFAULT_TEMPLATE) + len(self.system or "")
        if size > MAX_PROMPT_CHARS:
            raise ConfigError(
                f"prompt instruction, template and system hold {size:,} characters; at most "
                f"{MAX_PROMPT_CHARS:,} are sent with every item"
            )
        if self.template is not None:
            check_template(self.template)

    def messages(self, item, labels: list[str], hint: str | None = None, noun: str = "Text") -> list[dict]:
        """Chat messages for one item (a string, or a chat content part); ``hint`` is extra
        knowledge placed before the item; ``noun`` introduces the item in the default template."""
        fields = {"instruction": self.instruction, "labels": ", ".join(labels), "hint": f"{hint}\n" if hint else ""}
        template = self.template if self.template is not None else default_template(noun)
        if isinstance(item, str):
            content = template.format(text=item, **fields)
        else:
            before, after = template.format(text=ITEM_MARK, **fields).split(ITEM_MARK, 1)
            parts = [{"type": "text", "text": before}, item, {"type": "text", "text": after}]
            content = [part for part in parts if part.get("type") != "text" or part["text"]]
        msgs = [{"role": "system", "content": self.system}] if self.system else []
        return msgs + [{"role": "user", "content": content}]


def check_template(template: str) -> None:
    """Allow only plain ``{instruction}``, ``{labels}``, ``{hint}`` and ``{text}`` fields in a template.

    A template may come from a saved model or a config file, so it must stay data: no attribute or
    index access, no conversions or format specs (which could reach into objects or allocate
    without bound), and ``{text}`` exactly once.

    Examples
    --------
    >>> check_template("{text.__class__}")
    Traceback (most recent call last):
    ...
    datashunt.exceptions.ConfigError: prompt template field '{text.__class__}' is not allowed; ...
    """
    try:
        fields = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise ConfigError(f"prompt template is malformed: {exc}") from None
    for name, spec, conv in fields:
        if name not in TEMPLATE_FIELDS or spec or conv:
            shown = "{" + name + (f"!{conv}" if conv else "") + (f":{spec}" if spec else "") + "}"
            raise ConfigError(
                f"prompt template field {shown!r} is not allowed; use only "
                + ", ".join("{" + f + "}" for f in TEMPLATE_FIELDS)
            )
    if [name for name, _, _ in fields].count("text") != 1:
        raise ConfigError("prompt template must contain {text} exactly once")


def label_words(classes, names: dict | None) -> list[str]:
    """The word the large model answers with for each class: its name in ``names``, else the class.

    Examples
    --------
    >>> label_words([0, 1], {0: "negative", "1": "positive"})
    ['negative', 'positive']
    """
    names = names or {}
    if not all(isinstance(v, str) for v in names.values()):
        raise ConfigError(f"label names must be strings, got {names!r}")
    labels = [str(names.get(c, names.get(str(c), c))) for c in list(classes)]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"label names must be distinct, got {labels}")
    return labels


def words_for(y, classes, labels: list[str]) -> list[str]:
    """Each label in ``y`` as the word the large model answers with (``labels[j]`` for ``classes[j]``).

    Examples
    --------
    >>> words_for([1, 0, 1], [0, 1], ["negative", "positive"])
    ['positive', 'negative', 'positive']
    """
    word = dict(zip(np.asarray(classes).tolist(), labels))
    return [word[v] for v in np.asarray(y).tolist()]


def surface_forms(label: str) -> list[str]:
    """The ways a model may start writing ``label`` as its answer.

    Examples
    --------
    >>> surface_forms("positive")
    ['positive', ' positive', 'Positive', ' Positive', 'POSITIVE']
    """
    forms = [label, " " + label, label.capitalize(), " " + label.capitalize(), label.upper()]
    return list(dict.fromkeys(forms))
