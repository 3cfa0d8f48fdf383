"""The threshold δ: the whole sweep over candidate values and the policies that pick one.

An item goes to the small model when its confidence is ``>= δ`` and to the large model
otherwise. Candidate thresholds are the midpoints between the observed confidences, so the
sweep works on any confidence scale (probabilities, margins, a service's own scores).
"""

import itertools
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..exceptions import CalibrationWarning, ConfigError
from .deciding import outcome, stop_stage
from .policies import MATCH_LAST, MAX_COST, MAX_LAST_RATE, POLICIES, TARGET, canonical

THRESHOLD_POLICIES = (MATCH_LAST, MAX_LAST_RATE, TARGET)  #: what a single threshold is chosen for


def threshold_sweep(
    confidence: np.ndarray,
    small_correct: np.ndarray,
    large_correct: np.ndarray,
    large_cost: np.ndarray | None = None,
) -> pd.DataFrame:
    """Accuracy, large-call rate and cost of the shunt at every distinct threshold.

    Parameters
    ----------
    confidence : array of shape (n,)
        The small model's confidence on held-out items.
    small_correct, large_correct : bool arrays of shape (n,)
        Whether each model's answer was right. ``large_correct`` may also hold estimates (an
        inverse-probability weighted value for a sampled item, NaN where unknown): the accuracy of
        a threshold that sends an unknown item on is then NaN.
    large_cost : array of shape (n,), optional
        What asking the large model about each item costs (uncached price).

    Returns
    -------
    DataFrame with columns ``threshold``, ``accuracy``, ``large_rate``, ``cost``, ``n_large``,
    ``gap_se`` and ``gain`` (accuracy minus the large model's), one row per threshold from "nothing
    to the large model" (-inf) to "everything" (+inf). ``gap_se`` is the standard error of the
    paired difference between the shunt's accuracy
    and the large model's alone: only items kept by the small model on which the two disagree add
    to it, so it measures how much of that difference could be validation noise.

    Examples
    --------
    >>> sweep = threshold_sweep(np.array([0.9, 0.6, 0.55]), np.array([1, 0, 0], bool),
    ...                         np.array([0, 1, 1], bool))
    >>> sweep[["accuracy", "large_rate"]].round(3).values.tolist()
    [[0.333, 0.0], [0.667, 0.333], [1.0, 0.667], [0.667, 1.0]]
    """
    c = np.asarray(confidence, dtype=float)
    n = len(c)
    if n == 0:
        raise ConfigError("cannot calibrate a threshold on an empty validation set")
    small_correct = np.asarray(small_correct, dtype=bool)
    large_correct = np.asarray(large_correct, dtype=float)
    cost = np.zeros(n) if large_cost is None else np.asarray(large_cost, dtype=float)
    order = np.argsort(c, kind="stable")
    c = c[order]
    gain = large_correct[order] - small_correct[order]
    # Items strictly below δ go large. Cut points: after each run of equal confidences.
    cuts = np.r_[0, np.flatnonzero(np.diff(c) > 0) + 1, n]
    cum_gain = np.r_[0, np.cumsum(gain)]
    cum_disagree = np.r_[0, np.cumsum(gain != 0)]
    cum_cost = np.r_[0.0, np.cumsum(cost[order])]
    thresholds = np.r_[-np.inf, (c[cuts[1:-1] - 1] + c[cuts[1:-1]]) / 2, np.inf]
    acc = (small_correct.sum() + cum_gain[cuts]) / n
    # Per item, the shunt minus the large model is -1, 0 or +1 and non-zero only on the
    # disagreements the small model keeps; its mean is the accuracy gap.
    gap = (cum_gain[cuts] - cum_gain[-1]) / n
    kept_disagreements = (cum_disagree[-1] - cum_disagree[cuts]) / n
    gap_se = np.sqrt(np.clip(kept_disagreements - gap**2, 0.0, None) / n)
    return pd.DataFrame(
        {
            "threshold": thresholds,
            "accuracy": acc,
            "large_rate": cuts / n,
            "cost": cum_cost[cuts],
            "n_large": cuts,
            "gap_se": gap_se,
            "gain": gap,
        }
    )


@dataclass(frozen=True)
class Choice:
    """The threshold a policy chose, the sweep row it came from, and the goal it served."""

    threshold: float
    row: int
    goal: str
    met: bool


def choose_threshold(
    sweep: pd.DataFrame,
    policy: str = MATCH_LAST,
    *,
    max_large_rate: float | None = None,
    target_accuracy: float | None = None,
    match_z: float = 2.0,
    tolerance: float = 0.0,
) -> Choice:
    """Pick δ from a sweep.

    ``match_last`` (alias ``match_large``): the lowest large-call rate whose accuracy is above the large model's own
    (the last row of the sweep) minus ``tolerance`` by ``match_z`` standard errors of the paired gap, so that a lead
    that validation noise could explain does not count (``match_z=0`` takes the point estimate;
    sending everything to the large model always qualifies). ``max_large_rate``: the best
    accuracy with at most that share of items sent to the large model (policy ``max_last_rate``).
    ``target_accuracy``: the
    lowest large-call rate reaching that accuracy. A goal that cannot be met warns and falls back
    to the best accuracy.

    Examples
    --------
    >>> sweep = threshold_sweep(np.array([0.9, 0.6, 0.55]), np.array([1, 0, 0], bool),
    ...                         np.array([0, 1, 1], bool))
    >>> choose_threshold(sweep, "match_large", match_z=0).row
    1
    >>> choose_threshold(sweep, "max_large_rate", max_large_rate=0.7).row
    2
    """
    policy = canonical(policy, THRESHOLD_POLICIES)
    acc = sweep["accuracy"].to_numpy()
    rate = sweep["large_rate"].to_numpy()
    eps = 1e-12
    if policy == MATCH_LAST:
        if match_z < 0:
            raise ConfigError(f"match_z must be >= 0, got {match_z!r}")
        within = f" - {tolerance:g}" if tolerance else ""
        goal = f"accuracy >= large-only accuracy ({acc[-1]:.4f}){within} + {match_z:g} standard errors"
        ok = acc - acc[-1] - match_z * sweep["gap_se"].to_numpy() >= -tolerance - eps
        pick = _lowest_rate(ok, rate)
    elif policy == MAX_LAST_RATE:
        if max_large_rate is None or not 0.0 <= max_large_rate <= 1.0:
            raise ConfigError(f"policy 'max_large_rate' needs max_large_rate in [0, 1], got {max_large_rate!r}")
        goal = f"large-call rate <= {max_large_rate:.4f}"
        ok = rate <= max_large_rate + eps
        pick = _best_accuracy(ok, acc, rate)
    else:
        if target_accuracy is None or not 0.0 <= target_accuracy <= 1.0:
            raise ConfigError(f"policy 'target_accuracy' needs target_accuracy in [0, 1], got {target_accuracy!r}")
        goal = f"accuracy >= {target_accuracy:.4f}"
        ok = acc >= target_accuracy - eps
        pick = _lowest_rate(ok, rate)
    met = pick is not None
    if not met:
        warnings.warn(
            f"no threshold reaches the goal '{goal}' on the validation data "
            f"(best accuracy {acc.max():.4f}); using the most accurate threshold instead",
            CalibrationWarning,
            stacklevel=2,
        )
        pick = _best_accuracy(np.ones_like(ok), acc, rate)
    return Choice(float(sweep["threshold"].iloc[pick]), int(pick), goal, met)


def _lowest_rate(ok, rate):
    idx = np.flatnonzero(ok)
    return None if len(idx) == 0 else int(idx[np.argmin(rate[idx])])


def _best_accuracy(ok, acc, rate):
    idx = np.flatnonzero(ok)
    if len(idx) == 0:
        return None
    best = acc[idx].max()
    return _lowest_rate(ok & (acc >= best - 1e-12), rate)


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
            sweep = threshold_sweep(confidence[mask], small_correct[mask], large_correct[mask])
            sweeps[c] = (
                sweep["threshold"].to_numpy(),
                sweep["accuracy"].to_numpy() * mask.sum(),
                sweep["n_large"].to_numpy(),
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


def cascade_sweep(confidence, correct, cost, n_grid: int = 40, quality=None) -> pd.DataFrame:
    """Accuracy, cost and reach of an N-stage cascade at every combination of single thresholds.

    Every stage has answered every validation item (``confidence``, ``correct``, ``cost`` are
    (n, S); ``correct`` may be a quality score per item, for generation); each of the S - 1
    thresholds takes ``n_grid`` quantiles of its stage's confidence (midpoints, plus ±inf), and
    every combination is scored with :func:`datashunt.core.deciding.outcome`. ``quality``, when
    given, replaces the mean of ``correct`` as the figure of merit: a function of the stage each
    item stops at (a corpus-level metric such as BLEU is not a mean of item scores). The row with
    all thresholds at +inf is the last stage alone.

    Returns a DataFrame with ``threshold_1`` ... ``threshold_{S-1}``, ``accuracy``, ``cost``
    (per item) and ``last_rate`` (share of items reaching the last stage).

    Examples
    --------
    >>> conf = np.array([[0.9, 0.9, 1], [0.6, 0.9, 1], [0.6, 0.5, 1]])
    >>> right = np.array([[1, 0, 1], [0, 1, 1], [0, 0, 1]], bool)
    >>> sweep = cascade_sweep(conf, right, np.array([[0, 1, 10]] * 3, float), n_grid=3)
    >>> sweep.iloc[choose_point(sweep, "match_last").row].tolist()
    [0.75, 0.7, 1.0, 4.0, 0.3333333333333333]
    """
    confidence = np.asarray(confidence, dtype=float)
    n_stages = confidence.shape[1]
    axes = []
    for s in range(n_stages - 1):
        finite = confidence[:, s][np.isfinite(confidence[:, s])]
        values = np.unique(np.quantile(finite, np.linspace(0, 1, n_grid))) if len(finite) else np.array([])
        axes.append(np.r_[-np.inf, (values[:-1] + values[1:]) / 2, np.inf])
    rows = []
    for point in itertools.product(*axes):
        stage = stop_stage(confidence, list(point))
        result = outcome(stage, correct, cost)
        merit = result["accuracy"] if quality is None else float(quality(stage))
        rows.append([*point, merit, result["cost"] / len(confidence), result["reach"][-1]])
    columns = [f"threshold_{s + 1}" for s in range(n_stages - 1)] + ["accuracy", "cost", "last_rate"]
    return pd.DataFrame(rows, columns=columns)


def choose_point(
    sweep: pd.DataFrame,
    policy: str = MATCH_LAST,
    *,
    tolerance: float = 0.0,
    max_cost: float | None = None,
    max_last_rate: float | None = None,
    target_accuracy: float | None = None,
) -> Choice:
    """Pick a row of a :func:`cascade_sweep`.

    ``match_last``: the cheapest row whose accuracy is at least the last stage's alone minus
    ``tolerance``. ``max_cost`` (money per item) and ``max_last_rate`` (share of items reaching the
    last stage): the most accurate row within the budget, then the cheapest. ``target_accuracy``:
    the cheapest row reaching it. Between equally cheap rows (free local models), the one
    sending fewer items to the last stage wins. A goal that cannot be met warns and takes the most accurate row.
    ``Choice.threshold`` is the row's first threshold; the row holds them all.
    """
    policy = canonical(policy, POLICIES)
    acc, cost, rate = (sweep[c].to_numpy() for c in ("accuracy", "cost", "last_rate"))
    last_only = np.flatnonzero(np.isposinf(sweep.filter(like="threshold_").to_numpy()).all(axis=1))
    eps = 1e-12
    if policy in (MATCH_LAST, TARGET):
        floor = acc[last_only[0]] - tolerance if policy == MATCH_LAST else target_accuracy
        if floor is None:
            raise ConfigError("policy 'target_accuracy' needs target_accuracy")
        goal = f"accuracy >= {floor:.4f}"
        ok = acc >= floor - eps
        order = np.lexsort((-acc, rate, cost))  # cheapest first, then fewest to the last stage, then accurate
    else:
        limit, column = (max_cost, cost) if policy == MAX_COST else (max_last_rate, rate)
        if limit is None:
            raise ConfigError(f"policy {policy!r} needs {policy}")
        goal = f"{'cost per item' if policy == MAX_COST else 'share reaching the last stage'} <= {limit:g}"
        ok = column <= limit + eps
        order = np.lexsort((rate, cost, -acc))  # most accurate first, then the cheaper
    candidates = [i for i in order if ok[i]]
    met = bool(candidates)
    if not met:
        warnings.warn(
            f"no thresholds reach the goal '{goal}' on the validation data (best accuracy "
            f"{acc.max():.4f}); using the most accurate ones instead",
            CalibrationWarning,
            stacklevel=2,
        )
        candidates = list(np.lexsort((rate, cost, -acc)))
    row = int(candidates[0])
    return Choice(float(sweep["threshold_1"].iloc[row]), row, goal, met)


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

    Starting from ``start`` (S - 1 single thresholds, e.g. the row :func:`choose_point` picked),
    each stage's δ for each predicted class in turn is swept over ``n_grid`` quantiles of that
    class's confidences at that stage, the others held, keeping the cheapest setting whose accuracy
    reaches ``min_accuracy`` (every (n, S) array as in :func:`cascade_sweep`; ``predicted`` holds
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
