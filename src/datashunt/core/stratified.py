"""Certifying δ from labels, asking the large model only where the bound needs it.

Routing changes an answer only on items the small model keeps, so at threshold δ

    accuracy(shunt) - accuracy(large) = p_W(δ) - p_L(δ),

with ``p_L(δ) = P(c ≥ δ, small wrong, large right)`` (a loss) and ``p_W(δ) = P(c ≥ δ, small
right, large wrong)`` (a win). Which labelled items the small model gets wrong is known from the
labels alone, so a loss can only hide among those few: :func:`plan_calls` asks the large model
about the small model's wrong answers (most confident first) and about a simple random sample of
its right ones, within a budget of calls. :func:`certify_match` then certifies the cheapest δ with

    p_L(δ) - p_W(δ) <= ε    with probability at least 1 - α over the draw of the labelled items,

using three exact, finite-sample bounds joined by a union bound:

- ``L(δ)``, the losses counted over the whole labelled pool (a wrong answer that was not asked
  about counts as a loss), is Binomial(N, p_L): Clopper–Pearson upper bound on ``p_L``;
- the wins in the sample are hypergeometric given the pool: exact lower bound on the pool's wins
  ``W(δ)`` (the exact count, and no level spent, when every right answer was asked);
- ``W(δ)`` is Binomial(N, p_W): Clopper–Pearson lower bound on ``p_W``.

Thresholds come from a grid fixed before any data is seen and are tested in a fixed sequence from
"everything to the large model" down (Learn then Test; Angelopoulos et al., 2021), each test at
the level left after "keep everything" was tested on its own with a share :data:`KEEP_ALL_SHARE` of α:
a small model that already meets the goal alone is kept whatever happens along the way.
Unlike the paired test of :mod:`datashunt.core.guarantee`, the statistic is a rate over the whole
pool, so one early disagreement cannot stop the walk near the top.

A cascade sharing one δ between its stages but the last is certified the same way against its
last stage: pass every earlier stage's confidence and correctness as (n, S - 1) arrays. An item
then "keeps" at δ when some earlier stage is sure enough, with the answer of the first such stage;
it is at risk of a loss when any earlier stage is wrong (asked from the highest such confidence
down), and can only be a win or a tie when they are all right (sampled).

Assumption: the labelled pool and future items are exchangeable (drawn from the same source), and
the small model never saw the pool in training (a held-out split).
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import beta, hypergeom

from ..exceptions import ConfigError
from .calibration import Choice, fewest_within_noise, noise_clause, sweep
from .guarantee import (
    Guaranteed,
    _candidates,
    _fixed_sequence,
    binomial_upper,
    budget_limit,
    warn_uncertified,
)
from .policies import MATCH_LAST, MAX_LAST_RATE, TARGET, canonical

#: Share of the budget spent on the small model's wrong answers when they do not all fit.
WRONG_SHARE = 0.5
#: Share of α spent on testing "keep everything" on its own.
KEEP_ALL_SHARE = 0.1
#: Share of the wins' half of α spent on bounding the pool's wins from the sampled ones (none when every
#: right answer is asked).
POOL_SHARE = 0.5


@dataclass(frozen=True)
class CallPlan:
    """Which labelled items the large model is asked about.

    ``ask`` holds sorted pool indices; ``floor`` is the lowest confidence down to which every
    wrong answer is asked (-inf: all of them); ``sampled_right`` marks, over the pool, the right
    answers in the simple random sample drawn among the right answers at or above ``floor``.
    """

    ask: np.ndarray
    floor: float
    sampled_right: np.ndarray


def plan_calls(confidence, small_correct, budget: int | None = None, *, random_state=None) -> CallPlan:
    """Choose at most ``budget`` pool items to ask the large model about (None: every item).

    ``confidence`` and ``small_correct`` are (n,) for a shunt, or (n, S - 1) over a cascade's
    stages but the last (an item is then "wrong" when any of them is, at its highest confidence).

    The small model's wrong answers are asked from the most confident down, all of them when they
    fit in a share :data:`WRONG_SHARE` of the budget, else down to the lowest grid threshold they
    fit above; the calls left
    go to a simple random sample of its right answers at or above that floor. Nothing here looks
    at a large-model answer.

    Examples
    --------
    >>> c = np.linspace(0.5, 1, 1000)
    >>> right = np.random.default_rng(0).uniform(size=1000) < c
    >>> plan = plan_calls(c, right, 300, random_state=0)
    >>> len(plan.ask) <= 300, plan.floor > 0.5
    (True, True)
    """
    c, right = _reach(*_pool(confidence, small_correct))
    budget = len(c) if budget is None else int(budget)
    if budget < 1:
        raise ConfigError(f"the budget of calibration calls must be at least 1, got {budget}")
    floor = -np.inf
    room = int(budget * WRONG_SHARE)
    if (~right).sum() > room and budget < len(c):  # a budget for every item asks every item
        candidates = _candidates(c, 50)  # highest first
        fits = [(c[~right] >= value).sum() <= room for value in candidates]
        floor = float(candidates[_fixed_sequence(fits) - 1]) if fits[0] else np.inf
    asked_wrong = np.flatnonzero(~right & (c >= floor))
    pool_right = np.flatnonzero(right & (c >= floor))
    k = min(len(pool_right), budget - len(asked_wrong))
    sample = np.random.default_rng(random_state).choice(pool_right, size=k, replace=False)
    sampled = np.zeros(len(c), dtype=bool)
    sampled[sample] = True
    return CallPlan(np.sort(np.r_[asked_wrong, sample]).astype(int), floor, sampled)


def binomial_lower(k, n, level: float) -> np.ndarray:
    """Exact (Clopper–Pearson) one-sided lower confidence bound for a binomial proportion.

    Examples
    --------
    >>> float(binomial_lower(100, 100, 0.05).round(4))
    0.9705
    """
    k, n = np.asarray(k, dtype=float), np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        bound = beta.ppf(level, k, n - k + 1)
    return np.where(k <= 0, 0.0, bound)


def hypergeom_lower(successes: int, draws: int, population: int, level: float) -> int:
    """Exact lower confidence bound on the successes in a finite population, from a simple random
    sample of ``draws`` that held ``successes``.

    Examples
    --------
    >>> hypergeom_lower(10, 100, 100, 0.05)  # the whole population was drawn
    10
    >>> hypergeom_lower(10, 100, 1000, 0.05) < 100
    True
    """
    if draws >= population or successes <= 0:
        return int(successes)
    # the smallest K whose chance of showing at least `successes` exceeds the level
    counts = np.arange(successes, population - (draws - successes) + 1)
    tail = hypergeom.sf(successes - 1, population, counts, draws)
    return int(counts[np.argmax(tail > level)]) if (tail > level).any() else int(counts[-1])


def certify_match(
    confidence, small_correct, plan: CallPlan, large_correct_asked, *, epsilon: float, alpha: float
) -> Guaranteed:
    """The cheapest δ whose routed accuracy is at least the large model's minus ``epsilon`` with
    probability at least ``1 - alpha`` (see the module docstring); δ = +inf when none is certified.

    ``confidence`` and ``small_correct`` are (n,) for a shunt, or (n, S - 1) over the stages but
    the last of a cascade that shares δ (``large_rate`` is then the share reaching the last stage).
    ``large_correct_asked`` says, for each of ``plan.ask`` in order, whether the large model was
    right (count a failed call as right: the conservative side for both losses and wins).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> c = rng.uniform(0.5, 1, size=4000)
    >>> small = rng.uniform(size=4000) < c                  # surer is righter
    >>> large = rng.uniform(size=4000) < 0.9
    >>> plan = plan_calls(c, small, 600, random_state=0)
    >>> g = certify_match(c, small, plan, large[plan.ask], epsilon=0.01, alpha=0.1)
    >>> 0 < g.large_rate < 1
    True
    """
    early = _pool(confidence, small_correct)
    if not 0 <= epsilon < 1 or not 0 < alpha < 1:
        raise ConfigError(f"the tolerance must be in [0, 1) and alpha in (0, 1), got {epsilon} and {alpha}")
    large_ok = _answers(plan, large_correct_asked, len(early[0]))
    candidates = _thresholds(early[0])
    if _passes(early, large_ok, plan, np.array([-np.inf]), epsilon, KEEP_ALL_SHARE * alpha)[0]:
        return Guaranteed(-np.inf, 0.0, len(candidates) + 1, candidates)
    ok = _passes(early, large_ok, plan, candidates, epsilon, (1 - KEEP_ALL_SHARE) * alpha)
    n_ok = _fixed_sequence(ok)
    if not n_ok:
        return Guaranteed(np.inf, 1.0, 0, candidates)
    chosen = float(candidates[n_ok - 1])
    return Guaranteed(chosen, float(1 - _kept(early, [chosen])[0].mean()), n_ok, candidates)


def _passes(early, large_ok, plan, thresholds, epsilon, alpha) -> np.ndarray:
    """Whether each threshold passes ``upper(p_L) - lower(p_W) <= epsilon`` at level ``alpha``, up to
    the first that does not (the rest are reported as not passing: a fixed sequence stops there)."""
    reach, safe = _reach(*early)
    n = len(reach)
    kept, kept_right = _kept(early, thresholds)
    upper_loss = binomial_upper((kept & ~kept_right & large_ok).sum(axis=1), n, alpha / 2)
    asked = np.zeros(n, dtype=bool)
    asked[plan.ask] = True
    known_wins = (kept & kept_right & ~safe & asked & ~large_ok).sum(axis=1)  # at-risk items asked: exact
    region = kept & (safe & (reach >= plan.floor))[None, :]  # the sample speaks only for safe items above the floor
    population = region.sum(axis=1)
    draws = (region & plan.sampled_right).sum(axis=1)
    seen_wins = (region & plan.sampled_right & ~large_ok).sum(axis=1)
    level_pool = 0.0 if np.all(draws == population) else POOL_SHARE * alpha / 2
    ok = np.zeros(len(thresholds), dtype=bool)
    for i in range(len(thresholds)):
        if upper_loss[i] > epsilon:  # wins are needed to pass
            wins = known_wins[i] + hypergeom_lower(seen_wins[i], draws[i], population[i], level_pool)
            if upper_loss[i] - binomial_lower(wins, n, alpha / 2 - level_pool) > epsilon:
                break
        ok[i] = True
    return ok


def _thresholds(confidence) -> np.ndarray:
    """The candidates to test, highest first, from the finite confidences (-inf: a stage that failed)."""
    finite = confidence[np.isfinite(confidence)]
    return _candidates(finite if len(finite) else np.zeros(1), 50)


def _kept(early, thresholds):
    """(kept, kept and right) at each threshold: (T, n) arrays; with several earlier stages, an item
    stops at the first one sure enough and takes its answer."""
    confidence, correct = early
    sure = confidence[None, :, :] >= np.asarray(thresholds, dtype=float)[:, None, None]
    first = sure.argmax(axis=2)
    kept = sure.any(axis=2)
    return kept, kept & correct[np.arange(confidence.shape[0])[None, :], first]


def _reach(confidence, correct):
    """Per item: the highest δ at which it stops before the last stage, and whether every earlier
    stage is right (then it can only be a win or a tie)."""
    return confidence.max(axis=1), correct.all(axis=1)


def _answers(plan: CallPlan, large_correct_asked, n: int) -> np.ndarray:
    """The large model's correctness over the pool; an item not asked counts as right (a wrong small
    answer there is a loss, a right one no win)."""
    asked_ok = np.asarray(large_correct_asked, dtype=bool).ravel()
    if len(asked_ok) != len(plan.ask) or len(plan.sampled_right) != n:
        raise ConfigError(
            f"the plan asks {len(plan.ask)} of {len(plan.sampled_right)} items; got {len(asked_ok)} "
            f"answers for a pool of {n}"
        )
    large_ok = np.ones(n, dtype=bool)
    large_ok[plan.ask] = asked_ok
    return large_ok


def _pool(confidence, small_correct):
    """(n, S - 1) confidence and correctness of the stages before the last (one column for a shunt)."""
    c, right = np.asarray(confidence, dtype=float), np.asarray(small_correct, dtype=bool)
    c, right = (c[:, None], right[:, None]) if c.ndim == 1 else (c, right)
    if c.ndim != 2 or c.size == 0 or c.shape != right.shape or np.isnan(c).any():
        raise ConfigError(
            "certification needs the small model's confidence (no NaN) and correctness for the same, "
            "non-empty labelled items"
        )
    return c, right


def sample_calls(confidence, budget: int | None = None, *, below: float = np.inf, random_state=None) -> np.ndarray:
    """A simple random sample of at most ``budget`` pool items whose confidence is below ``below``
    (None: all of them), sorted: where :func:`certify_target` and :func:`choose_budget` ask the
    large model, since they need its answers on the items sent to it, whatever the small model says.

    Examples
    --------
    >>> len(sample_calls(np.linspace(0, 1, 100), 10, below=0.5, random_state=0))
    10
    """
    c = np.ravel(np.asarray(confidence, dtype=float))
    if budget is not None and int(budget) < 1:
        raise ConfigError(f"the budget of calibration calls must be at least 1, got {budget}")
    region = np.flatnonzero(c < below)
    k = len(region) if budget is None else min(len(region), int(budget))
    return np.sort(np.random.default_rng(random_state).choice(region, size=k, replace=False)).astype(int)


def hypergeom_upper(successes: int, draws: int, population: int, level: float) -> int:
    """Exact upper confidence bound on the successes in a finite population (see :func:`hypergeom_lower`).

    Examples
    --------
    >>> hypergeom_upper(0, 100, 100, 0.05)
    0
    >>> hypergeom_upper(0, 100, 1000, 0.05) > 0
    True
    """
    return int(population - hypergeom_lower(draws - successes, draws, population, level))


def certify_target(confidence, small_correct, asked, large_correct_asked, *, target: float, alpha: float) -> Guaranteed:
    """The cheapest δ whose routed accuracy is at least ``target`` with probability ``1 - alpha``,
    from every label and the large model's answers on a simple random sample ``asked`` of the pool
    (:func:`sample_calls`); δ = +inf when none is certified.

    The errors split into those of kept items, counted over the whole pool from the labels alone
    (Clopper–Pearson at ``alpha / 2``), and the large model's on items sent, bounded from the
    sample (hypergeometric for the pool's count at a share :data:`POOL_SHARE` of the other half,
    then Clopper–Pearson); thresholds are tested in a fixed sequence from everything sent down.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> c = rng.uniform(0.5, 1, size=5000)
    >>> small = rng.uniform(size=5000) < c
    >>> large = rng.uniform(size=5000) < 0.95
    >>> asked = sample_calls(c, 800, random_state=0)
    >>> g = certify_target(c, small, asked, large[asked], target=0.9, alpha=0.1)
    >>> 0 < g.large_rate < 1
    True
    """
    c, right = (a[:, 0] for a in _pool(confidence, small_correct))
    if not 0 <= target <= 1 or not 0 < alpha < 1:
        raise ConfigError(f"the target must be in [0, 1] and alpha in (0, 1), got {target} and {alpha}")
    asked = np.asarray(asked, dtype=int)
    wrong = ~np.asarray(large_correct_asked, dtype=bool).ravel()
    if len(wrong) != len(asked):
        raise ConfigError(f"{len(asked)} items were asked about; got {len(wrong)} answers")
    n = len(c)
    candidates = np.r_[np.inf, _thresholds(c[:, None])]
    level_pool = 0.0 if len(asked) == n else POOL_SHARE * alpha / 2
    ok = np.zeros(len(candidates), dtype=bool)
    for i, delta in enumerate(candidates):
        kept_wrong = binomial_upper(int((~right & (c >= delta)).sum()), n, alpha / 2)
        sent = c[asked] < delta
        pool_wrong = hypergeom_upper(int((wrong & sent).sum()), int(sent.sum()), int((c < delta).sum()), level_pool)
        if 1 - kept_wrong - binomial_upper(pool_wrong, n, alpha / 2 - level_pool) < target:
            break
        ok[i] = True
    n_ok = _fixed_sequence(ok)
    if not n_ok:
        return Guaranteed(np.inf, 1.0, 0, candidates)
    chosen = float(candidates[n_ok - 1])
    return Guaranteed(chosen, float(np.mean(c < chosen)), n_ok, candidates)


def choose_budget(
    confidence, small_correct, asked, large_correct_asked, *, max_large_rate: float, alpha: float, budget_z: float = 0.0
) -> Guaranteed:
    """The δ with the best estimated accuracy among those whose share of items sent stays within
    ``max_large_rate`` with probability ``1 - alpha`` (with ``budget_z`` > 0, the one sending
    fewest within that many standard errors of it:
    :func:`~datashunt.core.calibration.fewest_within_noise`, the sample's variance counted).

    The share sent depends on the small model's confidence alone, so it is certified on every pool
    item (:func:`~datashunt.core.guarantee.guaranteed_budget`'s exact bound) with no large call;
    the calls (``asked``: a sample of the items below the highest certified δ, from
    :func:`sample_calls`) only choose among the certified thresholds. δ = -inf (nothing sent) when
    none is certified.

    Examples
    --------
    >>> c = np.linspace(0, 1, 1000)
    >>> top = budget_limit(c, max_large_rate=0.3, alpha=0.1)
    >>> asked = sample_calls(c, 200, below=top, random_state=0)
    >>> g = choose_budget(c, c > 0.5, asked, np.ones(len(asked), bool), max_large_rate=0.3, alpha=0.1)
    >>> g.large_rate <= 0.3
    True
    """
    c, right = (a[:, 0] for a in _pool(confidence, small_correct))
    top = budget_limit(c, max_large_rate=max_large_rate, alpha=alpha)
    candidates = _thresholds(c[:, None])[::-1]
    passing = candidates[candidates <= top]
    if not len(passing):
        return Guaranteed(-np.inf, 0.0, 0, candidates)
    asked = np.asarray(asked, dtype=int)
    large_ok = np.asarray(large_correct_asked, dtype=float).ravel()
    weight = (c < top).sum() / max(len(asked), 1)  # each sampled item stands for this many in the band
    # accuracy over the band below the top, relative to keeping all of it: what sending gains there
    gain = np.array([((large_ok - right[asked]) * (c[asked] < d)).sum() * weight for d in passing])
    best = int(np.flatnonzero(gain >= gain.max() - 1e-12)[-1])  # ties: the one sending most
    if budget_z:
        band = int((c < top).sum())
        best = fewest_within_noise(passing, best, c[asked], large_ok - right[asked], budget_z, n=len(c), band=band)
    return Guaranteed(float(passing[best]), float(np.mean(c < passing[best])), len(passing), candidates)


def estimated_sweep(confidence, small_correct, plan: CallPlan, large_correct_asked, large_cost_asked=None):
    """The two-stage :func:`~datashunt.core.calibration.sweep` from the plan's answers: a sampled right
    answer stands for the unsampled ones by inverse-probability weighting; where a threshold would
    send on an item whose large answer cannot be estimated (below the floor), accuracy is NaN.
    ``gain``, the shunt's accuracy minus the large model's, is known wherever the kept items are
    (at and above the floor). ``cost`` counts the mean price of the asked items for every item
    sent; ``gap_se`` is NaN unless every item was asked."""
    c, right = (a[:, 0] for a in _pool(confidence, small_correct))
    large = _large_estimates(c, right, plan, large_correct_asked)
    price = 0.0 if large_cost_asked is None or len(plan.ask) == 0 else float(np.mean(large_cost_asked))
    table = _two_stages(c, right, large, price)
    if len(plan.ask) < len(c):  # the paired standard error needs every large answer
        table["gap_se"] = np.nan
    order = np.argsort(c, kind="stable")  # the sweep's rows keep the items from position n_last on
    kept_gain = np.r_[np.cumsum((right[order] - large[order])[::-1])[::-1], 0.0]  # from the top: no NaN above
    table["gain"] = kept_gain[table["n_last"].to_numpy()] / len(c)
    return table


def estimated_path(confidence, correct, plan: CallPlan, last_correct_asked, price) -> pd.DataFrame:
    """A cascade's sweep along the shared δ that :func:`certify_match` walks, estimated as in
    :func:`estimated_sweep`: columns ``threshold_1`` ... ``threshold_{S-1}`` (all δ), ``accuracy``
    (NaN where an item whose last answer cannot be estimated reaches the last stage), ``cost``
    (per item; the last stage's price is the mean over the asked items), ``last_rate`` and ``n_last``.

    ``confidence``, ``correct`` are (n, S - 1) over the stages but the last; ``price`` is (n, S),
    its last column read only at ``plan.ask``.
    """
    early = _pool(confidence, correct)
    reach, safe = _reach(*early)
    last = _large_estimates(reach, safe, plan, last_correct_asked)
    price = np.array(price, dtype=float)
    price[:, -1] = price[plan.ask, -1].mean() if len(plan.ask) else 0.0
    thresholds = np.r_[np.inf, _thresholds(early[0]), -np.inf]
    kept, kept_right = _kept(early, thresholds)
    sure = early[0][None, :, :] >= thresholds[:, None, None]
    stop = np.where(kept, sure.argmax(axis=2), early[0].shape[1])  # (T, n): the stage each item stops at
    reached = np.arange(price.shape[1])[None, None, :] <= stop[:, :, None]
    with np.errstate(invalid="ignore"):
        accuracy = np.where(kept, kept_right, last[None, :]).mean(axis=1)
    columns = {f"threshold_{s + 1}": thresholds for s in range(early[0].shape[1])}
    return pd.DataFrame(
        columns
        | {
            "accuracy": accuracy,
            "cost": (reached * price[None]).sum(axis=(1, 2)) / len(reach),
            "last_rate": 1 - kept.mean(axis=1),
            "n_last": (~kept).sum(axis=1),
        }
    )


def _large_estimates(reach, safe, plan: CallPlan, large_correct_asked) -> np.ndarray:
    """Each pool item's large-model correctness, or its inverse-probability stand-in: an asked
    at-risk item its answer; a sampled safe item ``1 + (answer - 1) / share``; an unsampled safe one
    above the floor 1 (it adds nothing); NaN for what cannot be estimated (below the floor)."""
    large = np.full(len(reach), np.nan)
    above = reach >= plan.floor
    share = plan.sampled_right.sum() / max((safe & above).sum(), 1)
    large[safe & above] = 1.0
    asked = np.zeros(len(reach), dtype=bool)
    asked[plan.ask] = True
    answered = np.zeros(len(reach))
    answered[plan.ask] = np.asarray(large_correct_asked, dtype=float)
    large[plan.sampled_right] = 1.0 + (answered[plan.sampled_right] - 1.0) / share
    large[asked & ~safe] = answered[asked & ~safe]
    return large


def sampled_sweep(
    confidence, small_correct, asked, large_correct_asked, large_cost_asked=None, *, below: float = np.inf
) -> pd.DataFrame:
    """The two-stage :func:`~datashunt.core.calibration.sweep` from a simple random sample of the items
    below ``below`` (:func:`sample_calls`): a sampled item's large answer stands for ``1 / share``
    of them, an unsampled one for none; above ``below`` it is unknown (NaN accuracy where sent)."""
    c, right = (a[:, 0] for a in _pool(confidence, small_correct))
    asked = np.asarray(asked, dtype=int)
    region = c < below
    large = np.where(region, 0.0, np.nan)
    large[asked] = np.asarray(large_correct_asked, dtype=float) * region.sum() / max(len(asked), 1)
    price = 0.0 if large_cost_asked is None or len(asked) == 0 else float(np.mean(large_cost_asked))
    table = _two_stages(c, right, large, price)
    if len(asked) < len(c):
        table["gap_se"] = np.nan
    return table


def _two_stages(confidence, right, large, price: float) -> pd.DataFrame:
    """The exact two-stage sweep of estimated large answers, each item sent on costing ``price``."""
    cost = np.column_stack([np.zeros(len(confidence)), np.full(len(confidence), price)])
    return sweep(confidence, np.column_stack([right, large]), cost)


def calls_for(
    policy: str,
    confidence,
    small_correct,
    budget: int | None,
    *,
    alpha: float,
    max_large_rate: float | None = None,
    random_state=None,
):
    """Which pool items a guaranteed ``policy`` asks the large model about: a :class:`CallPlan`
    for ``match_large`` (:func:`plan_calls`), sorted indices for the others (:func:`sample_calls`:
    over the whole pool for ``target_accuracy``, below the certified budget for ``max_large_rate``)."""
    if canonical(policy) == MATCH_LAST:
        return plan_calls(confidence, small_correct, budget, random_state=random_state)
    below = sampled_below(policy, confidence, alpha=alpha, max_large_rate=max_large_rate)
    return sample_calls(confidence, budget, below=below, random_state=random_state)


def sampled_below(policy: str, confidence, *, alpha: float, max_large_rate: float | None = None) -> float:
    """The confidence below which ``target_accuracy`` (+inf: everywhere) and ``max_large_rate``
    (the highest threshold certified within budget) sample the items they ask about."""
    if canonical(policy) != MAX_LAST_RATE:
        return np.inf
    if max_large_rate is None:
        raise ConfigError("policy 'max_large_rate' needs max_large_rate in [0, 1], got None")
    return budget_limit(confidence, max_large_rate=max_large_rate, alpha=alpha)


def asked_of(calls) -> np.ndarray:
    """The pool indices asked under :func:`calls_for`'s result."""
    return calls.ask if isinstance(calls, CallPlan) else calls


def choose_stratified(
    policy: str,
    confidence,
    small_correct,
    calls,
    large_correct_asked,
    *,
    confidence_level: float,
    tolerance: float = 0.0,
    max_large_rate=None,
    target_accuracy=None,
    budget_z: float = 0.0,
):
    """δ for a guaranteed shunt ``policy`` from every label and the answers :func:`calls_for` asked
    for, as a :class:`~datashunt.core.calibration.Choice` (``met`` False, with a warning, when no
    threshold is certified); its ``sweep`` estimate comes from :func:`estimated_sweep` or
    :func:`sampled_sweep`. ``budget_z``: see :func:`choose_budget`."""
    alpha = 1 - confidence_level
    level = f"with probability >= {confidence_level:g} (Learn then Test)"
    n = len(np.ravel(confidence))
    floor = 0
    policy = canonical(policy)
    if policy == MATCH_LAST:
        found = certify_match(confidence, small_correct, calls, large_correct_asked, epsilon=tolerance, alpha=alpha)
        goal = f"accuracy >= last stage's accuracy{f' - {tolerance:g}' if tolerance else ''} {level}"
        share = (1 - KEEP_ALL_SHARE) * alpha / 2  # of the losses' bound, with none seen
        floor = int(np.floor(np.log(share) / np.log1p(-tolerance))) + 1 if tolerance > 0 else np.iinfo(np.int64).max
    elif policy == TARGET:
        if target_accuracy is None:
            raise ConfigError("policy 'target_accuracy' needs target_accuracy in [0, 1], got None")
        found = certify_target(
            confidence, small_correct, calls, large_correct_asked, target=target_accuracy, alpha=alpha
        )
        goal = f"accuracy >= {target_accuracy:.4f} {level}"
    else:
        found = choose_budget(
            confidence,
            small_correct,
            calls,
            large_correct_asked,
            max_large_rate=max_large_rate,
            alpha=alpha,
            budget_z=budget_z,
        )
        goal = f"large-call rate <= {max_large_rate:.4f} {level}{noise_clause(budget_z)}"
    if not found.n_certified:
        warn_uncertified(goal, n, found.threshold, floor, tolerance, confidence_level)
    return Choice(found.threshold, -1, goal, found.n_certified > 0)
