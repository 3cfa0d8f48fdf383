"""Certifying δ from labels plus a stratified sample of large answers."""

import json

import numpy as np
import pandas as pd
import pytest
from fakes import FakeLargeModel
from scipy.stats import hypergeom

from datashunt import ShuntClassifier
from datashunt.backends.replay import ReplayModel
from datashunt.core.guarantee import guaranteed_match
from datashunt.core.stratified import (
    binomial_lower,
    budget_limit,
    certify_match,
    certify_target,
    choose_budget,
    estimated_sweep,
    hypergeom_lower,
    plan_calls,
    sample_calls,
)
from datashunt.exceptions import CalibrationWarning, ConfigError
from datashunt.io.persist import load, save
from datashunt.small import make_small


def population(n, rng, small_at=0.5, large=0.9):
    """Confidences in [0.5, 1]; the small model is right with probability ``small_at + (1 - small_at) * c``."""
    c = rng.uniform(0.5, 1.0, size=n)
    return c, rng.uniform(size=n) < small_at + (1 - small_at) * c, rng.uniform(size=n) < large


def test_bounds_are_exact_clopper_pearson_and_hypergeometric():
    assert binomial_lower(10, 10, 0.1) == pytest.approx(0.1 ** (1 / 10))
    assert binomial_lower(0, 10, 0.1) == 0.0
    low = hypergeom_lower(12, 100, 400, 0.05)
    assert hypergeom.sf(11, 400, low, 100) > 0.05 >= hypergeom.sf(11, 400, low - 1, 100)
    assert hypergeom_lower(12, 400, 400, 0.05) == 12  # the whole population was drawn


def test_plan_asks_every_wrong_answer_that_fits_and_samples_the_right_ones():
    rng = np.random.default_rng(0)
    c, small, _ = population(2000, rng, small_at=0.8)
    plan = plan_calls(c, small, 600, random_state=0)
    assert len(plan.ask) == 600 and plan.floor == -np.inf
    assert set(np.flatnonzero(~small)) <= set(plan.ask.tolist())  # all the small model's wrong answers
    assert plan.sampled_right.sum() == 600 - (~small).sum() and small[plan.sampled_right].all()
    again = plan_calls(c, small, 600, random_state=0)
    assert (again.ask == plan.ask).all()  # the same seed, the same plan: nothing depends on large answers


def test_plan_reaches_down_from_the_most_confident_wrong_answers_when_they_do_not_fit():
    rng = np.random.default_rng(1)
    c, small, _ = population(2000, rng, small_at=0.0)
    plan = plan_calls(c, small, 200, random_state=0)
    assert len(plan.ask) <= 200 and plan.floor > 0.5
    wrong_above = np.flatnonzero(~small & (c >= plan.floor))
    assert set(wrong_above) <= set(plan.ask.tolist()) and len(wrong_above) <= 100
    assert not (plan.sampled_right & (c < plan.floor)).any()


def test_a_small_model_far_better_than_the_large_one_keeps_everything():
    rng = np.random.default_rng(2)
    c, small, large = population(500, rng, small_at=0.9, large=0.85)
    plan = plan_calls(c, small, 200, random_state=0)
    found = certify_match(c, small, plan, large[plan.ask], epsilon=0.01, alpha=0.1)
    assert found.threshold == -np.inf and found.large_rate == 0.0


def test_one_early_loss_does_not_stop_the_walk_near_the_top():
    rng = np.random.default_rng(3)
    c, small, large = population(500, rng, small_at=0.6, large=0.92)
    top = np.argmax(c)
    small[top], large[top] = False, True  # the most confident answer is a loss
    paired = guaranteed_match(c, small, large, epsilon=0.01, alpha=0.1)
    plan = plan_calls(c, small, None, random_state=0)
    found = certify_match(c, small, plan, large[plan.ask], epsilon=0.01, alpha=0.1)
    assert paired.large_rate == 1.0  # the paired walk stops at its first candidate
    assert found.large_rate < 0.9


def test_answers_that_do_not_match_the_plan_are_refused():
    c, small, large = population(100, np.random.default_rng(4))
    plan = plan_calls(c, small, 50, random_state=0)
    with pytest.raises(ConfigError, match="the plan asks 50 of 100 items; got 49 answers"):
        certify_match(c, small, plan, large[plan.ask][:-1], epsilon=0.01, alpha=0.1)
    with pytest.raises(ConfigError, match="budget of calibration calls must be at least 1"):
        plan_calls(c, small, 0)


def test_estimated_sweep_matches_the_exact_one_when_everything_was_asked():
    from datashunt.core.calibration import sweep

    c, small, large = population(300, np.random.default_rng(5))
    plan = plan_calls(c, small, None, random_state=0)
    estimated = estimated_sweep(c, small, plan, large[plan.ask])
    exact = sweep(c, np.column_stack([small, large]))
    np.testing.assert_allclose(estimated["accuracy"], exact["accuracy"])
    np.testing.assert_allclose(estimated["last_rate"], exact["last_rate"])
    np.testing.assert_allclose(estimated["gain"], exact["accuracy"] - exact["accuracy"].iloc[-1], atol=1e-12)
    np.testing.assert_allclose(estimated["gap_se"], exact["gap_se"])


def test_estimated_sweep_is_unbiased_for_a_sample_and_unknown_below_the_floor():
    rng = np.random.default_rng(6)
    c, small, large = population(3000, rng, small_at=0.7)
    estimates = []
    for seed in range(40):
        plan = plan_calls(c, small, 1500, random_state=seed)
        estimates.append(estimated_sweep(c, small, plan, large[plan.ask])["accuracy"].iloc[-1])
    assert np.mean(estimates) == pytest.approx(large.mean(), abs=0.005)
    plan = plan_calls(c, small, 100, random_state=0)
    sweep = estimated_sweep(c, small, plan, large[plan.ask])
    assert np.isnan(sweep["accuracy"].iloc[-1]) and not np.isnan(sweep["accuracy"].iloc[0])
    above = sweep["threshold_1"] >= plan.floor
    assert sweep.loc[above, "gain"].notna().all()  # what the kept items gain is known down to the floor


def test_shunt_certifies_from_labels_within_its_budget_of_calls(sentiment):
    texts, labels = sentiment
    large = FakeLargeModel(dict(zip(texts, labels)), accuracy=0.9)
    shunt = ShuntClassifier(
        make_small("tfidf"), large, validation_fraction=0.8, max_calibration_calls=150, random_state=0
    ).fit(texts, labels)
    calls = shunt.calibration_["large_calls"]
    assert shunt.calibration_["certification"] == "stratified" and shunt.calibration_["n_validation"] == 480
    assert shunt.large_.calls == calls["asked"] <= 150
    assert shunt.calibration_["goal_met"] and shunt.calibration_["large_rate"] < 0.5


def test_the_paired_method_stays_available_by_name(sentiment):
    texts, labels = sentiment
    large = FakeLargeModel(dict(zip(texts, labels)), accuracy=0.9)
    shunt = ShuntClassifier(
        make_small("tfidf"), large, certification="paired", validation_fraction=0.8, random_state=0
    ).fit(texts, labels)
    assert shunt.calibration_["certification"] == "paired"
    assert shunt.large_.calls == shunt.calibration_["large_calls"]["asked"] == 480


def test_failed_large_calls_count_against_the_shunt(sentiment):
    texts, labels = sentiment
    answered = ShuntClassifier(
        make_small("tfidf"),
        FakeLargeModel(dict(zip(texts, labels)), accuracy=0.8),
        validation_fraction=0.8,
        random_state=0,
    ).fit(texts, labels)
    failing = FakeLargeModel(dict(zip(texts, labels)), accuracy=0.8, fail=texts[::2])
    shunt = ShuntClassifier(make_small("tfidf"), failing, validation_fraction=0.8, random_state=0)
    shunt.fit(texts, labels)
    assert 0 < shunt.calibration_["large_failures"] < shunt.calibration_["large_calls"]["asked"]
    assert shunt.threshold_ >= answered.threshold_  # a failure is never a win


def test_a_shunt_certified_on_a_sample_saves_and_loads(sentiment, tmp_path):
    texts, labels = sentiment
    table = tmp_path / "answers.csv"
    pd.DataFrame({"id": texts, "prediction": labels}).to_csv(table, index=False)
    shunt = ShuntClassifier(
        make_small("tfidf"), ReplayModel(str(table)), validation_fraction=0.8, max_calibration_calls=40, random_state=0
    ).fit(texts, labels)
    assert shunt.sweep_["accuracy"].isna().any()  # below the floor nothing is known
    loaded = load(save(shunt, tmp_path / "m"), large_options={"table": str(table)})
    assert loaded.threshold_ == shunt.threshold_ and loaded.calibration_["certification"] == "stratified"
    assert (loaded.predict(texts[:50]) == shunt.predict(texts[:50])).all()


def test_a_shunt_whose_small_model_beats_the_large_one_keeps_everything(sentiment):
    texts, labels = sentiment
    weak = FakeLargeModel(dict(zip(texts, labels)), accuracy=0.6)
    shunt = ShuntClassifier(
        make_small("tfidf"), weak, validation_fraction=0.8, max_calibration_calls=200, random_state=0
    ).fit(texts, labels)
    assert shunt.calibration_["goal_met"] and shunt.threshold_ == -np.inf
    assert (shunt.route(texts[:100])["route"] == "small").all()  # never below the small model alone


def test_a_cascade_certifies_like_a_shunt_when_only_its_first_stage_can_keep():
    rng = np.random.default_rng(7)
    c, small, large = population(3000, rng, small_at=0.6, large=0.92)
    plan = plan_calls(c, small, 500, random_state=0)
    shunt = certify_match(c, small, plan, large[plan.ask], epsilon=0.01, alpha=0.1)
    never = np.column_stack([c, np.full(len(c), -np.inf)])  # a middle stage that is never sure
    both = np.column_stack([small, rng.uniform(size=len(c)) < 0.5])
    wide = plan_calls(never, both[:, :1].repeat(2, axis=1), 500, random_state=0)
    assert (wide.ask == plan.ask).all()
    cascade = certify_match(never, both[:, :1].repeat(2, axis=1), wide, large[wide.ask], epsilon=0.01, alpha=0.1)
    assert (cascade.threshold, cascade.large_rate) == (shunt.threshold, shunt.large_rate)


def three_services(n, folder, seed=0):
    """Three recorded services on ``n`` items, saved as tables in ``folder``: 0.8, 0.88 and 0.93
    accurate, surer when right."""
    rng = np.random.default_rng(seed)
    truth = rng.choice(["neg", "pos"], size=n)
    ids = [f"r{i}" for i in range(n)]
    stages = []
    for accuracy, name, price in [(0.8, "cheap", 0.0), (0.88, "mid", 1.0), (0.93, "best", 3.0)]:
        right = rng.uniform(size=n) < accuracy
        pred = np.where(right, truth, np.where(truth == "pos", "neg", "pos"))
        conf = np.clip(np.where(right, rng.uniform(0.6, 1.0, n), rng.uniform(0.3, 0.8, n)), 0, 1)
        table = folder / f"{name}.csv"
        pd.DataFrame({"id": ids, "prediction": pred, "conf": conf}).to_csv(table, index=False)
        stages.append((name, ReplayModel(str(table), confidence_column="conf", name=name, price={"per_call": price})))
    return ids, truth, stages


def test_a_cascade_asks_its_last_stage_only_within_the_budget(tmp_path):
    from datashunt import Cascade

    ids, truth, stages = three_services(3000, tmp_path)
    cascade = Cascade(
        stages, confidence="max_proba", confidence_level=0.9, tolerance=0.01, max_calibration_calls=600, random_state=0
    )
    cascade.fit(ids, truth, X_val=ids, y_val=truth)
    calls = cascade.calibration_["large_calls"]
    assert cascade.calibration_["certification"] == "stratified" and calls["asked"] <= 600
    assert cascade.calibration_["goal_met"] and cascade.calibration_["reach"][-1] < 0.9
    assert len(set(cascade.thresholds_)) == 1
    assert list(cascade.sweep_.columns) == ["threshold_1", "threshold_2", "accuracy", "cost", "last_rate", "n_last"]
    paired = Cascade(stages, confidence_level=0.9, tolerance=0.01, certification="paired", random_state=0)
    paired.fit(ids, truth, X_val=ids, y_val=truth)
    assert "large_calls" not in paired.calibration_ and len(paired.sweep_) > len(cascade.sweep_)
    routes = cascade.route(ids)
    assert (routes["route"] == "best").mean() == pytest.approx(cascade.calibration_["reach"][-1])
    folder = save(cascade, tmp_path / "cascade")
    tables = {name: {"table": str(tmp_path / f"{name}.csv")} for name, _ in stages}
    pd.testing.assert_frame_equal(load(folder, large_options=tables).route(ids[:200]), cascade.route(ids[:200]))
    meta = json.loads((folder / "model.json").read_text())
    for name in ("certification", "max_calibration_calls"):  # a folder written before stratified certification
        del meta["params"][name]
    (folder / "model.json").write_text(json.dumps(meta))
    older = load(folder, large_options=tables)
    assert older.certification == "paired" and older.max_calibration_calls is None


def test_target_and_budget_use_every_label_and_a_sample_of_large_answers(sentiment):
    texts, labels = sentiment
    large = FakeLargeModel(dict(zip(texts, labels)), accuracy=0.95)
    target = ShuntClassifier(
        make_small("tfidf"),
        large,
        policy="target_accuracy",
        target_accuracy=0.8,
        validation_fraction=0.8,
        max_calibration_calls=150,
        random_state=0,
    ).fit(texts, labels)
    calls = target.calibration_["large_calls"]
    assert target.calibration_["certification"] == "stratified" and target.large_.calls == calls["asked"] == 150
    assert target.calibration_["goal_met"] and target.calibration_["large_rate"] < 1
    assert target.calibration_["goal"] == "accuracy >= 0.8000 with probability >= 0.9 (Learn then Test)"
    budget = ShuntClassifier(
        make_small("tfidf"),
        large,
        policy="max_large_rate",
        max_large_rate=0.3,
        validation_fraction=0.8,
        max_calibration_calls=100,
        random_state=0,
    ).fit(texts, labels)
    assert budget.calibration_["goal_met"] and budget.calibration_["large_rate"] <= 0.3
    assert budget.large_.calls == budget.calibration_["large_calls"]["asked"] <= 100
    assert budget.calibration_["large_rate"] > 0


def test_a_budget_of_nothing_sent_asks_the_large_model_nothing(sentiment):
    texts, labels = sentiment
    large = FakeLargeModel(dict(zip(texts, labels)), accuracy=0.95)
    with pytest.warns(CalibrationWarning, match="nothing to the large model"):
        shunt = ShuntClassifier(
            make_small("tfidf"),
            large,
            policy="max_large_rate",
            max_large_rate=0.0,
            validation_fraction=0.8,
            random_state=0,
        ).fit(texts, labels)
    assert shunt.threshold_ == -np.inf and getattr(shunt.large_, "calls", 0) == 0


def test_certify_target_and_choose_budget_hold_their_bounds():
    rng = np.random.default_rng(8)
    c, small, large = population(4000, rng, small_at=0.5, large=0.95)
    asked = sample_calls(c, 4000, random_state=0)  # everything asked: the sample is the pool
    g = certify_target(c, small, asked, large[asked], target=0.9, alpha=0.1)
    kept = c >= g.threshold
    assert np.where(kept, small, large).mean() >= 0.9
    top = budget_limit(c, max_large_rate=0.25, alpha=0.1)
    assert (c < top).mean() <= 0.25
    few = sample_calls(c, 300, below=top, random_state=0)
    assert (c[few] < top).all() and len(few) == 300
    chosen = choose_budget(c, small, few, large[few], max_large_rate=0.25, alpha=0.1)
    assert chosen.threshold <= top and chosen.large_rate <= 0.25
    with pytest.raises(ConfigError, match="300 items were asked about; got 299 answers"):
        certify_target(c, small, few, large[few][:-1], target=0.9, alpha=0.1)


def test_bad_settings_of_the_sampled_policies_are_clear_errors(sentiment):
    c, small, large = population(200, np.random.default_rng(9))
    with pytest.raises(ConfigError, match="budget of calibration calls must be at least 1, got 0"):
        sample_calls(c, 0)
    with pytest.raises(ConfigError, match=r"the target must be in \[0, 1\] and alpha in \(0, 1\), got 1.5"):
        certify_target(c, small, np.arange(10), large[:10], target=1.5, alpha=0.1)
    with pytest.raises(ConfigError, match=r"max_large_rate must be in \[0, 1\] and alpha in \(0, 1\), got -0.1"):
        budget_limit(c, max_large_rate=-0.1, alpha=0.1)
    texts, labels = sentiment
    with pytest.raises(ConfigError, match="policy 'max_large_rate' needs max_large_rate in \\[0, 1\\], got None"):
        ShuntClassifier(
            make_small("tfidf"),
            FakeLargeModel(dict(zip(texts, labels))),
            policy="max_large_rate",
            validation_fraction=0.8,
            random_state=0,
        ).fit(texts, labels)
