"""Rows of features: a 2-D table of numbers (or a table scikit-learn reads), one row per item."""

import json

import numpy as np
import pandas as pd
from sklearn.utils.validation import check_array

from ..exceptions import DataError
from .base import Modality


class Rows(Modality):
    """Feature rows, checked by scikit-learn as a whole; in a prompt, ``name=value`` pairs.

    Examples
    --------
    >>> rows = Rows.for_data(pd.DataFrame({"age": [35], "income": [4.5]}))
    >>> items, _ = rows.check(pd.DataFrame({"age": [35], "income": [4.5]}))
    >>> rows.content(items[0])
    'age=35.0, income=4.5'
    """

    name = "rows"
    noun = "Features"

    def __init__(self, feature_names=None):
        self.feature_names = None if feature_names is None else [str(c) for c in feature_names]

    @classmethod
    def recognises(cls, X) -> bool:
        if isinstance(X, pd.DataFrame):
            return X.shape[1] != 1
        if isinstance(X, np.ndarray):
            return X.ndim == 2
        if isinstance(X, (list, tuple)) and len(X) > 0:  # a list of rows
            first = X[0]
            return isinstance(first, (list, tuple)) or (isinstance(first, np.ndarray) and first.ndim == 1)
        return False

    @classmethod
    def for_data(cls, X) -> "Rows":
        return cls(list(X.columns) if isinstance(X, pd.DataFrame) else None)

    def check(self, X):
        try:
            return check_array(X, dtype=None), None
        except ValueError as exc:
            raise DataError(f"cannot read the feature rows: {exc}") from None

    def key(self, item) -> str:
        return json.dumps([v.item() if isinstance(v, np.generic) else v for v in item], default=str)

    def content(self, item) -> str:
        names = self.feature_names or [f"x{j}" for j in range(len(item))]
        return ", ".join(f"{name}={value}" for name, value in zip(names, item))

    def __repr__(self) -> str:
        return f"Rows(feature_names={self.feature_names!r})"
