"""Checking what an estimator is given: labels, and training data with a validation set to calibrate on.

Items themselves are read by their modality (:mod:`datashunt.modalities`)."""

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import column_or_1d

from ..exceptions import DataError
from ..modalities import as_inputs


def require_valid(
    problems, what: str = "inputs", hint: str = "Clean them, or use route() to get a per-row flag."
) -> None:
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


def training_sets(X, y, X_val, y_val, fraction: float | None, random_state, who: str, modality="auto"):
    """``X, y, X_val, y_val`` checked, at least two classes, with a validation set to calibrate on,
    and the name of the modality the items were read as.

    Without ``X_val`` a share ``fraction`` of the labelled items is held out, stratified by label
    where every class has at least two items and the held-out share can hold them all;
    ``fraction=None`` holds nothing out (cross-fitting calibrates on every labelled item).
    """
    batch = as_inputs(X, modality)
    require_valid(batch.problems, "training inputs")
    X, kind = batch.items, batch.modality.name
    y = check_targets(y, len(X), who)
    if len(np.unique(y)) < 2:
        raise DataError(
            f"the training labels hold only one class ({np.unique(y)[0]}); {who} needs at least two "
            "classes to choose between"
        )
    if X_val is not None:
        batch = as_inputs(X_val, kind)
        require_valid(batch.problems, "validation inputs")
        return X, y, batch.items, check_targets(y_val, len(batch), who), kind
    if fraction is None:
        return X, y, X, y, kind
    stratify = y if np.unique(y, return_counts=True)[1].min() >= 2 else None
    try:
        X, X_val, y, y_val = train_test_split(X, y, test_size=fraction, random_state=random_state, stratify=stratify)
    except ValueError:
        X, X_val, y, y_val = train_test_split(X, y, test_size=fraction, random_state=random_state)
    return X, y, X_val, y_val, kind
