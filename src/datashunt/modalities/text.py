"""Texts: one non-blank string per item."""

import numpy as np
import pandas as pd

from ..exceptions import DataError
from .base import Modality, object_column


class Text(Modality):
    """A column of texts (list, Series, 1-D array, one-column DataFrame); each must be a non-blank string.

    Examples
    --------
    >>> Text().check(["fine", "  ", None, 3])[1]
    [None, 'blank text', 'missing text (None/NaN)', 'not a string (int)']
    >>> Text().check(["x \\ud800"])[1]
    ['not valid Unicode: a lone surrogate U+D800 at character 2']
    """

    name = "text"
    noun = "Text"

    @classmethod
    def recognises(cls, X) -> bool:
        if isinstance(X, pd.DataFrame):
            return X.shape[1] == 1
        if isinstance(X, np.ndarray):
            return X.ndim == 1 and X.dtype.kind in "OUS"
        return isinstance(X, (str, list, tuple, pd.Series))

    def check(self, X):
        if isinstance(X, str):
            raise DataError("expected a list of texts, got a single string; wrap it in a list")
        values = object_column(list(_column(X)))
        if len(values) == 0:
            raise DataError("no inputs: the text column is empty")
        return values, [_problem(v) for v in values]

    def key(self, item) -> str:
        return item

    def content(self, item) -> str:
        return item


def _column(X):
    if isinstance(X, pd.DataFrame):
        if X.shape[1] != 1:
            raise DataError(f"texts come as one column, got a table of {X.shape[1]} columns")
        return X.iloc[:, 0]
    if isinstance(X, np.ndarray) and X.ndim != 1:
        raise DataError(f"texts come as one column, got an array of shape {X.shape}")
    return X


def _problem(value) -> str | None:
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return "missing text (None/NaN)"
    if not isinstance(value, str):
        return f"not a string ({type(value).__name__})"
    if not value.strip():
        return "blank text"
    bad = lone_surrogate(value)
    return f"not valid Unicode: {bad}" if bad else None


def lone_surrogate(text: str) -> str | None:
    """Where ``text`` is not valid Unicode (a lone surrogate, as a ``\\ud800`` escape in JSON
    gives), said in words; None when it is valid.

    Examples
    --------
    >>> lone_surrogate("x \\ud800")
    'a lone surrogate U+D800 at character 2'
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"a lone surrogate U+{ord(text[exc.start]):04X} at character {exc.start}"
    return None
