r"""Splitting a document into the parts :class:`~datashunt.Segments` routes one by one, and joining
the parts' answers back into one text with the document's own line structure.

Examples
--------
>>> pieces = split("A game. It is free, e.g. for all.\n\n  * fast")
>>> [part for part, _ in pieces]
['A game.', 'It is free, e.g. for all.', '* fast']
>>> join(["Ein Spiel.", "Es ist frei.", "* schnell"], [sep for _, sep in pieces])
'Ein Spiel. Es ist frei.\n\n* schnell'
"""

import re

from ..exceptions import ConfigError

UNITS = ("sentences", "lines")  #: how a document is cut: at sentence ends and line breaks, or at line breaks only

# A sentence ends at ".", "!" or "?" followed by a space and an upper-case letter, a digit or an
# opening quote or bracket, so "e.g. a" and "v1.2" stay whole.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])")


def split(text: str, unit: str = "sentences") -> list[tuple[str, str]]:
    """The parts of ``text`` in order, each with the separator that follows it in the document
    (a space between sentences of a line, the line breaks after a line's last part, "" at the
    end). Every line is a boundary; blank lines give no part."""
    if unit not in UNITS:
        raise ConfigError(f"unit must be one of {UNITS}, got {unit!r}")
    pieces: list[list[str]] = []
    for line in text.split("\n"):
        line = line.strip()
        if not line:
            if pieces:
                pieces[-1][1] += "\n"
            continue
        if pieces:
            pieces[-1][1] += "\n"
        parts = _SENTENCE_END.split(line) if unit == "sentences" else [line]
        pieces += [[part, " "] for part in parts if part]
        pieces[-1][1] = ""
    return [(part, sep) for part, sep in pieces]


def join(parts: list[str], separators: list[str]) -> str:
    """The parts' answers put back together with the document's separators."""
    return "".join(part + sep for part, sep in zip(parts, separators)).strip()
