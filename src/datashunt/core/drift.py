"""Drift check: does live traffic still look like the validation data δ was calibrated on?

Two questions, each a test against the calibration figures: is the share of items the small model
is unsure of (those sent on) different from the share on validation (Fisher's exact test on the
2×2 table), and is the small model's confidence distributed differently (a chi-square test over
the validation deciles)? Either with a p-value under ``level`` means the guarantee and the
expected savings no longer describe this traffic: recalibrate on fresh labelled data.
"""

import warnings

import numpy as np
from scipy.stats import chi2_contingency, fisher_exact

from ..exceptions import DriftWarning
from .deciding import keeps

LEVEL = 0.001  # a p-value this small is not chance, even over many batches
MIN_ITEMS = 50  # fewer live items than this say too little to test


def reference(confidence, threshold, predicted=None) -> dict:
    """What :func:`check` compares live traffic with: the validation size, how many the first stage
    sent on (its δ: a number, or one per class with ``predicted``), and the validation
    confidences counted between their deciles.

    Examples
    --------
    >>> ref = reference(np.linspace(0, 1, 101), 0.5)
    >>> ref["n"], ref["sent_on"], len(ref["edges"]), sum(ref["counts"])
    (101, 50, 9, 101)
    """
    c, sent = _sent_on(confidence, threshold, predicted)
    edges = np.unique(np.quantile(c, np.linspace(0.1, 0.9, 9))) if len(c) else np.zeros(0)
    return {
        "n": int(len(c)),
        "threshold": np.asarray(threshold, dtype=float).tolist(),
        "sent_on": int(sent.sum()),
        "edges": edges.tolist(),
        "counts": _counts(c, edges).tolist(),
    }


def _sent_on(confidence, threshold, predicted):
    """The answered items' confidences, and which of them the stage passes on."""
    c = np.asarray(confidence, dtype=float)
    answered = ~np.isnan(c)
    pred = None if predicted is None else np.asarray(predicted)[answered]
    return c[answered], ~keeps(c[answered], threshold, pred)


def _counts(c, edges) -> np.ndarray:
    return np.bincount(np.searchsorted(edges, c, side="right"), minlength=len(edges) + 1)


def check(ref: dict | None, confidence, threshold, predicted=None, level: float = LEVEL) -> dict | None:
    """Compare a live batch with the calibration :func:`reference`; warn and flag when it differs beyond chance.

    The shares sent on are compared only while δ is the one calibrated. Returns None when there
    is nothing to compare (no reference, or fewer than ``MIN_ITEMS`` items).

    Examples
    --------
    >>> ref = reference(np.random.default_rng(0).uniform(size=1000), 0.5)
    >>> check(ref, np.random.default_rng(1).uniform(size=500), 0.5)["drifted"]
    False
    """
    c, sent = _sent_on(confidence, threshold, predicted)
    if not ref or ref.get("n", 0) < MIN_ITEMS or len(c) < MIN_ITEMS:
        return None
    live_sent = int(sent.sum())
    share_p = 1.0  # δ changed since calibration: the shares are not comparable, the confidences still are
    if ref.get("threshold") == np.asarray(threshold, dtype=float).tolist():
        share_p = float(fisher_exact([[ref["sent_on"], ref["n"] - ref["sent_on"]], [live_sent, len(c) - live_sent]])[1])
    table = np.vstack([ref["counts"], _counts(c, np.asarray(ref["edges"], dtype=float))])
    table = table[:, table.sum(axis=0) > 0]
    confidence_p = float(chi2_contingency(table)[1]) if table.shape[1] > 1 else 1.0
    result = {
        "n_live": int(len(c)),
        "live_large_share": live_sent / len(c),
        "calibration_large_share": ref["sent_on"] / ref["n"],
        "p_large_share": share_p,
        "p_confidence": confidence_p,
        "drifted": bool(min(share_p, confidence_p) < level),
    }
    if result["drifted"]:
        warnings.warn(
            f"this batch differs from the calibration data: {result['live_large_share']:.1%} of "
            f"{len(c)} items are sent on by the first stage against {result['calibration_large_share']:.1%} "
            f"on validation (p = {share_p:.2g}), confidence distribution p = {confidence_p:.2g}; "
            "δ and its guarantee were calibrated for other data: recalibrate on fresh labelled items",
            DriftWarning,
            stacklevel=3,
        )
    return result
