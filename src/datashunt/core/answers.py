"""Answers: what one stage says about a batch, as plain arrays, whatever the stage is."""

from dataclasses import dataclass

import numpy as np

from ..exceptions import LargeModelError


@dataclass
class Answers:
    """One stage's answers for a batch: probabilities over the classes (a NaN row where the stage
    failed or was not asked), its confidence, what was paid, the uncached price, whether the answer
    came from the cache, the prompt tokens, and a flag per item."""

    proba: np.ndarray
    confidence: np.ndarray
    cost: np.ndarray
    price: np.ndarray
    cached: np.ndarray
    prompt_tokens: np.ndarray
    flag: list

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
        for name in ("proba", "confidence", "cost", "price", "cached", "prompt_tokens"):
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
