"""Checking the inputs a shunt is given: texts one by one, anything else through scikit-learn."""

import numpy as np
import pandas as pd
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_array, column_or_1d

from ..exceptions import DataError


def as_inputs(X):
    """Return ``(inputs, problems)``: inputs as an array and, for texts, a per-row problem or None.

    A 1-D input (list, Series, 1-D array) is a column of texts; each must be a non-blank string.
    Anything else (a 2-D feature array, say) is checked by scikit-learn and passed on as is.

    Examples
    --------
    >>> _, problems = as_inputs(["fine", "  ", None, 3])
    >>> problems
    [None, 'blank text', 'missing text (None/NaN)', 'not a string (int)']
    """
    if isinstance(X, pd.DataFrame) and X.shape[1] == 1:
        X = X.iloc[:, 0]
    if isinstance(X, (list, tuple, pd.Series)) or (isinstance(X, np.ndarray) and X.ndim == 1 and X.dtype.kind in "OUS"):
        values = np.empty(len(X), dtype=object)
        values[:] = list(X)
        if any(isinstance(v, (list, tuple, np.ndarray)) for v in values[:1]):
            return check_array(X, dtype=None), None  # rows of features given as a list of lists
        if len(values) == 0:
            raise DataError("no inputs: the text column is empty")
        return values, [_text_problem(v) for v in values]
    if isinstance(X, str):
        raise DataError("expected a list of texts, got a single string; wrap it in a list")
    return check_array(X, dtype=None), None


def _text_problem(value) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "missing text (None/NaN)"
    if not isinstance(value, str):
        return f"not a string ({type(value).__name__})"
    if not value.strip():
        return "blank text"
    return None


def require_valid(problems, what: str = "inputs", hint: str = "Clean them, or use route() to get a per-row flag.") -> None:
    """Raise a DataError naming the first bad rows, if any, followed by ``hint``."""
    if not problems:
        return
    bad = [(i, p) for i, p in enumerate(problems) if p is not None]
    if bad:
        shown = "; ".join(f"row {i}: {p}" for i, p in bad[:5])
        more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
        raise DataError(f"{len(bad)} bad {what}: {shown}{more}. {hint}")


def check_targets(y, n: int, who: str) -> np.ndarray:
    """Labels as a 1-D array of ``n`` classification targets, none missing.

    Examples
    --------
    >>> check_targets(["a", None], 2, "ShuntClassifier")
    Traceback (most recent call last):
    ...
    datashunt.exceptions.DataError: 1 missing labels; drop those rows first
    """
    if y is None:
        raise DataError(f"{who} requires y to be passed, but the target y is None")
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = column_or_1d(y, warn=True)
    if y.ndim != 1 or len(y) != n:
        raise DataError(f"expected {n} labels in a 1-D array, got shape {y.shape}")
    if pd.isna(y).any():
        raise DataError(f"{int(pd.isna(y).sum())} missing labels; drop those rows first")
    check_classification_targets(y)
    return y


def training_sets(X, y, X_val, y_val, fraction: float, random_state, who: str):
    """``X, y, X_val, y_val`` checked, at least two classes, with a validation set to calibrate on.

    Without ``X_val`` a share ``fraction`` of the labelled items is held out, stratified by label
    where every class has at least two items and the held-out share can hold them all.
    """
    from sklearn.model_selection import train_test_split

    X, problems = as_inputs(X)
    require_valid(problems, "training inputs")
    y = check_targets(y, len(X), who)
    if len(np.unique(y)) < 2:
        raise DataError(f"the training labels hold only one class ({np.unique(y)[0]}); {who} needs at least two "
                        "classes to choose between")
    if X_val is not None:
        X_val, problems = as_inputs(X_val)
        require_valid(problems, "validation inputs")
        return X, y, X_val, check_targets(y_val, len(X_val), who)
    stratify = y if np.unique(y, return_counts=True)[1].min() >= 2 else None
    try:
        X, X_val, y, y_val = train_test_split(X, y, test_size=fraction, random_state=random_state, stratify=stratify)
    except ValueError:
        X, X_val, y, y_val = train_test_split(X, y, test_size=fraction, random_state=random_state)
    return X, y, X_val, y_val
