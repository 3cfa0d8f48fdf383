"""Learned deferral: a scorer trained on validation answers routes better than a stage's own confidence."""

import json

import numpy as np
import pandas as pd
import pytest

from datashunt import Cascade
from datashunt.backends.replay import ReplayModel
from datashunt.estimators.deferral import Deferral, features
from datashunt.exceptions import ConfigError


def services(n=3000, seed=0, folder=None):
    """A cheap service always 90% sure of itself, right on every 'pos' it says and wrong on a sixth
    of its 'neg' (a fifth of the true 'pos' it calls 'neg'); a dear one always right. Its
    confidence says nothing; the class it says does."""
    rng = np.random.default_rng(seed)
    truth = rng.choice(["pos", "neg"], n)
    cheap = np.where((truth == "pos") & (rng.uniform(size=n) < 0.2), "neg", truth)
    ids = [f"r{i}" for i in range(n)]
    table = pd.DataFrame({"id": ids, "cheap": cheap, "dear": truth, "sure": 0.9})
    if folder is not None:  # a model that is saved replays from a file
        table.to_csv(folder / "answers.csv", index=False)
        table = str(folder / "answers.csv")
    stages = [
        (name, ReplayModel(table, prediction_column=name, confidence_column="sure", name=name, price={"per_call": p}))
        for name, p in (("cheap", 0.0), ("dear", 1.0))
    ]
    return np.array(ids), truth, stages, cheap


def test_features_carry_each_stage_its_class_and_the_agreement():
    first = np.array([[0.9, 0.1], [np.nan, np.nan]])
    second = np.array([[0.8, 0.2], [0.3, 0.7]])
    rows = features([first, second])
    assert rows.shape == (2, 2 * 7 + 1)
    assert rows[0, -1] == 1.0 and rows[1, -1] == 0.0  # agree on item 0; item 1's first stage failed
    assert rows[1, 6] == 1.0  # the failed flag


def test_a_learned_deferral_sends_on_only_what_the_cheap_stage_gets_wrong():
    ids, truth, stages, cheap = services()
    fitted = {}
    for confidence in ("max_proba", "learned"):
        cascade = Cascade(stages, policy="target_accuracy", target_accuracy=0.97, confidence=confidence, random_state=0)
        fitted[confidence] = cascade.fit(ids[:2000], truth[:2000], X_val=ids[:2000], y_val=truth[:2000])
    plain, learned = fitted["max_proba"], fitted["learned"]
    routes = {name: model.route(ids[2000:]) for name, model in fitted.items()}
    accuracy = {name: (table["label"].to_numpy() == truth[2000:]).mean() for name, table in routes.items()}
    assert accuracy["learned"] >= 0.96 and learned.calibration_["goal_met"]
    assert routes["learned"]["cost"].sum() < 0.7 * routes["max_proba"]["cost"].sum()
    sent, said = (routes["learned"]["reached"] == 1).to_numpy(), cheap[2000:]
    assert sent[said == "neg"].mean() > 0.95 and sent[said == "pos"].mean() < 0.05  # only its doubtful class goes on
    assert not hasattr(plain, "deferral_") and isinstance(learned.deferral_, Deferral)


def test_a_learned_deferral_needs_validation_answers():
    ids, truth, stages, _ = services(200)
    with pytest.raises(ConfigError, match="confidence='learned' and combine=True are trained on validation answers"):
        Cascade(stages, thresholds=[0.5], confidence="learned").fit(ids, truth)


def test_a_learned_deferral_is_saved_and_refused_when_tampered(tmp_path):
    import skops.io as sio

    from datashunt.exceptions import ModelFileError
    from datashunt.io.persist import load, save

    ids, truth, stages, _ = services(1500, folder=tmp_path)
    cascade = Cascade(stages, policy="target_accuracy", target_accuracy=0.97, confidence="learned", random_state=0)
    cascade.fit(ids[:1000], truth[:1000], X_val=ids[:1000], y_val=truth[:1000])
    save(cascade, tmp_path / "m")
    loaded = load(tmp_path / "m", trust_saved_locations=True)
    pd.testing.assert_frame_equal(loaded.route(ids[1000:]), cascade.route(ids[1000:]))
    sio.dump([len], tmp_path / "m" / "deferral.skops")  # a function where scorers should be
    with pytest.raises(ModelFileError, match="deferral.skops contains types that are not trusted"):
        load(tmp_path / "m", trust_saved_locations=True)
    (tmp_path / "m" / "deferral.skops").unlink()
    with pytest.raises(ModelFileError, match="deferral.skops is missing"):
        load(tmp_path / "m", trust_saved_locations=True)


def test_a_combined_answer_replaces_the_last_stages_where_it_wins_and_is_saved(tmp_path):
    from datashunt.io.persist import load, save

    rng = np.random.default_rng(1)
    n = 3000
    truth = rng.choice(["a", "b", "c"], n)

    def noisy(wrong):  # a service wrong on a share of the items, independently of the others
        other = np.array([{"a": "b", "b": "c", "c": "a"}[t] for t in truth])
        return np.where(rng.uniform(size=n) < wrong, other, truth)

    ids = [f"r{i}" for i in range(n)]
    table = pd.DataFrame({"id": ids, "one": noisy(0.2), "two": noisy(0.2), "three": noisy(0.1), "sure": 0.9})
    table.to_csv(tmp_path / "answers.csv", index=False)
    stages = [
        (name, ReplayModel(str(tmp_path / "answers.csv"), prediction_column=name, confidence_column="sure", name=name))
        for name in ("one", "two", "three")
    ]
    ids = np.array(ids)
    cascade = Cascade(stages, thresholds="auto", policy="target_accuracy", target_accuracy=0.9, combine=True)
    cascade.fit(ids[:2000], truth[:2000], X_val=ids[:2000], y_val=truth[:2000])
    assert cascade.combination_["used"] and cascade.combination_["accuracy"] > cascade.combination_["last_alone"]
    routes = cascade.route(ids[2000:])
    last = routes["reached"] == 2
    combined_right = (routes["label"].to_numpy() == truth[2000:])[last].mean()
    assert combined_right > (table["three"].to_numpy()[2000:] == truth[2000:])[last].mean() + 0.01
    save(cascade, tmp_path / "m")
    pd.testing.assert_frame_equal(load(tmp_path / "m", trust_saved_locations=True).route(ids[2000:]), routes)
    with pytest.raises(ConfigError, match="combine=True needs every stage's answer on every validation item"):
        Cascade(stages, combine=True, confidence_level=0.9).fit(ids[:2000], truth[:2000])


def test_what_cannot_be_learned_is_refused_with_the_reason(tmp_path):
    import skops.io as sio

    from datashunt import ShuntClassifier
    from datashunt.estimators.deferral import Combiner
    from datashunt.exceptions import DataError, ModelFileError
    from datashunt.io.persist import load, save
    from datashunt.small import make_small

    proba = np.tile([[0.9, 0.1]], (10, 1))
    with pytest.raises(DataError, match="learned deferral at stage 0 needs at least 2 right and 2 wrong"):
        Deferral().fit_scores([proba], np.array([True] * 9 + [False]))
    with pytest.raises(DataError, match="a combined answer needs at least 2 validation items of each class"):
        Combiner().fit_proba([proba, proba], np.array([0] * 9 + [1]))
    ids, truth, stages, _ = services(1500, folder=tmp_path)
    with pytest.raises(ConfigError, match="confidence='learned' is trained on validation answers"):
        ShuntClassifier(make_small("tfidf"), stages[1][1], threshold=0.5, confidence="learned").fit(ids, truth)
    cascade = Cascade(stages, policy="target_accuracy", target_accuracy=0.97, confidence="learned", random_state=0)
    save(cascade.fit(ids[:1000], truth[:1000], X_val=ids[:1000], y_val=truth[:1000]), tmp_path / "m")
    sio.dump([0.5, 0.5], tmp_path / "m" / "deferral.skops")  # two scorers for one boundary
    with pytest.raises(ModelFileError, match=r"deferral.skops must hold 1 gradient-boosted classifier\(s\)"):
        load(tmp_path / "m", trust_saved_locations=True)


def copying_generators():
    """A small generator equally sure of every text, that leaves one input in three untranslated
    (a copy of it: wrong), and a large one always right."""
    from fakes import FakeGenerator

    items = [f"item {i}" for i in range(150)]
    refs = [f"Referenz {i}" for i in range(150)]
    copies = np.arange(150) % 3 == 0
    small = {x: (x if c else r, [0.9, 0.9]) for x, r, c in zip(items, refs, copies)}
    large = {x: (r, [0.6, 0.7]) for x, r in zip(items, refs)}
    stages = [("small", FakeGenerator(small, name="small")), ("large", FakeGenerator(large, name="large"))]
    return items, refs, copies, stages


def test_a_learned_quality_estimator_sends_on_only_the_texts_it_expects_to_be_worse():
    from datashunt import ShuntGenerator
    from datashunt.estimators.deferral import QualityDeferral

    items, refs, copies, stages = copying_generators()
    fitted = {
        confidence: ShuntGenerator(stages, metric="exact_match", confidence=confidence, random_state=0).fit(
            items[:30], refs[:30], items[:100], refs[:100]
        )
        for confidence in ("mean_proba", "learned")
    }
    plain, learned = fitted["mean_proba"], fitted["learned"]
    assert plain.calibration_["reach"][1] == 1.0  # its own confidence cannot tell: everything goes on
    assert learned.calibration_["goal_met"] and learned.calibration_["reach"][1] == pytest.approx(copies[:100].mean())
    table = learned.route(items[100:])
    assert table["route"].tolist() == ["large" if c else "small" for c in copies[100:]]
    assert learned.score(items[100:], refs[100:]) == 100.0
    assert isinstance(learned.deferral_, QualityDeferral) and not hasattr(plain, "deferral_")


def test_a_learned_quality_estimator_is_saved_and_its_file_checked(tmp_path):
    import skops.io as sio
    from fakes import FakeOpenAIServer

    from datashunt import ShuntGenerator
    from datashunt.backends.generate.openai_chat import OpenAIChatGenerator
    from datashunt.exceptions import ModelFileError
    from datashunt.io.persist import load, save

    items, refs, copies, _ = copying_generators()
    small = {x: [(x if c else r, -0.1)] for x, r, c in zip(items, refs, copies)}
    large = {x: [(r, -0.3)] for x, r in zip(items, refs)}
    with FakeOpenAIServer(small, sequence=True) as first, FakeOpenAIServer(large, sequence=True) as last:
        stages = [
            ("small", OpenAIChatGenerator("tiny", base_url=first.base_url, instruction="Translate.")),
            ("large", OpenAIChatGenerator("big", base_url=last.base_url, instruction="Translate.")),
        ]
        model = ShuntGenerator(stages, metric="exact_match", confidence="learned", random_state=0)
        model.fit(items[:30], refs[:30], items[:100], refs[:100])
        save(model, tmp_path / "m")
        loaded = load(tmp_path / "m", trust_saved_locations=True)
        assert isinstance(loaded.deferral_.models_[0], type(model.deferral_.models_[0]))
        again, routed = loaded.route(items[100:]), model.route(items[100:])
        pd.testing.assert_frame_equal(again.drop(columns="cached"), routed.drop(columns="cached"))
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    meta["calibration"]["deferral"]["scales"] = [-1.0]
    (tmp_path / "m" / "model.json").write_text(json.dumps(meta))
    with pytest.raises(
        ModelFileError, match=r"calibration.deferral.scales must be 1 positive number\(s\), got \[-1.0\]"
    ):
        load(tmp_path / "m", trust_saved_locations=True)
    sio.dump([model.deferral_.models_[0], model.deferral_.models_[0]], tmp_path / "m" / "deferral.skops")
    with pytest.raises(ModelFileError, match="must hold 1 gradient-boosted regressor"):
        load(tmp_path / "m", trust_saved_locations=True)


def test_a_learned_quality_estimator_needs_enough_validation_texts():
    from datashunt import ShuntGenerator
    from datashunt.exceptions import DataError

    items, refs, _, stages = copying_generators()
    with pytest.raises(DataError, match="needs at least 20 validation items, got 12"):
        ShuntGenerator(stages, metric="exact_match", confidence="learned").fit(
            items[:30], refs[:30], items[:12], refs[:12]
        )
    with pytest.raises(ConfigError, match="confidence='learned' is trained on validation texts"):
        ShuntGenerator(stages, thresholds=[0.5], confidence="learned").fit(items[:30], refs[:30])


def test_a_draft_hint_keeps_the_token_confidence_when_routing_learns_its_score():
    from datashunt import ShuntGenerator

    items, refs, _, stages = copying_generators()
    model = ShuntGenerator(stages, metric="exact_match", confidence="learned", hint=True, random_state=0)
    model.fit(items[:30], refs[:30], items[:100], refs[:100])
    model.route(items[102:103])  # a copy: sent on with its draft
    assert "its confidence: 0.90" in str(model.stages_[1][1].last_messages)


def test_auto_takes_the_learned_score_only_where_it_ranks_the_errors_better(tmp_path):
    from datashunt.io.persist import load, save

    ids, truth, stages, _ = services(folder=tmp_path)
    common = {"policy": "target_accuracy", "target_accuracy": 0.97, "random_state": 0}
    auto = Cascade(stages, confidence="auto", **common).fit(ids[:2000], truth[:2000], ids[:2000], truth[:2000])
    learned = Cascade(stages, confidence="learned", **common).fit(ids[:2000], truth[:2000], ids[:2000], truth[:2000])
    assert auto.scoring_["used"] == "learned" and auto.scoring_["ranking"] == "roc_auc"
    assert auto.scoring_["validation"]["learned"] > 0.65 and auto.scoring_["validation"]["max_proba"] == 0.5
    assert auto.thresholds_ == learned.thresholds_
    # a cheap service whose own confidence already tells its errors: nothing to learn, its own score is kept
    table = pd.read_csv(tmp_path / "answers.csv")
    table["sure"] = np.where(table["cheap"] == table["dear"], 0.95, 0.55)
    table.to_csv(tmp_path / "answers.csv", index=False)
    honest = Cascade(stages, confidence="auto", **common).fit(ids[:2000], truth[:2000], ids[:2000], truth[:2000])
    assert honest.scoring_["used"] == "max_proba" and honest.scoring_["validation"]["max_proba"] == 1.0
    assert not hasattr(honest, "deferral_") and honest.calibration_["scoring"] == honest.scoring_
    save(honest, tmp_path / "m")
    assert not (tmp_path / "m" / "deferral.skops").exists()
    again = load(tmp_path / "m", trust_saved_locations=True)
    pd.testing.assert_frame_equal(again.route(ids[2000:]), honest.route(ids[2000:]))


def test_auto_for_a_shunt_and_a_generator_records_both_scores():
    from datashunt import ShuntClassifier, ShuntGenerator
    from datashunt.small import make_small

    items, refs, copies, stages = copying_generators()
    auto = ShuntGenerator(stages, metric="exact_match", confidence="auto", random_state=0)
    auto.fit(items[:30], refs[:30], items[:100], refs[:100])
    assert auto.scoring_["used"] == "learned" and auto.scoring_["ranking"] == "spearman"
    assert auto.scoring_["validation"]["mean_proba"] == 0.0 and auto.scoring_["validation"]["learned"] > 0.5
    assert auto.calibration_["reach"][1] == pytest.approx(copies[:100].mean())

    rng = np.random.default_rng(0)
    truth = rng.choice(["pos", "neg"], 1000)
    said = np.where(rng.uniform(size=1000) < 0.8, truth, np.where(truth == "pos", "neg", "pos"))
    texts = [f"{'good' if s == 'pos' else 'bad'} r{i}" for i, s in enumerate(said)]
    large = ReplayModel(pd.DataFrame({"id": texts, "prediction": truth}), name="dear")
    shunt = ShuntClassifier(make_small("tfidf"), large, confidence="auto", random_state=0)
    shunt.fit(texts[:500], truth[:500], texts[500:], truth[500:])
    assert set(shunt.scoring_["validation"]) == {"max_proba", "learned"}
    assert shunt.scoring_["used"] in ("max_proba", "learned") and shunt.calibration_["scoring"] == shunt.scoring_


def test_auto_keeps_the_own_confidence_where_there_is_too_little_to_learn_from():
    from datashunt import ShuntGenerator

    ids, _, stages, cheap = services(300)
    y = cheap[:100].copy()
    y[0] = "pos" if y[0] == "neg" else "neg"  # the cheap stage wrong on one validation item only
    cascade = Cascade(stages, confidence="auto", random_state=0).fit(ids[:100], y, ids[:100], y)
    assert (
        cascade.scoring_["used"] == "max_proba" and "needs at least 2 right and 2 wrong" in cascade.scoring_["reason"]
    )
    items, refs, _, stages = copying_generators()
    model = ShuntGenerator(stages, metric="exact_match", confidence="auto").fit(
        items[:30], refs[:30], items[:12], refs[:12]
    )
    assert model.scoring_["used"] == "mean_proba" and "needs at least 20 validation items" in model.scoring_["reason"]
    assert not hasattr(model, "deferral_")


def test_a_stage_asked_alone_has_no_learned_score_rather_than_a_wrong_one():
    ids, truth, stages, cheap = services()
    middle = ("middle", stages[0][1])
    cascade = Cascade([stages[0], middle, stages[1]], policy="target_accuracy", target_accuracy=0.97)
    cascade.set_params(confidence="learned", random_state=0).fit(ids[:2000], truth[:2000], ids[:2000], truth[:2000])
    first, alone = cascade.ask_stage(0, ids[2000:]), cascade.ask_stage(1, ids[2000:])
    assert np.isfinite(first.confidence).all()  # the first stage has no earlier answers to judge from
    assert np.isnan(alone.confidence).all()  # judged from the first stage's answers too: no score alone
    assert (cascade.classes_[alone.proba.argmax(axis=1)] == cheap[2000:]).all()  # its answers are its own
