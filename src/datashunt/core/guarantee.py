"""Thresholds with a stated guarantee: Learn-then-Test over the paired disagreements.

The point estimate picks the cheapest δ whose validation accuracy matches the large model's and
so lands below it on about half of new data (the winner's curse). :func:`guaranteed_match`
instead returns the cheapest δ for which, with probability at least ``1 - alpha`` over the draw
of the validation set, the routed accuracy on the source the validation items came from is at
least the large model's minus ``epsilon``.

Method: Learn then Test (Angelopoulos, Bates, Candès, Jordan, Lei, 2021, arXiv:2110.01052) with
fixed-sequence testing: candidate thresholds are tested from the safest (everything to the large
model) to the cheapest, each at level ``alpha``, and testing stops at the first that cannot be
certified, so the family-wise error stays at ``alpha`` without a multiplicity correction.
Each test is exact and finite-sample. The shunt differs from the large model only on items the
small model keeps *and* answers differently: a loss (small wrong, large right, probability
``p_L``) or a win (``p_W``). The null hypothesis "accuracy below the large model's by more than
ε" is ``p_L - p_W > ε``. With ``m`` disagreements among ``n`` items, the share of losses among
them is exactly binomial given ``m`` (Clopper–Pearson upper bound ``q⁺`` at level ``0.9 alpha``),
and ``m`` is binomial in ``n`` (upper bound ``d⁺`` on ``p_L + p_W`` at ``0.1 alpha``); under the
null ``q ≥ 1/2 + ε / (2 (p_L + p_W))``, so δ is certified when ``q⁺ < 1/2 + ε / (2 d⁺)`` (a union
bound keeps the level at ``alpha``).

The budget and target policies use the same fixed-sequence scheme with exact binomial bounds on
the share of items sent on (:func:`guaranteed_budget`) and on the routed accuracy
(:func:`guaranteed_target`).

Assumption: the validation items and the future ones are exchangeable (drawn from the same
source); the guarantee says nothing about drift, which :mod:`datashunt` checks separately.
"""

import warnings
from dataclasses import dataclass

import numpy as np
from scipy.stats import beta

from ..exceptions import CalibrationWarning, ConfigError
from .calibration import THRESHOLD_POLICIES, Choice, fewest_within_noise, noise_clause
from .policies import ALIASES, MATCH_LAST, MAX_LAST_RATE, TARGET, canonical

SHARE_FOR_RATIO = 0.9  # of alpha: spent on the share of losses among the disagreements; the rest on their rate


def binomial_upper(k, n, level: float) -> np.ndarray:
    """Exact (Clopper–Pearson) one-sided upper confidence bound for a binomial proportion.

    Examples
    --------
    >>> float(binomial_upper(0, 100, 0.05).round(4))
    0.0295
    """
    k, n = np.asarray(k, dtype=float), np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        bound = beta.ppf(1 - level, k + 1, n - k)
    return np.where(k >= n, 1.0, np.where(n > 0, bound, 1.0))


def certified(losses, wins, n: int, epsilon: float, alpha: float) -> np.ndarray:
    """Whether each (losses, wins) count rejects "accuracy below the large model's by more than ε" at level α.

    Examples
    --------
    >>> certified([0, 30], [0, 30], 1000, epsilon=0.02, alpha=0.1).tolist()  # 30 losses and 30 wins in 1000
    [True, True]
    >>> certified([0, 30], [0, 30], 1000, epsilon=0.005, alpha=0.1).tolist()  # too close to tell
    [True, False]
    """
    losses, wins = np.asarray(losses), np.asarray(wins)
    m = losses + wins
    ratio_up = binomial_upper(losses, m, SHARE_FOR_RATIO * alpha)
    rate_up = binomial_upper(m, n, (1 - SHARE_FOR_RATIO) * alpha)
    with np.errstate(divide="ignore"):
        bar = np.where(rate_up > 0, 0.5 + epsilon / (2 * rate_up), np.inf)
    # no disagreement observed proves nothing by itself: only a small enough bound on their rate does
    return ratio_up < bar


def min_validation(epsilon: float, alpha: float) -> int:
    """The fewest validation items on which :func:`certified` can pass at all (zero disagreements seen).

    Below it, ``match`` certifies no threshold however good the small model is.

    Examples
    --------
    >>> min_validation(0.01, 0.1)
    459
    """
    if epsilon <= 0:
        return np.iinfo(np.int64).max
    level = (1 - SHARE_FOR_RATIO) * alpha
    return int(np.floor(np.log(level) / np.log1p(-epsilon))) + 1


@dataclass(frozen=True)
class Guaranteed:
    """The chosen threshold, the candidates tested in order, and how many were certified."""

    threshold: float
    large_rate: float
    n_certified: int
    candidates: np.ndarray


def guaranteed_match(
    confidence, small_correct, large_correct, *, epsilon: float = 0.0, alpha: float = 0.1, n_candidates: int = 50
) -> Guaranteed:
    """The cheapest δ whose routed accuracy is at least the large model's minus ``epsilon``, with
    probability at least ``1 - alpha`` over the validation draw (see the module docstring).

    Candidates (see :data:`GRID`) are tested from the highest down; returns δ = +inf
    (everything to the large model) when none is certified.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> c = rng.uniform(size=2000)
    >>> small = rng.uniform(size=2000) < 0.5 + 0.5 * c      # surer is righter
    >>> large = rng.uniform(size=2000) < 0.9
    >>> g = guaranteed_match(c, small, large, epsilon=0.01, alpha=0.1)
    >>> 0 < g.large_rate < 1
    True
    """
    return guaranteed_cascade(
        *_two_stages(confidence, small_correct, large_correct),
        policy=MATCH_LAST,
        epsilon=epsilon,
        alpha=alpha,
        n_candidates=n_candidates,
    )


def guaranteed_cascade(
    confidence,
    correct,
    *,
    policy: str = MATCH_LAST,
    epsilon: float = 0.0,
    target: float | None = None,
    alpha: float = 0.1,
    n_candidates: int = 50,
) -> Guaranteed:
    """One δ shared by every stage but the last of a cascade, with the guarantee of
    :func:`guaranteed_match` against the last stage (``policy="match_last"``) or of
    :func:`guaranteed_target` (``"target_accuracy"``).

    ``confidence`` and ``correct`` are (n, S) arrays over the stages. The candidates walk one
    fixed path through the thresholds (the same δ at every stage, from everything-to-the-last
    stage down), as fixed-sequence testing needs; ``large_rate`` is the share reaching the last stage.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> conf = rng.uniform(size=(3000, 3))
    >>> correct = np.column_stack([rng.uniform(size=3000) < 0.4 + 0.6 * conf[:, 0],
    ...                            rng.uniform(size=3000) < 0.5 + 0.5 * conf[:, 1], rng.uniform(size=3000) < 0.93])
    >>> g = guaranteed_cascade(conf, correct, epsilon=0.01, alpha=0.1)
    >>> 0 < g.large_rate < 1
    True
    """
    confidence, correct = np.asarray(confidence, dtype=float), np.asarray(correct, dtype=bool)
    n, stages = confidence.shape
    _check(confidence[:, 0], correct[:, 0], correct[:, -1], epsilon, alpha)
    name = ALIASES.get(policy, policy)
    if name not in (MATCH_LAST, TARGET) or (name == TARGET and target is None):
        raise ConfigError(
            f"a guaranteed cascade takes policy 'match_last', or 'target_accuracy' with a target; got {policy!r}"
        )
    policy = name
    candidates = _candidates(confidence[:, :-1].ravel(), n_candidates)
    sure = confidence[None, :, :-1] >= candidates[:, None, None]  # (candidate, item, stage but the last)
    stop = np.where(sure.any(axis=2), sure.argmax(axis=2), stages - 1)  # the first stage sure enough, per candidate
    routed, last = correct[np.arange(n)[None, :], stop], correct[None, :, -1]
    if policy == MATCH_LAST:
        ok = certified((~routed & last).sum(axis=1), (routed & ~last).sum(axis=1), n, epsilon, alpha)
    else:
        ok = 1 - binomial_upper(n - routed.sum(axis=1), n, alpha) >= target
    n_ok = _fixed_sequence(ok)
    if not n_ok:
        return Guaranteed(np.inf, 1.0, 0, candidates)
    return Guaranteed(float(candidates[n_ok - 1]), float(np.mean(stop[n_ok - 1] == stages - 1)), n_ok, candidates)


def guaranteed_target(
    confidence, small_correct, large_correct, *, target: float, alpha: float = 0.1, n_candidates: int = 50
) -> Guaranteed:
    """The cheapest δ whose routed accuracy is at least ``target`` with probability ``1 - alpha``.

    Candidates are tested from everything-to-the-large-model down, each by the exact lower
    confidence bound of its validation accuracy; δ = +inf (all to the large model) when none
    passes, which meets the target only if the large model does.

    Examples
    --------
    >>> c = np.linspace(0, 1, 1000)
    >>> g = guaranteed_target(c, c > 0.3, np.ones(1000, bool), target=0.95, alpha=0.1)
    >>> 0.25 < g.large_rate < 0.3  # 25% would reach 0.95 exactly; the bound asks for a little more
    True
    """
    return guaranteed_cascade(
        *_two_stages(confidence, small_correct, large_correct),
        policy=TARGET,
        target=target,
        alpha=alpha,
        n_candidates=n_candidates,
    )


def guaranteed_budget(
    confidence,
    small_correct,
    large_correct,
    *,
    max_large_rate: float,
    alpha: float = 0.1,
    n_candidates: int = 50,
    budget_z: float = 0.0,
) -> Guaranteed:
    """The most accurate δ (on validation) among those whose share of items sent to the large
    model stays within ``max_large_rate`` on new data, with probability ``1 - alpha``.

    Candidates are tested from nothing-to-the-large-model up, each by the exact upper confidence
    bound of its share; δ = -inf (nothing sent) when none passes. ``budget_z`` > 0 then takes the
    one sending fewest whose accuracy is within that many standard errors of the most accurate
    (:func:`~datashunt.core.calibration.fewest_within_noise`).

    Examples
    --------
    >>> c = np.linspace(0, 1, 1000)
    >>> g = guaranteed_budget(c, c > 0.5, np.ones(1000, bool), max_large_rate=0.3, alpha=0.1)
    >>> g.large_rate <= 0.3
    True
    """
    c, small_correct, large_correct = _check(confidence, small_correct, large_correct, 0.0, alpha)
    candidates = _candidates(c, n_candidates)[::-1]  # cheapest (safest for a budget) first
    n_ok = int(
        (candidates <= budget_limit(c, max_large_rate=max_large_rate, alpha=alpha, n_candidates=n_candidates)).sum()
    )
    if not n_ok:
        return Guaranteed(-np.inf, 0.0, 0, candidates)
    sent = c[None, :] < candidates[:n_ok, None]
    right = np.where(sent, large_correct[None, :], small_correct[None, :]).sum(axis=1)
    best = int(np.flatnonzero(right == right.max())[-1])  # ties: the one sending most, still within budget
    if budget_z:
        gain = large_correct.astype(float) - small_correct
        best = fewest_within_noise(candidates[:n_ok], best, c, gain, budget_z)
    return Guaranteed(float(candidates[best]), float(sent[best].mean()), n_ok, candidates)


def budget_limit(confidence, *, max_large_rate: float, alpha: float, n_candidates: int = 50) -> float:
    """The highest candidate threshold whose share of items sent is within ``max_large_rate`` with
    probability ``1 - alpha`` (exact binomial bound, fixed sequence from the cheapest), or -inf.
    The share depends on the confidence alone: no answer of either model is needed.

    Examples
    --------
    >>> c = np.linspace(0, 1, 1000)
    >>> top = budget_limit(c, max_large_rate=0.3, alpha=0.1)
    >>> float(top), float((c < top).mean())  # 28% sent: the bound asks for a margin below 30%
    (0.28, 0.28)
    """
    c = np.ravel(np.asarray(confidence, dtype=float))
    if not 0 <= max_large_rate <= 1 or not 0 < alpha < 1:
        raise ConfigError(f"max_large_rate must be in [0, 1] and alpha in (0, 1), got {max_large_rate} and {alpha}")
    candidates = _candidates(c, n_candidates)[::-1]  # cheapest first
    ok = binomial_upper((c[None, :] < candidates[:, None]).sum(axis=1), len(c), alpha) <= max_large_rate
    n_ok = _fixed_sequence(ok)
    return float(candidates[n_ok - 1]) if n_ok else -np.inf


def _two_stages(confidence, small_correct, large_correct):
    """A shunt as a two-stage cascade: (confidence, correct) arrays over the small and the large model."""
    c = np.asarray(confidence, dtype=float).ravel()
    small_correct, large_correct = np.asarray(small_correct, bool).ravel(), np.asarray(large_correct, bool).ravel()
    if not len(c) == len(small_correct) == len(large_correct):
        raise ConfigError(
            f"guaranteed calibration needs confidences and correctness for the same items, got "
            f"{len(c)}, {len(small_correct)} and {len(large_correct)}"
        )
    return np.column_stack([c, np.ones_like(c)]), np.column_stack([small_correct, large_correct])


def _check(confidence, small_correct, large_correct, epsilon, alpha):
    c = np.asarray(confidence, dtype=float)
    small_correct, large_correct = np.asarray(small_correct, bool), np.asarray(large_correct, bool)
    n = len(c)
    if n == 0 or len(small_correct) != n or len(large_correct) != n or np.isnan(c).any():
        raise ConfigError(
            "guaranteed calibration needs confidences (no NaN) and correctness for the same, non-empty items"
        )
    if not 0 <= epsilon < 1 or not 0 < alpha < 1:
        raise ConfigError(f"the tolerance must be in [0, 1) and alpha in (0, 1), got {epsilon} and {alpha}")
    return c, small_correct, large_correct


#: Thresholds tested for confidences in [0, 1] (every built-in measure): fixed before any data is
#: seen, as fixed-sequence testing requires; fine near 1, where confident models put most items.
GRID = np.unique(np.concatenate([np.linspace(0, 1, 101), 1 - np.logspace(-6, -1, 51)]))


def _candidates(c, n_candidates: int) -> np.ndarray:
    """The thresholds to test, highest (safest) first: :data:`GRID` for confidences in [0, 1],
    else ``n_candidates`` quantiles of the confidences (for a custom scale; the order then depends
    on the validation confidences, though not on correctness, so the guarantee is approximate)."""
    if c.min() >= 0 and c.max() <= 1:
        return GRID[::-1]
    return np.unique(np.quantile(c, np.linspace(0, 1, n_candidates + 1)[1:]))[::-1]


def _fixed_sequence(ok) -> int:
    """How many hypotheses fixed-sequence testing rejects: all up to the first that is not."""
    ok = np.asarray(ok, dtype=bool)
    return len(ok) if ok.all() else int(np.argmin(ok))


def choose_guaranteed(
    confidence,
    small_correct,
    large_correct,
    policy: str,
    *,
    confidence_level: float,
    tolerance: float = 0.0,
    max_large_rate=None,
    target_accuracy=None,
    budget_z: float = 0.0,
):
    """δ for a shunt policy with a guarantee at ``confidence_level``, as a :class:`~datashunt.core.calibration.Choice`.

    ``row`` is -1 (the guaranteed thresholds are quantiles of the confidences, not sweep rows);
    ``met`` is False, with a warning, when no candidate could be certified. ``budget_z``: see
    :func:`guaranteed_budget`.
    """
    alpha = 1 - confidence_level
    level = f"with probability >= {confidence_level:g} (Learn then Test)"
    policy = canonical(policy, THRESHOLD_POLICIES)
    if policy == MATCH_LAST:
        found = guaranteed_match(confidence, small_correct, large_correct, epsilon=tolerance, alpha=alpha)
        goal = f"accuracy >= last stage's accuracy{f' - {tolerance:g}' if tolerance else ''} {level}"
    elif policy == MAX_LAST_RATE:
        if max_large_rate is None or not 0.0 <= max_large_rate <= 1.0:
            raise ConfigError(f"policy 'max_large_rate' needs max_large_rate in [0, 1], got {max_large_rate!r}")
        found = guaranteed_budget(
            confidence, small_correct, large_correct, max_large_rate=max_large_rate, alpha=alpha, budget_z=budget_z
        )
        goal = f"large-call rate <= {max_large_rate:.4f} {level}{noise_clause(budget_z)}"
    else:
        if target_accuracy is None or not 0.0 <= target_accuracy <= 1.0:
            raise ConfigError(f"policy 'target_accuracy' needs target_accuracy in [0, 1], got {target_accuracy!r}")
        found = guaranteed_target(confidence, small_correct, large_correct, target=target_accuracy, alpha=alpha)
        goal = f"accuracy >= {target_accuracy:.4f} {level}"
    met = found.n_certified > 0
    if not met:
        floor = min_validation(tolerance, alpha) if policy == MATCH_LAST else 0
        warn_uncertified(goal, len(np.asarray(confidence)), found.threshold, floor, tolerance, confidence_level)
    return Choice(found.threshold, -1, goal, met)


def warn_uncertified(
    goal: str, n: int, threshold: float, floor: int, tolerance: float, confidence_level: float
) -> None:
    """Say that no threshold met ``goal`` on ``n`` validation items, which side everything goes to,
    and, below ``floor`` items, that no data of that size could have."""
    need = (
        f" (with tolerance {tolerance:g} and confidence_level {confidence_level:g} it takes at least {floor} "
        "even when the two models never disagree)"
        if n < floor
        else ""
    )
    fallback = "everything to the large model" if threshold > 0 else "nothing to the large model"
    warnings.warn(
        f"no threshold could be certified for '{goal}' on {n} validation items{need}; using "
        f"{fallback}. More validation items (cv= uses every labelled one), a larger tolerance or "
        "confidence_level=None (the point estimate, no guarantee) saves large calls",
        CalibrationWarning,
        stacklevel=4,
    )
