"""Prompts for the large model.

The item's text comes last so that every prompt of a run shares one long prefix (the
instruction and the label list), which a local model evaluates once and reuses.
"""

import string
from dataclasses import dataclass

from ..exceptions import ConfigError

MAX_PROMPT_CHARS = 100_000
TEMPLATE_FIELDS = ("instruction", "labels", "hint", "text")
DEFAULT_TEMPLATE = "{instruction}\nAnswer with exactly one word from this list: {labels}.\n{hint}\nText: {text}"


@dataclass(frozen=True)
class Prompt:
    """A chat prompt that asks the large model for one label.

    Examples
    --------
    >>> p = Prompt("Is this movie review positive or negative?")
    >>> p.messages("A gem.", ["negative", "positive"])[0]["content"].splitlines()[-1]
    'Text: A gem.'
    """

    instruction: str = "Classify the text."
    template: str = DEFAULT_TEMPLATE
    system: str | None = None

    def __post_init__(self):
        for name in ("instruction", "template"):
            if not isinstance(getattr(self, name), str):
                raise ConfigError(f"prompt {name} must be a string, got {type(getattr(self, name)).__name__}")
        if self.system is not None and not isinstance(self.system, str):
            raise ConfigError(f"prompt system must be a string or None, got {type(self.system).__name__}")
        size = len(self.instruction) + len(self.template) + len(self.system or "")
        if size > MAX_PROMPT_CHARS:
            raise ConfigError(f"prompt instruction, template and system hold {size:,} characters; at most "
                              f"{MAX_PROMPT_CHARS:,} are sent with every item")
        check_template(self.template)

    def messages(self, text: str, labels: list[str], hint: str | None = None) -> list[dict]:
        """Chat messages for one item; ``hint`` is extra knowledge placed before the text."""
        content = self.template.format(
            instruction=self.instruction,
            labels=", ".join(labels),
            hint=f"{hint}\n" if hint else "",
            text=text,
        )
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
    datashunt.exceptions.ConfigError: prompt template field '{text.__class__}' is not allowed; use only {instruction}, {labels}, {hint}, {text}
    """
    try:
        fields = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise ConfigError(f"prompt template is malformed: {exc}") from None
    for name, spec, conv in fields:
        if name not in TEMPLATE_FIELDS or spec or conv:
            shown = "{" + name + (f"!{conv}" if conv else "") + (f":{spec}" if spec else "") + "}"
            raise ConfigError(f"prompt template field {shown!r} is not allowed; use only "
                              + ", ".join("{" + f + "}" for f in TEMPLATE_FIELDS))
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


def surface_forms(label: str) -> list[str]:
    """The ways a model may start writing ``label`` as its answer.

    Examples
    --------
    >>> surface_forms("positive")
    ['positive', ' positive', 'Positive', ' Positive', 'POSITIVE']
    """
    forms = [label, " " + label, label.capitalize(), " " + label.capitalize(), label.upper()]
    return list(dict.fromkeys(forms))
