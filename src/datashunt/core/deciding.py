"""Deciding: which stage of a cascade answers each item, from confidences and thresholds.

Pure functions over arrays, apart from any model: the same for texts, images and sequences, in a
notebook, a batch job or a server. Stage ``s`` keeps an item when its confidence reaches ``δ_s``;
the last stage answers whatever reaches it. A threshold is a number, or an array with one δ per
class (the class the stage predicts for the item), as in FrugalML.
"""

from dataclasses import dataclass

import numpy as np

from ..exceptions import ConfigError


def keeps(confidence, threshold, predicted=None) -> np.ndarray:
    """Which items a stage answers itself: ``confidence >= δ`` (NaN, a failed answer, never keeps).

    Examples
    --------
    >>> keeps([0.9, 0.6, np.nan], 0.7).tolist()
    [True, False, False]
    >>> keeps([0.9, 0.6], [0.95, 0.5], predicted=[0, 1]).tolist()  # δ of the predicted class
    [False, True]
    """
    confidence = np.asarray(confidence, dtype=float)
    threshold = np.asarray(threshold, dtype=float)
    if threshold.ndim == 0:
        delta = threshold
    elif predicted is None:
        raise ConfigError("per-class thresholds need the class each item was predicted to be")
    else:
        predicted = np.asarray(predicted, dtype=int)
        if predicted.shape != confidence.shape or (
            len(predicted) and not 0 <= predicted.min() <= predicted.max() < len(threshold)
        ):
            raise ConfigError(f"predicted classes must be indices below {len(threshold)}, one per item")
        delta = threshold[predicted]
    with np.errstate(invalid="ignore"):
        return confidence >= delta


def stop_stage(confidence, thresholds, predicted=None) -> np.ndarray:
    """The stage each item stops at, when every stage's confidence is known (validation, replays).

    Parameters
    ----------
    confidence : array of shape (n, S)
        Each stage's confidence per item (the last stage's is not used).
    thresholds : sequence of S - 1 thresholds
        δ of each stage but the last: a number, or an array of one δ per class.
    predicted : int array of shape (n, S), optional
        The class index each stage predicts; needed for per-class thresholds.

    Examples
    --------
    >>> stop_stage([[0.9, 0.8, 1.0], [0.5, 0.9, 1.0], [0.5, 0.5, 1.0]], [0.7, 0.7]).tolist()
    [0, 1, 2]
    """
    confidence = np.asarray(confidence, dtype=float)
    n, n_stages = confidence.shape
    if len(thresholds) != n_stages - 1:
        raise ConfigError(f"{n_stages} stages need {n_stages - 1} thresholds, got {len(thresholds)}")
    stage = np.full(n, n_stages - 1)
    open_ = np.ones(n, dtype=bool)
    for s, threshold in enumerate(thresholds):
        pred = None if predicted is None else np.asarray(predicted)[:, s]
        stop = open_ & keeps(confidence[:, s], threshold, pred)
        stage[stop] = s
        open_ &= ~stop
    return stage


def outcome(stage, correct, cost) -> dict:
    """Accuracy, money and the share of items reaching each stage, for the stages items stopped at.

    ``correct`` and ``cost`` are (n, S): whether each stage is right (or how good its answer is,
    a number per item, for generation), and what asking it costs. An item pays for every stage
    it reaches.

    Examples
    --------
    >>> outcome(np.array([0, 1]), np.array([[1, 0], [0, 1]], bool), np.array([[1.0, 10.0], [1.0, 10.0]]))
    {'accuracy': 1.0, 'cost': 12.0, 'reach': [1.0, 0.5]}
    """
    stage = np.asarray(stage, dtype=int)
    correct = np.asarray(correct, dtype=float)
    cost = np.asarray(cost, dtype=float)
    n, n_stages = correct.shape
    reached = np.arange(n_stages)[None, :] <= stage[:, None]
    return {
        "accuracy": float(correct[np.arange(n), stage].mean()),
        "cost": float((cost * reached).sum()),
        "reach": [float(r) for r in reached.mean(axis=0)],
    }


@dataclass
class Routed:
    """Where each item of a batch ended: ``stage`` whose answer stands (-1: none), ``reached`` the
    last stage asked (-1: none), every stage's answers (NaN rows where it was not asked), and
    ``open``: the items no stage asked kept, where a later stage (not asked in this run) would answer."""

    stage: np.ndarray
    reached: np.ndarray
    answers: list
    open: np.ndarray

    def proba(self) -> np.ndarray:
        """The standing answer of each item (a NaN row where there is none)."""
        out = np.full_like(self.answers[0].proba, np.nan)
        for s, got in enumerate(self.answers):
            out[self.stage == s] = got.proba[self.stage == s]
        return out


def run_stages(valid, ask, thresholds, blank, upto: int | None = None) -> Routed:
    """Ask the stages in order; an item stops at the first whose confidence reaches its δ.

    ``ask(s, rows, answers)`` returns stage ``s``'s answers for the batch ``rows`` (it sees the
    earlier stages' answers, for hints): an :class:`~datashunt.core.answers.Answers` (classes) or a
    :class:`~datashunt.backends.generate.base.Generation` (text), whatever ``blank()`` makes empty
    for every item. A stage that fails on an item passes it on; at the last stage, the latest
    earlier answer stands.
    """
    valid = np.asarray(valid, dtype=bool)
    n = len(valid)
    stage, reached = np.full(n, -1), np.full(n, -1)
    answers = []
    remaining = np.flatnonzero(valid)
    n_stages = len(thresholds) + 1 if upto is None else upto
    for s in range(n_stages):
        answers.append(blank())
        if not len(remaining):
            continue
        got = ask(s, remaining, answers)
        answers[s].put(remaining, got)
        reached[remaining] = s
        stage[remaining[got.ok]] = s
        if s < len(thresholds):
            remaining = remaining[~keeps(got.confidence, thresholds[s], got.predicted())]
        else:
            remaining = remaining[:0]
    open_ = np.zeros(n, bool)
    open_[remaining] = True
    return Routed(stage, reached, answers, open_)
