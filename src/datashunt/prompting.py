"""Prompts for the large model.

The item's text comes last so that every prompt of a run shares one long prefix (the
instruction and the label list), which a local model evaluates once and reuses.
"""

from dataclasses import dataclass

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


def surface_forms(label: str) -> list[str]:
    """The ways a model may start writing ``label`` as its answer.

    Examples
    --------
    >>> surface_forms("positive")
    ['positive', ' positive', 'Positive', ' Positive', 'POSITIVE']
    """
    forms = [label, " " + label, label.capitalize(), " " + label.capitalize(), label.upper()]
    return list(dict.fromkeys(forms))
