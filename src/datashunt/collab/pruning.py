"""Prompt Pruning: what the small model tells the large one (the paper's soft and hard modes).

The classes the small model excels in on validation data (:func:`class_report`) shape the large
model's prompt: as prior knowledge (:func:`soft_hint`) or as fewer candidate labels
(:func:`hard_candidates`).
"""

from dataclasses import dataclass

import pandas as pd
from sklearn.metrics import precision_recall_fscore_support


class Hint(str):
    """A soft Prompt Pruning hint: the sentence a chat model reads, with the probabilities it states
    as ``prior`` (label to probability, rounded as stated) for models that take numbers, not words."""

    prior: dict

    def __new__(cls, text: str, prior: dict):
        hint = super().__new__(cls, text)
        hint.prior = prior
        return hint


def soft_hint(proba, labels: list[str], excelled: list[int]) -> Hint | None:
    """Soft Prompt Pruning: the small model's probabilities for the classes it excels in, as prior knowledge.

    Examples
    --------
    >>> hint = soft_hint([0.05, 0.7, 0.25], ["cat", "dog", "fox"], [0, 1])
    >>> str(hint).split(": ")
    ['Prior knowledge from a specialised classifier that is reliable on these classes',
     'cat with probability 0.05, dog with probability 0.70.']
    >>> hint.prior
    {'cat': 0.05, 'dog': 0.7}
    """
    if not excelled:
        return None
    parts = [f"{labels[j]} with probability {proba[j]:.2f}" for j in excelled]
    prior = {labels[j]: round(float(proba[j]), 2) for j in excelled}
    return Hint(
        "Prior knowledge from a specialised classifier that is reliable on these classes: " + ", ".join(parts) + ".",
        prior,
    )


def hard_candidates(proba, excelled: list[int], cutoff: float) -> list[int]:
    """Hard Prompt Pruning: drop the excelled classes the small model gives less than ``cutoff``.

    At least two candidates always remain (the most probable of the dropped ones come back), so
    the large model still makes a choice; with two classes nothing is ever dropped.

    Examples
    --------
    >>> hard_candidates([0.02, 0.6, 0.03, 0.35], excelled=[0, 2], cutoff=0.05)
    [1, 3]
    >>> hard_candidates([0.01, 0.98, 0.01], excelled=[0, 1, 2], cutoff=0.5)
    [0, 1]
    """
    k = len(proba)
    keep = [j for j in range(k) if j not in excelled or proba[j] >= cutoff]
    if len(keep) < 2:
        dropped = sorted(set(range(k)) - set(keep), key=lambda j: -proba[j])
        keep = sorted(keep + dropped[: 2 - len(keep)])
    return keep


MODES = (None, "soft", "hard")


def class_report(y_true, y_pred, classes, level: float) -> pd.DataFrame:
    """Per-class precision and recall of the small model; ``excels`` where both reach ``level``.

    Examples
    --------
    >>> class_report(["a", "a", "b", "c"], ["a", "a", "b", "b"], ["a", "b", "c"], 0.9)["excels"].tolist()
    [True, False, False]
    """
    precision, recall, _, support = precision_recall_fscore_support(
        y_true, y_pred, labels=list(classes), zero_division=0
    )
    return pd.DataFrame(
        {
            "class": list(classes),
            "precision": precision,
            "recall": recall,
            "support": support,
            "excels": (precision >= level) & (recall >= level) & (support > 0),
        }
    )


@dataclass(frozen=True)
class Pruning:
    """Prompt Pruning as fitted: the mode, the classes the small model excels in, the hard cut-off.

    Examples
    --------
    >>> Pruning("hard", (0, 2), 0.1).prompt_args([[0.05, 0.6, 0.35]], ["a", "b", "c"])["candidates"]
    [[1, 2]]
    """

    mode: str
    excelled: tuple
    cutoff: float = 0.1

    def prompt_args(self, proba, labels) -> dict:
        """Keyword arguments for :meth:`LargeModel.predict_proba` for items with these small-model probabilities."""
        if self.mode == "soft":
            return {"hints": [soft_hint(p, labels, list(self.excelled)) for p in proba]}
        return {"candidates": [hard_candidates(p, list(self.excelled), self.cutoff) for p in proba]}
