"""Guaranteed thresholds: exact tests, fixed-sequence order, the promise kept on known populations."""

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from fakes import FakeLargeModel

from datashunt import Cascade, ShuntClassifier
from datashunt.backends.replay import ReplayModel
from datashunt.core.guarantee import (
    binomial_upper,
    certified,
    choose_guaranteed,
    guaranteed_budget,
    guaranteed_match,
    guaranteed_target,
)
from datashunt.exceptions import CalibrationWarning, ConfigError
from datashunt.io.persist import load, save
from datashunt.small import make_small


def test_binomial_upper_bound_is_exact_clopper_pearson():
    assert binomial_upper(0, 10, 0.1) == pytest.approx(1 - 0.1 ** (1 / 10))
    assert binomial_upper(10, 10, 0.1) == 1.0 and binomial_upper(0, 0, 0.1) == 1.0


def test_more_losses_than_wins_is_never_certified_and_no_disagreement_always_is():
    assert not certified(0, 0, 100, epsilon=0.0, alpha=0.1)  # unseen disagreements may still exist
    assert certified(0, 0, 1000, epsilon=0.01, alpha=0.1)  # but at most ~0.5% of items: within ε
    assert not certified(20, 5, 1000, epsilon=0.0, alpha=0.1)
    assert certified(2, 40, 1000, epsilon=0.0, alpha=0.1)  # far more wins: the shunt leads for sure


def test_fixed_sequence_stops_at_the_first_threshold_it_cannot_certify():
    # confident items: the small model is right; a middle band where it is always wrong; then right again
    c = np.linspace(0, 1, 2000)
    small = (c > 0.6) | (c < 0.4)
    large = np.ones(2000, bool)
    found = guaranteed_match(c, small, large, epsilon=0.01, alpha=0.1)
    assert 0.6 - 1e-9 <= found.threshold < 1  # the band stops the sequence; the cheap region below it is never reached
    assert found.large_rate == pytest.approx(np.mean(c < found.threshold))


def test_guarantee_holds_on_a_population_with_known_truth():
    """Over many validation draws, δ breaks "accuracy >= large - ε" on the population at most α of the time."""
    rng = np.random.default_rng(0)
    alpha, epsilon, violations, draws = 0.2, 0.005, 0, 150
    grid = np.linspace(0.5, 1, 5001)
    small_p, large_p = lambda c: 0.3 + 0.7 * c, lambda c: 0.9 + 0 * c  # small better only above c ≈ 0.86
    for _ in range(draws):
        c = rng.uniform(0.5, 1, 800)
        found = guaranteed_match(
            c, rng.uniform(size=800) < small_p(c), rng.uniform(size=800) < large_p(c), epsilon=epsilon, alpha=alpha
        )
        kept = grid >= found.threshold
        true_gap = np.mean(np.where(kept, small_p(grid) - large_p(grid), 0.0))
        violations += true_gap < -epsilon
    assert violations / draws <= alpha


def test_budget_and_target_guarantees_choose_within_their_bounds():
    rng = np.random.default_rng(1)
    c = rng.uniform(size=3000)
    small, large = rng.uniform(size=3000) < c, rng.uniform(size=3000) < 0.95
    budget = guaranteed_budget(c, small, large, max_large_rate=0.3, alpha=0.1)
    assert budget.large_rate <= 0.3 and budget.n_certified > 0
    target = guaranteed_target(c, small, large, target=0.85, alpha=0.1)
    routed = np.where(c >= target.threshold, small, large).mean()
    assert routed >= 0.85 and 0 < target.large_rate < 1


def test_nothing_certified_warns_and_sends_everything_to_the_large_model():
    c = np.linspace(0, 1, 50)
    with pytest.warns(CalibrationWarning, match="no threshold could be certified"):
        choice = choose_guaranteed(
            c, np.zeros(50, bool), np.ones(50, bool), "target_accuracy", confidence_level=0.9, target_accuracy=0.99
        )
    assert choice.threshold == np.inf and not choice.met
    with pytest.raises(ConfigError, match="needs max_large_rate"):
        choose_guaranteed(c, c > 0.5, c > 0, "max_large_rate", confidence_level=0.9)
    with pytest.raises(ConfigError, match="alpha in"):
        guaranteed_match(c, c > 0.5, c > 0, alpha=1.5)
    with pytest.raises(ConfigError, match="for the same items, got 50, 49 and 50"):
        guaranteed_match(c, c[1:] > 0.5, c > 0)


def test_shunt_with_confidence_level_states_its_guarantee_and_saves_it(sentiment, tmp_path):
    texts, labels = sentiment
    flip = {"positive": "negative", "negative": "positive"}
    answers = [flip[y] if i % 30 == 0 else y for i, y in enumerate(labels)]  # the large model is 97% right
    table = tmp_path / "answers.csv"
    pd.DataFrame({"id": texts, "prediction": answers}).to_csv(table, index=False)
    shunt = ShuntClassifier(
        make_small("tfidf"), ReplayModel(str(table)), confidence_level=0.9, tolerance=0.02, cv=5, random_state=0
    )  # 600 items to calibrate on: 120 could not certify 2 points
    with warnings.catch_warnings():
        warnings.simplefilter("error", CalibrationWarning)
        shunt.fit(texts, labels)
    goal = shunt.calibration_["goal"]
    assert goal == "accuracy >= last stage's accuracy - 0.02 with probability >= 0.9 (Learn then Test)"
    assert shunt.calibration_["goal_met"] and shunt.calibration_["large_rate"] < 1
    assert shunt.calibration_["accuracy"] >= shunt.calibration_["large_accuracy"] - 0.02
    folder = save(shunt, tmp_path / "m")
    loaded = load(folder, large_options={"table": str(table)})
    assert loaded.confidence_level == 0.9 and loaded.threshold_ == shunt.threshold_
    meta = json.loads((folder / "model.json").read_text())
    del meta["params"]["confidence_level"], meta["params"]["tolerance"]  # written before guarantees existed
    (folder / "model.json").write_text(json.dumps(meta))
    assert load(folder, large_options={"table": str(table)}).confidence_level is None


@pytest.mark.parametrize("bad", [0.0, 1.0, 1.5, "high"])
def test_bad_confidence_level_is_refused_at_fit(sentiment, bad):
    texts, labels = sentiment
    with pytest.raises(ConfigError, match="confidence_level"):
        ShuntClassifier(make_small("tfidf"), FakeLargeModel(), confidence_level=bad).fit(texts, labels)


def test_cascade_with_confidence_level_shares_one_certified_threshold(tmp_path):
    rng = np.random.default_rng(0)
    n = 1500
    truth = rng.choice(["neg", "pos"], size=n)
    ids = [f"r{i}" for i in range(n)]

    def service(accuracy, name, price):
        right = rng.uniform(size=n) < accuracy
        pred = np.where(right, truth, np.where(truth == "pos", "neg", "pos"))
        conf = np.clip(np.where(right, rng.uniform(0.6, 1.0, n), rng.uniform(0.3, 0.8, n)), 0, 1)
        table = pd.DataFrame({"id": ids, "prediction": pred, "conf": conf})
        return name, ReplayModel(table, confidence_column="conf", name=name, price={"per_call": price})

    stages = [service(0.8, "cheap", 0.0), service(0.88, "mid", 1.0), service(0.93, "best", 3.0)]
    cascade = Cascade(stages, confidence_level=0.9, tolerance=0.01).fit(ids, truth, X_val=ids, y_val=truth)
    assert len(set(cascade.thresholds_)) == 1 and np.isfinite(cascade.thresholds_[0])
    assert (
        cascade.calibration_["goal"]
        == "accuracy >= last stage's accuracy - 0.01 with probability >= 0.9 (Learn then Test)"
    )
    assert cascade.calibration_["reach"][-1] < 1
    with pytest.raises(ConfigError, match="per-class thresholds do not come with a guarantee"):
        Cascade(stages, confidence_level=0.9, per_class=True).fit(ids, truth, X_val=ids, y_val=truth)


@pytest.mark.parametrize("k, n, level", [(0, 20, 0.1), (3, 20, 0.05), (7, 50, 0.01), (49, 50, 0.2)])
def test_binomial_upper_bound_has_exactly_its_level(k, n, level):
    from scipy.stats import binom

    assert binom.cdf(k, n, binomial_upper(k, n, level)) == pytest.approx(level)


@pytest.mark.parametrize("p_win", [0.0, 0.1, 0.25, 0.4])
@pytest.mark.parametrize("excess", [0.0, 0.05])
def test_certified_is_a_level_alpha_test_by_enumerating_every_outcome(p_win, excess):
    """On the null (p_L - p_W >= ε), the chance of certifying, summed over every trinomial outcome, is <= α."""
    from scipy.stats import multinomial

    n, epsilon, alpha = 12, 0.1, 0.2
    p_loss = p_win + epsilon + excess
    outcomes = [(losses, wins) for losses in range(n + 1) for wins in range(n + 1 - losses)]
    chance = sum(
        multinomial.pmf([losses, wins, n - losses - wins], n, [p_loss, p_win, 1 - p_loss - p_win])
        for losses, wins in outcomes
        if certified(losses, wins, n, epsilon, alpha)
    )
    assert chance <= alpha + 1e-12


def test_guaranteed_match_equals_a_plain_loop_over_the_grid():
    from datashunt.core.guarantee import GRID

    rng = np.random.default_rng(3)
    c = rng.uniform(size=400)
    small, large = rng.uniform(size=400) < 0.6 + 0.4 * c, rng.uniform(size=400) < 0.9
    expected = np.inf
    for delta in sorted(GRID, reverse=True):
        kept = c >= delta
        losses, wins = int((kept & ~small & large).sum()), int((kept & small & ~large).sum())
        if not certified(losses, wins, 400, 0.03, 0.1):
            break
        expected = delta
    assert guaranteed_match(c, small, large, epsilon=0.03, alpha=0.1).threshold == expected


def test_the_default_threshold_comes_with_a_guarantee_and_says_why_it_saves_nothing_on_few_items(sentiment, oracle):
    texts, labels = sentiment
    shunt = ShuntClassifier(make_small("tfidf"), oracle, random_state=0)
    assert (shunt.confidence_level, shunt.tolerance) == (0.9, 0.01)
    with pytest.warns(
        CalibrationWarning,
        match=r"on 120 validation items \(with tolerance 0.01 and confidence_level "
        r"0.9 it takes at least 309 even when the two models never disagree\)",
    ):
        shunt.fit(texts, labels)
    assert shunt.calibration_["goal"].endswith("with probability >= 0.9 (Learn then Test)")
    assert not shunt.calibration_["goal_met"] and shunt.calibration_["large_rate"] == 1.0
    with pytest.warns(CalibrationWarning, match="cv= uses every labelled one.*confidence_level=None"):
        ShuntClassifier(make_small("tfidf"), oracle, random_state=0).fit(texts, labels)


def test_none_in_a_config_selects_the_point_estimate():
    from datashunt.io.config import check_config

    config = check_config(
        {"large": {"backend": "openai", "model": "m"}, "shunt": {"confidence_level": "none", "tolerance": 0.0}}
    )
    assert config["shunt"]["confidence_level"] is None and config["shunt"]["tolerance"] == 0.0
