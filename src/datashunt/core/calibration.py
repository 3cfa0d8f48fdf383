"""The thresholds δ: one sweep over candidate settings and one choice by policy, for every face.

A stage keeps an item when its confidence is ``>= δ`` and sends it on otherwise.
:func:`sweep` scores every setting tried on validation answers (two stages: every distinct
threshold, the midpoints between the observed confidences, so any confidence scale works);
:func:`choose` picks one for a policy (:mod:`datashunt.core.policies`). Per-class thresholds
(:func:`per_class_thresholds`, :func:`per_class_refine`) and guarantees
(:mod:`datashunt.core.guarantee`, :mod:`datashunt.core.stratified`) build on them.
"""

import itertools
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..exceptions import CalibrationWarning, ConfigError
from .deciding import outcome, stop_stage
from .policies import MATCH_LAST, MAX_COST, MAX_LAST_RATE, TARGET, canonical

THRESHOLD_POLICIES = (MATCH_LAST, MAX_LAST_RATE, TARGET)  #: what a single threshold is chosen for


def sweep(confidence, correct, cost=None, *, n_grid: int | None = None, quality=None) -> pd.DataFrame:
    """Accuracy, cost and reach of S stages at every threshold setting tried: one sweep for every face.

    Parameters
    ----------
    confidence : array of shape (n, S), or (n,) for two stages
        Each stage's confidence on the validation items (the last stage's is not used; a shunt
        may give the small model's alone).
    correct : array of shape (n, S)
        Whether each stage is right, or how good its answer is (a quality per item, for
        generation). The last stage's may hold estimates (an inverse-probability weighted value
        for a sampled item, NaN where unknown): a setting that sends an unknown item on has a NaN
        accuracy.
    cost : array of shape (n, S), optional
        What asking each stage about each item costs (uncached price); an item pays for every
        stage it reaches.
    n_grid : int, optional
        Candidate thresholds per stage: that many quantiles of its confidences (midpoints, plus
        ±inf), every combination tried. None with two stages tries every distinct threshold
        exactly; with more, 40 quantiles.
    quality : callable, optional
        The figure of merit as a function of the stage each item stops at, in place of the mean
        of ``correct`` (a corpus-level metric such as BLEU is not a mean of item scores).

    Returns
    -------
    DataFrame with ``threshold_1`` ... ``threshold_{S-1}``, ``accuracy``, ``cost`` (per item),
    ``last_rate`` and ``n_last`` (the share and count of items reaching the last stage). The exact
    two-stage sweep adds ``gap_se``, the standard error of the paired difference between the
    routed accuracy and the last stage's alone (only kept items on which the two disagree add to
    it: how much of that difference could be validation noise), and ``gain``, that difference.
    Rows run from "nothing to the last stage" to "everything" (all thresholds +inf).

    Examples
    --------
    >>> table = sweep(np.array([0.9, 0.6, 0.55]), np.array([[1, 0], [0, 1], [0, 1]], bool))
    >>> table[["accuracy", "last_rate"]].round(3).values.tolist()
    [[0.333, 0.0], [0.667, 0.333], [1.0, 0.667], [0.667, 1.0]]
    >>> conf = np.array([[0.9, 0.9, 1], [0.6, 0.9, 1], [0.6, 0.5, 1]])
    >>> right = np.array([[1, 0, 1], [0, 1, 1], [0, 0, 1]], bool)
    >>> three = sweep(conf, right, np.array([[0, 1, 10]] * 3, float), n_grid=3)
    >>> three.iloc[choose(three, "match_last").row].tolist()
    [0.75, 0.7, 1.0, 4.0, 0.3333333333333333, 1.0]
    """
    confidence = np.asarray(confidence, dtype=float)
    correct = np.asarray(correct, dtype=float)
    if confidence.ndim == 1:
        confidence = np.column_stack([confidence, np.ones(len(confidence))])
    n, n_stages = correct.shape
    if n == 0:
        raise ConfigError("cannot calibrate a threshold on an empty validation set")
    cost = np.zeros((n, n_stages)) if cost is None else np.asarray(cost, dtype=float)
    if n_stages == 2 and n_grid is None and quality is None:
        return _exact_two_stages(confidence[:, 0], correct, cost)
    axes = []
    for s in range(n_stages - 1):
        finite = confidence[:, s][np.isfinite(confidence[:, s])]
        values = np.unique(np.quantile(finite, np.linspace(0, 1, n_grid or 40))) if len(finite) else np.array([])
        axes.append(np.r_[-np.inf, (values[:-1] + values[1:]) / 2, np.inf])
    rows = []
    for point in itertools.product(*axes):
        stage = stop_stage(confidence, list(point))
        result = outcome(stage, correct, cost)
        merit = result["accuracy"] if quality is None else float(quality(stage))
        rows.append([*point, merit, result["cost"] / n, result["reach"][-1], int(round(result["reach"][-1] * n))])
    columns = [f"threshold_{s + 1}" for s in range(n_stages - 1)] + ["accuracy", "cost", "last_rate", "n_last"]
    return pd.DataFrame(rows, columns=columns)


def _exact_two_stages(confidence, correct, cost) -> pd.DataFrame:
    """Every distinct threshold of two stages: items strictly below δ go on; cut points after each
    run of equal confidences (midpoints between observed values, so any confidence scale works)."""
    n = len(confidence)
    order = np.argsort(confidence, kind="stable")
    c = confidence[order]
    first_right = correct[order, 0]
    gain = correct[order, 1] - first_right
    cuts = np.r_[0, np.flatnonzero(np.diff(c) > 0) + 1, n]
    cum_gain = np.r_[0, np.cumsum(gain)]
    cum_disagree = np.r_[0, np.cumsum(gain != 0)]
    cum_cost = np.r_[0.0, np.cumsum(cost[order, 1])]
    thresholds = np.r_[-np.inf, (c[cuts[1:-1] - 1] + c[cuts[1:-1]]) / 2, np.inf]
    # Per item, the routed answer minus the last stage's is -1, 0 or +1 and non-zero only on the
    # disagreements the first stage keeps; its mean is the accuracy gap.
    gap = (cum_gain[cuts] - cum_gain[-1]) / n
    kept_disagreements = (cum_disagree[-1] - cum_disagree[cuts]) / n
    return pd.DataFrame(
        {
            "threshold_1": thresholds,
            "accuracy": (first_right.sum() + cum_gain[cuts]) / n,
            "cost": (cost[:, 0].sum() + cum_cost[cuts]) / n,
            "last_rate": cuts / n,
            "n_last": cuts,
            "gap_se": np.sqrt(np.clip(kept_disagreements - gap**2, 0.0, None) / n),
            "gain": gap,
        }
    )


@dataclass(frozen=True)
class Choice:
    """The threshold a policy chose (the first stage's), the sweep row it came from, and the goal it served."""

    threshold: float
    row: int
    goal: str
    met: bool


def choose(
    table: pd.DataFrame,
    policy: str = MATCH_LAST,
    *,
    tolerance: float = 0.0,
    match_z: float = 0.0,
    max_cost: float | None = None,
    max_last_rate: float | None = None,
    target_accuracy: float | None = None,
) -> Choice:
    """Pick a row of a :func:`sweep` for a policy (:mod:`datashunt.core.policies`).

    ``match_last``: the cheapest row whose accuracy is at least the last stage's alone minus
    ``tolerance``, and, where the sweep has the paired standard error (two stages), ahead of it by
    ``match_z`` of them, so that a lead validation noise could explain does not count (sending
    everything on always qualifies). ``target_accuracy``: the cheapest row reaching it.
    ``max_cost`` (money per item) and ``max_last_rate`` (share reaching the last stage): the most
    accurate row within the budget, then the cheapest. Between equally cheap rows (free local
    models), the one sending fewer items on wins. A goal that cannot be met warns and takes the
    most accurate row. ``Choice.threshold`` is the row's first threshold; the row holds them all.

    Examples
    --------
    >>> table = sweep(np.array([0.9, 0.6, 0.55]), np.array([[1, 0], [0, 1], [0, 1]], bool))
    >>> choose(table, "match_last").row, choose(table, "max_last_rate", max_last_rate=0.7).row
    (1, 2)
    """
    policy = canonical(policy)
    acc, cost, rate = (table[c].to_numpy() for c in ("accuracy", "cost", "last_rate"))
    last_only = int(np.flatnonzero(np.isposinf(table.filter(like="threshold_").to_numpy()).all(axis=1))[0])
    eps = 1e-12
    if policy in (MATCH_LAST, TARGET):
        if policy == MATCH_LAST:
            if match_z < 0:
                raise ConfigError(f"match_z must be >= 0, got {match_z!r}")
            gap_se = table["gap_se"].to_numpy() if "gap_se" in table else np.zeros(len(table))
            noise = f" + {match_z:g} standard errors" if match_z and "gap_se" in table else ""
            within = f" - {tolerance:g}" if tolerance else ""
            goal = f"accuracy >= last stage's accuracy ({acc[last_only]:.4f}){within}{noise}"
            ok = acc - acc[last_only] - match_z * np.nan_to_num(gap_se) >= -tolerance - eps
        else:
            if target_accuracy is None:
                raise ConfigError(f"policy 'target_accuracy' needs target_accuracy, got {target_accuracy!r}")
            goal = f"accuracy >= {target_accuracy:.4f}"
            ok = acc >= target_accuracy - eps
        order = np.lexsort((-acc, rate, cost))  # cheapest first, then fewest to the last stage, then accurate
    else:
        limit, column = (max_cost, cost) if policy == MAX_COST else (max_last_rate, rate)
        if limit is None or (policy == MAX_LAST_RATE and not 0.0 <= limit <= 1.0):
            raise ConfigError(f"policy {policy!r} needs {policy} (a share in [0, 1] for max_last_rate), got {limit!r}")
        goal = f"{'cost per item' if policy == MAX_COST else 'share reaching the last stage'} <= {limit:g}"
        ok = column <= limit + eps
        order = np.lexsort((rate, cost, -acc))  # most accurate first, then the cheaper
    candidates = [i for i in order if ok[i]]
    met = bool(candidates)
    if not met:
        warnings.warn(
            f"no thresholds reach the goal '{goal}' on the validation data (best accuracy "
            f"{np.nanmax(acc):.4f}); using the most accurate ones instead",
            CalibrationWarning,
            stacklevel=2,
        )
        candidates = list(np.lexsort((rate, cost, -np.nan_to_num(acc, nan=-np.inf))))
    row = int(candidates[0])
    return Choice(float(table["threshold_1"].iloc[row]), row, goal, met)


def fewest_within_noise(thresholds, best: int, confidence, gain, z: float, *, n: int | None = None, band=None) -> int:
    """The one-standard-error rule for a budget: of ``thresholds`` (ascending: fewest items sent
    first) up to ``thresholds[best]``, the first whose validation accuracy trails the best one's by
    at most ``z`` standard errors of their paired difference, so that calls whose gain validation
    noise could explain are not spent.

    ``confidence`` and ``gain`` (the large model's correctness minus the small model's) are given
    for the items whose large answer is known: every one of the ``n`` validation items (the
    default), or a simple random sample of the ``band`` items below the highest threshold, each
    standing for ``band / len(gain)`` of them (the sampling variance is then added). Moving δ
    from ``thresholds[j]`` to ``thresholds[best]`` sends the items in between on; their gains are
    the paired difference.

    Examples
    --------
    >>> c = np.linspace(0, 1, 100)
    >>> gain = np.r_[np.ones(10), np.tile([1, -1], 10), np.zeros(70)]  # a clear gain, then noise
    >>> int(fewest_within_noise(np.array([0.0, 0.1, 0.3]), 2, c, gain, 1.0))  # 0.1 sends 10 items
    1
    """
    thresholds, c, gain = (np.asarray(a, dtype=float).ravel() for a in (thresholds, confidence, gain))
    m = len(c)
    n = m if n is None else int(n)
    band = m if band is None else int(band)
    order = np.argsort(c, kind="stable")
    first, second = np.r_[0.0, np.cumsum(gain[order])], np.r_[0.0, np.cumsum(gain[order] ** 2)]
    sent = np.searchsorted(c[order], thresholds[: best + 1], side="left")  # known items under each δ
    s1, s2 = first[sent[best]] - first[sent], second[sent[best]] - second[sent]
    weight = band / max(m, 1)
    diff = weight * s1 / n
    variance = np.clip(weight * s2 / n - diff**2, 0.0, None) / n
    if 1 < m < band:  # a sample: its own variance, with the finite-population correction
        variance += (band / n) ** 2 * np.clip(s2 - s1**2 / m, 0.0, None) / (m - 1) / m * (1 - m / band)
    return int(np.flatnonzero(diff <= z * np.sqrt(variance) + 1e-12)[0])


def noise_clause(budget_z: float) -> str:
    """How a goal names :func:`fewest_within_noise`'s guard (nothing when it is off)."""
    return f"; a larger share only where its gain clears {budget_z:g} standard errors" if budget_z else ""


def per_class_thresholds(
    confidence, predicted, small_correct, large_correct, n_classes: int, min_accuracy: float
) -> tuple[np.ndarray, bool]:
    """One δ per predicted class (FrugalML's idea): the fewest large calls reaching ``min_accuracy``.

    Each class's items (by the class the first stage predicts) get a sweep of their own. For a
    price λ per large call, every class takes the δ that maximises its correct answers minus λ
    times its calls; the largest λ whose choices still reach ``min_accuracy`` on the whole
    validation set gives the fewest calls (a Lagrangian relaxation: exact on the convex hull of
    each class's sweep). A class never predicted on validation sends everything on (δ = +inf).
    Returns the thresholds and whether the goal was met (if not: the most accurate choice).

    Examples
    --------
    >>> conf = np.array([0.9, 0.8, 0.7, 0.9, 0.8, 0.7])
    >>> pred = np.array([0, 0, 0, 1, 1, 1])
    >>> small = np.array([1, 1, 1, 1, 0, 0], bool)  # reliable on class 0, not on class 1
    >>> delta, met = per_class_thresholds(conf, pred, small, np.ones(6, bool), 2, min_accuracy=1.0)
    >>> delta.round(3).tolist(), met
    ([-inf, 0.85], True)
    """
    confidence = np.asarray(confidence, dtype=float)
    predicted = np.asarray(predicted, dtype=int)
    small_correct, large_correct = np.asarray(small_correct, bool), np.asarray(large_correct, bool)
    sweeps = {}
    for c in range(n_classes):
        mask = predicted == c
        if mask.any():
            table = sweep(confidence[mask], np.column_stack([small_correct[mask], large_correct[mask]]))
            sweeps[c] = (
                table["threshold_1"].to_numpy(),
                table["accuracy"].to_numpy() * mask.sum(),
                table["n_last"].to_numpy(),
            )

    def choose(lam):
        picks = {}
        for c, (_, correct, calls) in sweeps.items():
            score = correct - lam * calls
            best = np.flatnonzero(score >= score.max() - 1e-9)
            picks[c] = best[np.argmin(calls[best])]
        return picks

    def correct_of(picks):
        return sum(sweeps[c][1][i] for c, i in picks.items())

    need = min_accuracy * len(confidence) - 1e-9
    low, high = 0.0, 1.0 + 1e-6  # above λ = 1 no call can pay for itself
    met = bool(correct_of(choose(low)) >= need)
    if met:
        for _ in range(60):
            mid = (low + high) / 2
            low, high = (mid, high) if correct_of(choose(mid)) >= need else (low, mid)
    picks = choose(low)
    delta = np.full(n_classes, np.inf)
    for c, i in picks.items():
        delta[c] = sweeps[c][0][i]
    return delta, met


def per_class_refine(
    confidence,
    predicted,
    correct,
    cost,
    start: list,
    n_classes: int,
    min_accuracy: float,
    n_grid: int = 40,
    rounds: int = 3,
) -> tuple[list, bool]:
    """Per-class thresholds for any number of stages, by coordinate descent from single ones.

    Starting from ``start`` (S - 1 single thresholds, e.g. the row :func:`choose` picked),
    each stage's δ for each predicted class in turn is swept over ``n_grid`` quantiles of that
    class's confidences at that stage, the others held, keeping the cheapest setting whose accuracy
    reaches ``min_accuracy`` (every (n, S) array as in :func:`sweep`; ``predicted`` holds
    each stage's class index). Stops after ``rounds`` passes or when a pass changes nothing; the
    result is never costlier than the start. Returns the thresholds (arrays over the classes) and
    whether the goal is met.

    Examples
    --------
    >>> conf = np.array([[0.9, 1], [0.9, 1], [0.6, 1], [0.6, 1]])
    >>> pred = np.array([[0, 0], [1, 1], [0, 0], [1, 1]])
    >>> right = np.array([[1, 1], [0, 1], [1, 1], [1, 1]], bool)  # stage 0 wrong on class 1 only
    >>> delta, met = per_class_refine(conf, pred, right, np.tile([0.0, 1.0], (4, 1)), [0.95], 2, 1.0)
    >>> [d.tolist() for d in delta], met
    ([[-inf, 0.95]], True)
    """
    confidence, predicted = np.asarray(confidence, float), np.asarray(predicted, int)

    def score(thresholds):
        result = outcome(stop_stage(confidence, thresholds, predicted), correct, cost)
        return result["accuracy"] >= min_accuracy - 1e-12, result["cost"], result["accuracy"]

    def better(a, b):  # feasible first, then cheaper, then more accurate
        return (a[0], -a[1], a[2]) > (b[0], -b[1], b[2])

    current = [np.full(n_classes, float(t)) for t in start]
    best = score(current)
    for _ in range(rounds):
        changed = False
        for s in range(len(current)):
            for c in range(n_classes):
                mine = confidence[predicted[:, s] == c, s]
                mine = mine[np.isfinite(mine)]
                values = np.unique(np.quantile(mine, np.linspace(0, 1, n_grid))) if len(mine) else np.array([])
                for value in np.r_[-np.inf, (values[:-1] + values[1:]) / 2, np.inf]:
                    trial = [t.copy() for t in current]
                    trial[s][c] = value
                    result = score(trial)
                    if better(result, best):
                        current, best, changed = trial, result, True
        if not changed:
            break
    return current, bool(best[0])


def known(value) -> float | None:
    """A float, or None where an estimate is unknown (NaN).

    Examples
    --------
    >>> known(np.float64(0.5)), known(float("nan"))
    (0.5, None)
    """
    return None if value is None or np.isnan(value) else float(value)
