"""Answers: what one stage says about a batch, as plain arrays, whatever the stage is."""

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..exceptions import LargeModelError


@dataclass
class Answers:
    """One stage's answers for a batch: probabilities over the classes (a NaN row where the stage
    failed or was not asked), its confidence, what was paid, the uncached price, whether the answer
    came from the cache, the prompt tokens, and a flag per item. Where a stage has a 2CD copy,
    ``learnable`` marks the items the copy answered and ``specific`` holds the stage's own
    probabilities (what Prompt Pruning reads)."""

    proba: np.ndarray
    confidence: np.ndarray
    cost: np.ndarray
    price: np.ndarray
    cached: np.ndarray
    prompt_tokens: np.ndarray
    flag: list
    learnable: np.ndarray | None = None
    specific: np.ndarray | None = None

    def __post_init__(self):
        n = len(self.proba)
        self.learnable = np.zeros(n, bool) if self.learnable is None else np.asarray(self.learnable, bool)
        self.specific = self.proba.copy() if self.specific is None else self.specific

    @classmethod
    def empty(cls, n: int, k: int) -> "Answers":
        """Rows for ``n`` items none of which was asked."""
        return cls(
            np.full((n, k), np.nan),
            np.full(n, np.nan),
            np.zeros(n),
            np.zeros(n),
            np.zeros(n, bool),
            np.zeros(n, int),
            [None] * n,
        )

    @property
    def ok(self) -> np.ndarray:
        return ~np.isnan(self.proba).any(axis=1)

    def predicted(self) -> np.ndarray:
        """Each item's most probable class index (-1 where there is no answer), for per-class δ."""
        return np.nan_to_num(self.proba, nan=-1.0).argmax(axis=1)

    def put(self, rows: np.ndarray, other: "Answers") -> None:
        """Write ``other``'s answers into ``rows``."""
        for name in ("proba", "confidence", "cost", "price", "cached", "prompt_tokens", "learnable", "specific"):
            getattr(self, name)[rows] = getattr(other, name)
        for i, message in zip(rows, other.flag):
            self.flag[i] = message


def require_answers(ok, flags: list, model: str) -> None:
    """Refuse to calibrate on a model none of whose answers came back (``ok`` per validation item, and
    ``flags`` saying why not): every call failing says the model cannot be reached as configured."""
    if len(flags) and not any(ok):
        first = str(flags[0]) if len(str(flags[0])) <= 200 else str(flags[0])[:199] + "…"
        raise LargeModelError(
            f"all {len(flags)} calls to {model} on the validation data failed (the first: "
            f"{first}); δ cannot be calibrated without its answers: check where its calls go "
            "(endpoint, model name, key) and fit again"
        )


def take(record, rows):
    """The answers at ``rows`` of a batch, as a record of the same kind (:class:`Answers`, or a
    generation's), every per-item field cut alike.

    Examples
    --------
    >>> got = Answers.empty(3, 2)
    >>> got.flag[2] = "timed out"
    >>> take(got, np.array([2])).flag
    ['timed out']
    """
    rows = np.asarray(rows, dtype=int)
    values = {}
    for field in dataclasses.fields(record):
        value = getattr(record, field.name)
        if isinstance(value, np.ndarray):
            value = value[rows]
        elif isinstance(value, list):
            value = [value[i] for i in rows]
        values[field.name] = value
    return type(record)(**values)


def to_columns(record, prefix: str = "") -> dict:
    """A record's per-item fields as columns of one value per item (rows of a 2-D array as lists),
    to travel in a table between workers; :func:`from_columns` reads them back.

    Examples
    --------
    >>> columns = to_columns(Answers.empty(2, 2), "s0_")
    >>> sorted(columns)[:3], len(columns["s0_proba"])
    (['s0_cached', 's0_confidence', 's0_cost'], 2)
    >>> from_columns(Answers, columns, "s0_").proba.shape
    (2, 2)
    """
    out = {}
    for field in dataclasses.fields(record):
        value = getattr(record, field.name)
        if isinstance(value, np.ndarray):
            value = list(value) if value.ndim > 1 else value
        out[prefix + field.name] = value
    return out


def from_columns(kind, columns, prefix: str = ""):
    """The record of type ``kind`` written by :func:`to_columns` (``columns``: a mapping or a DataFrame)."""
    blank = kind.empty(1, 1) if kind is Answers else kind.empty(1)
    values = {}
    for field in dataclasses.fields(kind):
        value = columns[prefix + field.name]
        value = value.tolist() if hasattr(value, "tolist") else list(value)
        example = getattr(blank, field.name)
        if isinstance(example, np.ndarray):
            dtype = example.dtype
            value = np.array(
                [_numbers(v, dtype) for v in value] if example.ndim > 1 else _numbers(value, dtype), dtype=dtype
            )
            if example.ndim > 1 and not len(value):
                value = value.reshape(0, 0)
        elif field.name == "token_logprob":
            value = [None if _missing(v) else np.asarray(v, dtype=float) for v in value]
        else:  # texts and flags: a missing one (None, or NaN after a trip through a table) is None
            value = [None if _missing(v) else v for v in value]
        values[field.name] = value
    return kind(**values)


def _numbers(values, dtype) -> np.ndarray:
    """``values`` as an array of ``dtype``; a missing number (None, or pandas' NA after a trip
    through Arrow) is NaN."""
    if dtype.kind == "f":
        values = [np.nan if _missing(v) else v for v in values]
    return np.asarray(values, dtype=dtype)


def _missing(value) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value))
