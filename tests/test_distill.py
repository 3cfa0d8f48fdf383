import numpy as np
import pytest
from fakes import FakeLargeModel

from datashunt import ShuntClassifier
from datashunt.collab.distill import distill_rounds, two_stage_targets
from datashunt.modalities.rows import Rows
from datashunt.small import make_small


def test_targets_follow_equations_6_and_7():
    proba_s1 = np.array([[0.95, 0.05], [0.6, 0.4], [0.55, 0.45], [0.5, 0.5]])
    proba_large = np.array([[np.nan, np.nan], [0.1, 0.9], [0.4, 0.6], [np.nan, np.nan]])
    t = two_stage_targets(proba_s1, proba_s1.max(axis=1), proba_large, threshold=0.8)
    assert t.from_small.tolist() == [True, False, False, False]  # eq. 7: s1 is sure
    assert t.from_large.tolist() == [False, True, False, False]  # eq. 6: s1 unsure, large sure
    np.testing.assert_allclose(t.proba[0], [0.95, 0.05])
    np.testing.assert_allclose(t.proba[1], [0.1, 0.9])
    assert t.used.tolist() == [True, True, False, False]


@pytest.fixture(scope="module")
def drift():
    """Training data knows some words; later traffic brings new ones that only the large model knows."""
    rng = np.random.default_rng(0)
    old = {"positive": ["great", "superb", "lovely"], "negative": ["awful", "dull", "boring"]}
    new = {"positive": ["nifty", "spiffy", "dandy"], "negative": ["clunky", "shoddy", "naff"]}

    def make(words, n, start):
        texts, labels = [], []
        for i in range(n):
            label = ["negative", "positive"][i % 2]
            texts.append(f"{rng.choice(words[label])} {rng.choice(words[label])} film {start + i}")
            labels.append(label)
        return texts, labels

    train = make(old, 300, 0)
    mixed = {k: old[k] + new[k] for k in old}
    val, pool, test = make(mixed, 200, 1000), make(mixed, 600, 2000), make(mixed, 300, 5000)
    return train, val, pool, test


def test_distillation_cuts_large_calls_without_losing_accuracy(drift, tmp_path):
    (X, y), (X_val, y_val), (pool, _), (X_test, y_test) = drift
    truth = dict(zip(X + X_val + pool + X_test, y + y_val + _ + y_test))
    large = FakeLargeModel(truth, accuracy=0.98, cache=tmp_path / "calls.sqlite")
    shunt = ShuntClassifier(make_small("tfidf"), large, confidence_level=None, random_state=0).fit(
        X, y, X_val=X_val, y_val=y_val
    )
    before = shunt.route(X_test)
    rate_before = (before["route"] == "large").mean()
    acc_before = (before["label"] == np.array(y_test)).mean()

    shunt.route(pool)  # the traffic the shunt has seen: its large calls are cached
    shunt.distill(pool, X_train=X, y_train=y, X_val=X_val, y_val=y_val)
    assert shunt.distillation_["n_from_large"] > 50 and shunt.distillation_["n_from_small"] > 50
    after = shunt.route(X_test)
    rate_after = (after["route"] == "large").mean()
    acc_after = (after["label"] == np.array(y_test)).mean()
    assert rate_after <= 0.85 * rate_before
    assert acc_after >= acc_before - 0.01
    assert (after["route"] == "learnable").any()


def test_distillation_reuses_the_cache_and_pays_nothing_twice(drift, tmp_path):
    (X, y), (X_val, y_val), (pool, pool_y), _ = drift
    truth = dict(zip(X + X_val + pool, y + y_val + pool_y))
    large = FakeLargeModel(truth, cache=tmp_path / "calls.sqlite", price={"per_call": 1.0})
    shunt = ShuntClassifier(make_small("tfidf"), large, confidence_level=None, random_state=0).fit(
        X, y, X_val=X_val, y_val=y_val
    )
    shunt.distill(pool, X_train=X, y_train=y)
    first = shunt.distillation_["large_cost"]
    calls = shunt.large_.calls
    shunt.distill(pool, X_train=X, y_train=y)
    assert first > 0 and shunt.distillation_["large_cost"] == 0.0 and shunt.large_.calls == calls


def test_distillation_skips_invalid_traffic(drift):
    (X, y), (X_val, y_val), (pool, pool_y), _ = drift
    large = FakeLargeModel(dict(zip(pool, pool_y)))
    shunt = ShuntClassifier(make_small("tfidf"), large, confidence_level=None, random_state=0).fit(
        X, y, X_val=X_val, y_val=y_val
    )
    shunt.distill(pool[:50] + ["", None], X_train=X, y_train=y)
    assert shunt.distillation_["n_skipped_invalid"] == 2 and shunt.distillation_["n_pool"] == 50


def test_refit_forgets_an_earlier_distillation(drift):
    (X, y), (X_val, y_val), (pool, pool_y), _ = drift
    large = FakeLargeModel(dict(zip(pool, pool_y)))
    shunt = ShuntClassifier(make_small("tfidf"), large, threshold=0.9).fit(X, y).distill(pool, X_train=X, y_train=y)
    assert shunt.learnable_ is not None
    shunt.fit(X, y)
    assert not hasattr(shunt, "learnable_") and not hasattr(shunt, "distillation_")


def test_pruned_prompts_after_distillation_still_come_from_the_specific_model(drift, tmp_path):
    (X, y), (X_val, y_val), (pool, pool_y), (X_test, y_test) = drift
    large = FakeLargeModel(dict(zip(pool + X_test, pool_y + y_test)), cache=tmp_path / "calls.sqlite")
    shunt = ShuntClassifier(make_small("tfidf"), large, threshold=0.97, prompt_pruning="soft", pruning_level=0.0).fit(
        X, y, X_val=X_val, y_val=y_val
    )
    shunt.route(X_test)
    shunt.distill(pool, X_train=X, y_train=y)
    calls = shunt.large_.calls
    routes = shunt.route(X_test)
    assert (routes["route"] == "learnable").any() and (routes["route"] == "large").any()
    assert shunt.large_.calls == calls  # same hints as before distillation, so every prompt is cached
    assert "Prior knowledge" in shunt.large_.last_prompt


def test_distillation_works_on_numeric_feature_rows():
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression

    X, y = make_classification(n_samples=300, n_features=5, random_state=0)
    large = FakeLargeModel({Rows().content(row): label for row, label in zip(X, y)})  # the row as prompted
    shunt = ShuntClassifier(LogisticRegression(), large, threshold=0.8, random_state=0).fit(X[:200], y[:200])
    shunt.distill(X[200:], X_train=X[:200], y_train=y[:200])
    assert shunt.distillation_["n_from_large"] > 0
    assert shunt.learnable_.predict_proba(X[200:]).shape == (100, 2)


def test_rounds_of_a_generator_report_quality_and_a_threshold_per_stage():
    """A translation memory first: each round it remembers what the large model answered surely."""
    from fakes import FakeGenerator

    from datashunt import ShuntGenerator
    from datashunt.small.memory import MemoryGenerator

    known = {f"sentence number {i}": f"Satz Nummer {i}" for i in range(6)}
    texts = list(known)
    large = FakeGenerator({t: (a, [0.9]) for t, a in known.items()}, name="large")
    stages = [("memory", MemoryGenerator()), ("large", large)]
    seen = [known[t] for t in texts[:2]]
    shunt = ShuntGenerator(stages, thresholds=[0.99], confidence="mean_proba").fit(texts[:2], seen, texts[:2], seen)
    rounds = distill_rounds(shunt, texts[2:], 2, texts, [known[t] for t in texts])
    assert rounds["quality"].tolist() == [100.0] * 3 and rounds["threshold_memory"].tolist() == [0.99] * 3
    assert rounds["large_rate"].tolist() == pytest.approx([4 / 6, 2 / 6, 0])
    assert rounds["learnable_rate"].tolist() == pytest.approx([0, 2 / 6, 4 / 6])
    assert rounds["n_from_large"].tolist()[1:] == [2, 2] and rounds["n_from_small"].tolist()[1:] == [0, 2]


def three_stages(truth, cache):
    """tf-idf, then a middling large model, then a strong one (each cached, each with its own keys)."""
    mid = FakeLargeModel(truth, accuracy=0.85, confidence=0.8, cache=cache, seed=1, price={"per_call": 1.0})
    big = FakeLargeModel(truth, accuracy=0.98, cache=cache, seed=2, price={"per_call": 3.0})
    return [("tfidf", make_small("tfidf")), ("mid", mid), ("big", big)]


def test_a_cascade_distills_its_first_stage_from_the_later_ones(drift, tmp_path):
    from datashunt import Cascade

    (X, y), (X_val, y_val), (pool, pool_y), (X_test, y_test) = drift
    truth = dict(zip(X + X_val + pool + X_test, y + y_val + pool_y + y_test))
    cascade = Cascade(three_stages(truth, tmp_path / "calls.sqlite"), confidence="max_proba", random_state=0)
    cascade.fit(X, y, X_val=X_val, y_val=y_val)
    before = cascade.route(X_test)
    cascade.route(pool)  # the traffic seen: its calls are cached
    calls = [model.calls for _, model in cascade.stages_[1:]]
    cascade.distill(pool, X_train=X, y_train=y, X_val=X_val, y_val=y_val)
    learned = cascade.distillation_
    assert learned["large_cost"] == 0.0 and [model.calls for _, model in cascade.stages_[1:]] == calls
    assert learned["n_from_large"] > 50 and learned["n_from_small"] > 50 and learned["recalibrated"]
    assert learned["n_pool"] == len(pool) and learned["n_large_asked"] > 0
    after = cascade.route(X_test)
    assert (after["route"] == "learnable").any()
    assert (after["stage"] > 0).mean() <= 0.85 * (before["stage"] > 0).mean()
    assert (after["label"] == np.array(y_test)).mean() >= (before["label"] == np.array(y_test)).mean() - 0.01
    assert after["cost"].sum() < before["cost"].sum()
    cascade.fit(X, y, X_val=X_val, y_val=y_val)  # a refit starts over
    assert not hasattr(cascade, "learnable_") and not hasattr(cascade, "distillation_")


def test_a_cascade_whose_first_stage_is_a_large_model_cannot_distill(drift):
    from datashunt import Cascade
    from datashunt.exceptions import ConfigError

    (X, y), _, (pool, pool_y), _ = drift
    truth = dict(zip(X + pool, y + pool_y))
    stages = [("llm", FakeLargeModel(truth)), ("tfidf", make_small("tfidf"))]
    cascade = Cascade(stages, thresholds=[0.5]).fit(X, y)
    with pytest.raises(ConfigError, match=r"the first stage \('llm'\) is a large model"):
        cascade.distill(pool)
    assert not hasattr(cascade, "learnable_")


def test_rounds_of_a_cascade_report_a_threshold_per_stage(drift, tmp_path):
    from datashunt import Cascade

    (X, y), (X_val, y_val), (pool, pool_y), (X_test, y_test) = drift
    truth = dict(zip(X + X_val + pool + X_test, y + y_val + pool_y + y_test))
    cascade = Cascade(three_stages(truth, tmp_path / "calls.sqlite"), thresholds=[0.9, 0.85]).fit(X, y)
    rounds = distill_rounds(cascade, pool[:300], 2, X_test, y_test, X_train=X, y_train=y, X_val=X_val, y_val=y_val)
    assert rounds["threshold_tfidf"].tolist() == [0.9] * 3 and rounds["threshold_mid"].tolist() == [0.85] * 3
    assert rounds["n_pool"].tolist()[1:] == [150, 300] and rounds["learnable_rate"].iloc[-1] > 0
    assert not cascade.distillation_["recalibrated"]  # thresholds given: they stay
    last = cascade.route(X_test)
    assert rounds["large_rate"].iloc[-1] == (last["reached"] == 2).mean() > 0  # the share asking the last stage
    assert not cascade.ask_stage(0, np.array(X_test, dtype=object)).learnable.any()  # "tfidf only": no copy


def test_a_distillation_that_fails_leaves_the_cascade_as_it_was(drift, tmp_path):
    from datashunt import Cascade
    from datashunt.exceptions import DataError, LargeModelError

    (X, y), (X_val, y_val), (pool, pool_y), (X_test, y_test) = drift
    truth = dict(zip(X + X_val + pool, y + y_val + pool_y))
    cascade = Cascade(three_stages(truth, tmp_path / "calls.sqlite"), random_state=0).fit(X, y, X_val, y_val)
    before = dict(cascade.__dict__)
    with pytest.raises(DataError, match=r"expected 200 labels in a 1-D array, got shape \(10,\)"):
        cascade.distill(pool, X_train=X, y_train=y, X_val=X_val, y_val=y_val[:10])
    calls = cascade.stages_[2][1].calls
    assert cascade.__dict__ == before  # refused before the pool was routed
    cascade.stages_[2][1].fail = tuple(X_test)  # the strong stage times out on the new validation items
    with pytest.raises(LargeModelError, match="all 300 calls to stage 'big' on the validation data failed"):
        cascade.distill(pool, X_train=X, y_train=y, X_val=X_test, y_val=y_test)
    assert cascade.stages_[2][1].calls > calls and cascade.__dict__ == before
    assert not hasattr(cascade, "learnable_")


def test_rounds_refuse_a_cascade_that_cannot_learn_before_any_call(drift):
    from datashunt import Cascade
    from datashunt.exceptions import ConfigError

    (X, y), _, (pool, pool_y), (X_test, y_test) = drift
    llm = FakeLargeModel(dict(zip(X + pool + X_test, y + pool_y + y_test)))
    cascade = Cascade([("llm", llm), ("tfidf", make_small("tfidf"))], thresholds=[0.5]).fit(X, y)
    with pytest.raises(ConfigError, match="is a large model"):
        distill_rounds(cascade, pool, 2, X_test, y_test, X_train=X, y_train=y)
    assert getattr(cascade.stages_[0][1], "calls", 0) == 0


def test_a_generator_learns_nothing_from_a_fallback_and_a_failed_recalibration_changes_nothing():
    """Where the large model failed, the memory's unsure guess stands: it must not be remembered."""
    from fakes import FakeGenerator

    from datashunt import ShuntGenerator
    from datashunt.exceptions import DataError, LargeModelError
    from datashunt.small.memory import MemoryGenerator

    known = {f"sentence number {i}": f"Satz Nummer {i}" for i in range(6)}
    texts = list(known)
    large = FakeGenerator({t: (a, [0.9]) for t, a in known.items()}, name="large", fail=(texts[3],))
    stages = [("memory", MemoryGenerator()), ("large", large)]
    seen = [known[t] for t in texts[:2]]
    shunt = ShuntGenerator(stages, thresholds=[0.99], confidence="mean_proba").fit(texts[:2], seen, texts[:2], seen)
    assert shunt.route(texts[2:])["route"].tolist() == ["large", "fallback", "large", "large"]
    shunt.distill(texts[2:])
    assert shunt.distillation_ == {"n_pool": 4, "n_from_small": 0, "n_from_large": 3}
    assert texts[3] not in shunt.learnable_.memory_.texts_.tolist()
    before = dict(shunt.__dict__)
    with pytest.raises(DataError, match="both the validation items and their references, or neither"):
        shunt.distill(texts[2:], X_val=texts[:2])
    shunt.stages_[1][1].fail = tuple(texts)  # every validation call fails: δ cannot be calibrated again
    with pytest.raises(LargeModelError, match="on the validation data failed"):
        shunt.distill(texts[4:], X_val=texts[2:4], references_val=[known[t] for t in texts[2:4]])
    assert shunt.__dict__ == before
