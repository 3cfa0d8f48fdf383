"""How often each way of calibrating δ breaks its promise, on populations whose truth is known.

Each setting fixes a population: the small model's confidence c = 0.5 + 0.5·Beta(a, b), the chance
that the small model is right given c, and the chance that the large model is right given c
(independent given c). The true accuracy of the shunt at every δ is computed exactly from these
(quadrature on a fine grid), so for any δ we know whether "accuracy ≥ the large model's − ε" holds.
Each draw samples ``--n-validation`` items, calibrates δ three ways, and checks the promise on the
population:

- ``guaranteed``: the default, :func:`datashunt.core.stratified.certify_match` at level α: every
  sampled item is labelled, the large model's answers are used only for the
  ``--calibration-calls`` items :func:`~datashunt.core.stratified.plan_calls` picks;
- ``paired``: :func:`datashunt.core.guarantee.guaranteed_match` at level α, the large model's
  answer on every item (the default before stratified certification);
- ``point_estimate``: the cheapest δ whose validation accuracy is at least the large model's − ε;
- ``match_z2``: the same, with the shunt's validation accuracy lowered by 2 standard errors of the
  paired gap (the default of ``ShuntClassifier`` before guarantees).

The same draws check the stratified guarantees of the other policies (``--part policies``):
``target_accuracy`` at the large model's true accuracy minus 0.02
(:func:`~datashunt.core.stratified.certify_target` on a random sample of ``--calibration-calls``
items) and ``max_large_rate`` at 0.2 and 0.5 (:func:`~datashunt.core.stratified.choose_budget`).

``--part learned`` checks the same promise when δ is certified on a learned routing score
(``confidence="learned"``, :mod:`datashunt.estimators.deferral`): the small model says a class as
well as a confidence, and on one of the two classes it is wrong more often at the same
confidence. Each draw trains the cross-fitted deferral on the validation items (labels only),
certifies δ on its out-of-fold scores with ``certify_match`` as above, and judges the scorer then
deployed (trained on every validation item) on a fixed sample of 200,000 items of the population,
whose true chances of being right are known; the raw confidence, certified the same way, is the
baseline on the same draws.

``violation_rate`` is the share of draws whose δ breaks the promise on the population;
``large_share`` the mean true share of items sent to the large model; ``calls`` the mean number of
large answers the method used.

    .venv/bin/python benchmarks/guarantee.py --seed 0                   # both parts
    .venv/bin/python benchmarks/guarantee.py --seed 0 --part policies   # only the target and budget rows
    .venv/bin/python benchmarks/guarantee.py --seed 0 --part learned --draws 200   # the learned score
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy.stats import beta

from datashunt.core.calibration import sweep
from datashunt.core.guarantee import guaranteed_match
from datashunt.core.stratified import (
    budget_limit,
    certify_match,
    certify_target,
    choose_budget,
    plan_calls,
    sample_calls,
)
from datashunt.estimators.deferral import Deferral

RESULTS = Path(__file__).resolve().parent / "results" / "guarantee.json"
ALPHAS = (0.05, 0.1, 0.2)
EPSILONS = (0.0, 0.01, 0.02)
#: name: (Beta a, Beta b, P(small right | c), P(large right | c))
SETTINGS = {
    "small better when sure": (4.0, 1.5, lambda c: 0.35 + 0.65 * c, lambda c: 0.92 + 0 * c),
    "calibrated small": (3.0, 1.5, lambda c: c, lambda c: 0.93 + 0 * c),
    "small never better": (4.0, 1.5, lambda c: 0.3 + 0.6 * c, lambda c: 0.92 + 0 * c),
    "both find the same items easy": (3.0, 2.0, lambda c: c, lambda c: 0.75 + 0.22 * c),
    "small far better": (4.0, 1.2, lambda c: 0.6 + 0.4 * c, lambda c: 0.886 + 0 * c),
}
GRID = 40_001


class Population:
    """Exact gap between the shunt's accuracy and the large model's, and the share sent on, at any δ."""

    def __init__(self, a, b, small, large):
        self.a, self.b, self.small, self.large = a, b, small, large
        edges = np.linspace(0.5, 1.0, GRID)
        self.mass = np.diff(beta.cdf((edges - 0.5) * 2, a, b))
        mid = (edges[1:] + edges[:-1]) / 2
        self.mid = mid
        # gap(δ) = ∫_{c ≥ δ} (s(c) - l(c)) dF(c): cumulative from the top
        self.tail_gap = np.concatenate([np.cumsum(((small(mid) - large(mid)) * self.mass)[::-1])[::-1], [0.0]])
        self.large_accuracy = float((large(mid) * self.mass).sum())

    def gap(self, delta):
        return self.tail_gap[np.searchsorted(self.mid, delta, side="left")]

    def large_share(self, delta):
        return float(beta.cdf(np.clip((delta - 0.5) * 2, 0, 1), self.a, self.b))  # -inf: none, +inf: all

    def draw(self, n, rng):
        c = 0.5 + 0.5 * rng.beta(self.a, self.b, size=n)
        return c, rng.uniform(size=n) < self.small(c), rng.uniform(size=n) < self.large(c)


def point_threshold(table, epsilon, z):
    """Cheapest δ whose validation accuracy, lowered by z standard errors, is within ε of the large model's."""
    acc, rate = table["accuracy"].to_numpy(), table["last_rate"].to_numpy()
    ok = acc - acc[-1] - z * table["gap_se"].to_numpy() >= -epsilon - 1e-12
    idx = np.flatnonzero(ok)
    return float(table["threshold_1"].iloc[idx[np.argmin(rate[idx])]])


def run(n_validation, calls, draws, seed):
    records = []
    for s, (name, spec) in enumerate(SETTINGS.items()):
        population = Population(*spec)
        rng = np.random.default_rng([seed, s])
        chosen = {}  # (method, alpha, epsilon) -> list of (δ, large answers used)
        for draw in range(draws):
            c, small, large = population.draw(n_validation, rng)
            table = sweep(c, np.column_stack([small, large]))
            plan = plan_calls(c, small, calls, random_state=[seed, s, draw])
            for epsilon in EPSILONS:
                chosen.setdefault(("point_estimate", None, epsilon), []).append(
                    (point_threshold(table, epsilon, 0.0), n_validation)
                )
                chosen.setdefault(("match_z2", None, epsilon), []).append(
                    (point_threshold(table, epsilon, 2.0), n_validation)
                )
                for alpha in ALPHAS:
                    g = guaranteed_match(c, small, large, epsilon=epsilon, alpha=alpha)
                    chosen.setdefault(("paired", alpha, epsilon), []).append((g.threshold, n_validation))
                    g = certify_match(c, small, plan, large[plan.ask], epsilon=epsilon, alpha=alpha)
                    chosen.setdefault(("guaranteed", alpha, epsilon), []).append((g.threshold, len(plan.ask)))
        for (method, alpha, epsilon), picked in chosen.items():
            deltas = np.array([d for d, _ in picked])
            gaps = np.array([population.gap(d) for d in deltas])
            records.append(
                {
                    "setting": name,
                    "method": method,
                    "alpha": alpha,
                    "epsilon": epsilon,
                    "violation_rate": float(np.mean(gaps < -epsilon - 1e-9)),
                    "large_share": float(np.mean([population.large_share(d) for d in deltas])),
                    "mean_true_gap": float(gaps.mean()),
                    "calls": float(np.mean([k for _, k in picked])),
                }
            )
        best = max(population.tail_gap)
        print(f"{name}: best true gap over δ {best:+.4f}", file=sys.stderr)
    return records


#: name: (Beta a, Beta b, P(small right | c, said class 0), P(small right | c, said 1), P(large right))
LEARNED_SETTINGS = {
    "one class doubtful": (3.0, 1.5, lambda c: 0.2 + 0.8 * c, lambda c: 0.1 + 0.6 * c, 0.92),
    "classes alike": (3.0, 1.5, lambda c: c, lambda c: c, 0.93),
}
TRUTH_SAMPLE = 200_000


class TwoClassPopulation:
    """Items the small model says class 0 or 1 about (half each), with its confidence c; its chance
    of being right depends on both, the large model's on neither."""

    def __init__(self, a, b, right_0, right_1, large):
        self.a, self.b, self.right, self.large = a, b, (right_0, right_1), large

    def draw(self, n, rng):
        c, said = 0.5 + 0.5 * rng.beta(self.a, self.b, size=n), rng.integers(0, 2, n)
        p_small = np.where(said == 0, self.right[0](c), self.right[1](c))
        proba = np.where(said[:, None] == 0, np.column_stack([c, 1 - c]), np.column_stack([1 - c, c]))
        return proba, p_small, np.full(n, self.large)


def run_learned(n_validation, calls, draws, seed):
    """Violation rates of ``certify_match`` on the learned score (and on the raw confidence, the baseline)."""
    records = []
    for s, (name, spec) in enumerate(LEARNED_SETTINGS.items()):
        population = TwoClassPopulation(*spec)
        rng = np.random.default_rng([seed, s, 2])
        truth_proba, truth_small, truth_large = population.draw(TRUTH_SAMPLE, np.random.default_rng([seed, s, 3]))
        truth_gain = truth_small - truth_large  # each item's expected gain from keeping it
        chosen = {}
        for draw in range(draws):
            proba, p_small, p_large = population.draw(n_validation, rng)
            small, large = rng.uniform(size=n_validation) < p_small, rng.uniform(size=n_validation) < p_large
            deferral = Deferral(random_state=draw)
            learned = deferral.fit_scores([proba], small)[:, 0]
            deployed = deferral.score(0, [truth_proba])
            for score_name, score, truth_score in (
                ("learned", learned, deployed),
                ("max_proba", proba.max(axis=1), truth_proba.max(axis=1)),
            ):
                plan = plan_calls(score, small, calls, random_state=[seed, s, draw])
                for epsilon in EPSILONS:
                    for alpha in ALPHAS:
                        g = certify_match(score, small, plan, large[plan.ask], epsilon=epsilon, alpha=alpha)
                        kept = truth_score >= g.threshold
                        chosen.setdefault((score_name, alpha, epsilon), []).append(
                            (float(truth_gain[kept].sum() / TRUTH_SAMPLE), float(1 - kept.mean()))
                        )
        for (score_name, alpha, epsilon), picked in chosen.items():
            gaps, shares = np.array([g for g, _ in picked]), np.array([r for _, r in picked])
            records.append(
                {
                    "setting": name,
                    "method": "guaranteed",
                    "score": score_name,
                    "alpha": alpha,
                    "epsilon": epsilon,
                    "violation_rate": float(np.mean(gaps < -epsilon - 1e-9)),
                    "large_share": float(shares.mean()),
                    "mean_true_gap": float(gaps.mean()),
                    "calls": calls,
                }
            )
        print(f"{name}: {draws} draws", file=sys.stderr)
    return records


BUDGETS = (0.2, 0.5)


def run_policies(n_validation, calls, draws, seed):
    """Violation rates of the stratified target and budget guarantees (method ``guaranteed``)."""
    records = []
    for s, (name, spec) in enumerate(SETTINGS.items()):
        population = Population(*spec)
        rng = np.random.default_rng([seed, s, 1])
        target = population.large_accuracy - 0.02
        chosen = {}
        for draw in range(draws):
            c, small, large = population.draw(n_validation, rng)
            asked = sample_calls(c, calls, random_state=[seed, s, draw])
            for alpha in ALPHAS:
                g = certify_target(c, small, asked, large[asked], target=target, alpha=alpha)
                chosen.setdefault(("target_accuracy", target, alpha), []).append(g.threshold)
                for rate in BUDGETS:
                    top = budget_limit(c, max_large_rate=rate, alpha=alpha)
                    few = sample_calls(c, calls, below=top, random_state=[seed, s, draw])
                    g = choose_budget(c, small, few, large[few], max_large_rate=rate, alpha=alpha)
                    chosen.setdefault(("max_large_rate", rate, alpha), []).append(g.threshold)
        for (policy, goal, alpha), deltas in chosen.items():
            shares = np.array([population.large_share(d) for d in deltas])
            accuracy = np.array([population.large_accuracy + population.gap(d) for d in deltas])
            broken = accuracy < goal - 1e-9 if policy == "target_accuracy" else shares > goal + 1e-9
            records.append(
                {
                    "setting": name,
                    "method": "guaranteed",
                    "policy": policy,
                    "goal": goal,
                    "alpha": alpha,
                    "violation_rate": float(np.mean(broken)),
                    "large_share": float(shares.mean()),
                    "mean_true_accuracy": float(accuracy.mean()),
                    "calls": calls,
                }
            )
    return records


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-validation", type=int, default=1000)
    parser.add_argument(
        "--calibration-calls", type=int, default=400, help="Large answers the stratified method may use per draw."
    )
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument(
        "--part",
        choices=("all", "match", "policies", "learned"),
        default="all",
        help="Run only the match methods, the target and budget policies, or the learned score; the "
        "other parts' rows are kept from the results file ('all' runs the first two).",
    )
    args = parser.parse_args()
    earlier = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    records = (
        run(args.n_validation, args.calibration_calls, args.draws, args.seed)
        if args.part in ("all", "match")
        else earlier.get("simulation", [])
    )
    policies = (
        run_policies(args.n_validation, args.calibration_calls, args.draws, args.seed)
        if args.part in ("all", "policies")
        else earlier.get("policies", [])
    )
    learned = (
        run_learned(args.n_validation, args.calibration_calls, args.draws, args.seed)
        if args.part == "learned"
        else earlier.get("learned", [])
    )
    guaranteed = [r for r in records + policies + learned if r["method"] == "guaranteed"]
    bar_met = all(r["violation_rate"] <= r["alpha"] + 0.01 for r in guaranteed)
    command = "python benchmarks/guarantee.py " + " ".join(sys.argv[1:])
    result = {
        "command": command,
        "commands": {
            part: command if args.part in ("all", part) else earlier.get("commands", {}).get(part, "")
            for part in ("match", "policies", "learned")
        },
        "seed": args.seed,
        "n_validation": args.n_validation,
        "calibration_calls": args.calibration_calls,
        "draws": args.draws,
        "alphas": list(ALPHAS),
        "epsilons": list(EPSILONS),
        "settings": list(SETTINGS),
        "bar": "guaranteed violation_rate <= alpha + 0.01 in every setting",
        "bar_met": bar_met,
        "simulation": records,
        "policies": policies,
        "learned": learned,
    }
    result |= {k: v for k, v in earlier.items() if k == "movies_split_half"}  # from benchmarks/calibration.py
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"bar met: {bar_met}; wrote {RESULTS}")


if __name__ == "__main__":
    main()
