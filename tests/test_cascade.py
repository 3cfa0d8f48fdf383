"""The N-stage cascade on real components: scikit-learn classifiers, recorded API answers, fakes."""

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fakes import FakeLargeModel
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.utils.estimator_checks import parametrize_with_checks

from datashunt import Cascade
from datashunt.backends.replay import ReplayModel
from datashunt.exceptions import CalibrationWarning, ConfigError, DataError
from datashunt.small import make_small

YELP = Path(__file__).resolve().parents[2] / "shared" / "data" / "frugalml_yelp" / "yelp_api_outputs.csv"
PRICES = {"vader": 0.001e-4, "amazon": 0.75e-4, "google": 2.5e-4}


def yelp_stages(table):
    return [
        (
            name,
            ReplayModel(
                table,
                prediction_column=f"{name}_pred",
                confidence_column=f"{name}_conf",
                name=name,
                price={"per_call": price},
            ),
        )
        for name, price in PRICES.items()
    ]


@pytest.mark.skipif(not YELP.is_file(), reason="shared FrugalML table not present")
def test_three_recorded_apis_cost_less_than_the_best_one_at_nearly_its_accuracy():
    table = pd.read_csv(YELP).sample(frac=1.0, random_state=0)
    table["truth"] = table["true_label"].astype(str)
    for name in PRICES:
        table[f"{name}_pred"] = table[f"{name}_pred"].astype(str)
    calib, report = table.iloc[:5000], table.iloc[5000:10000]
    cascade = Cascade(yelp_stages(table), tolerance=0.005).fit(
        calib["id"], calib["truth"], X_val=calib["id"], y_val=calib["truth"]
    )
    routes = cascade.route(report["id"])
    accuracy = (routes["label"] == report["truth"].to_numpy()).mean()
    google = (report["google_pred"] == report["truth"]).mean()
    assert accuracy >= google - 0.01 and routes["cost"].sum() < 0.8 * PRICES["google"] * len(report)
    assert set(routes["route"]) <= {"vader", "amazon", "google"} and (routes["route"] == "google").mean() < 0.6
    assert len(cascade.sweep_) > 100 and cascade.calibration_["goal_met"]


def test_per_class_thresholds_on_two_stages(sentiment, oracle):
    texts, labels = sentiment
    cascade = Cascade([("tfidf", make_small("tfidf")), ("llm", oracle)], per_class=True, random_state=0)
    cascade.fit(texts[:400], labels[:400])
    assert len(cascade.thresholds_) == 1 and cascade.thresholds_[0].shape == (2,)
    routes = cascade.route(texts[400:])
    assert (routes["label"] == np.array(labels[400:])).mean() >= 0.9 and set(routes["stage"]) <= {0, 1}


def test_a_prefit_classifier_is_used_as_is(sentiment, oracle):
    texts, labels = sentiment
    trained = make_small("tfidf").fit(texts[:200], labels[:200])
    cascade = Cascade([("small", FrozenEstimator(trained)), ("llm", oracle)], thresholds=[0.8])
    cascade.fit(texts[200:400], labels[200:400])
    np.testing.assert_array_equal(cascade.stages_[0][1].predict_proba(texts[400:]), trained.predict_proba(texts[400:]))
    assert cascade.sweep_ is None and cascade.calibration_ == {"policy": "fixed"}


def test_a_failing_stage_passes_items_on_and_a_failing_last_stage_falls_back(sentiment):
    texts, labels = sentiment
    truth = dict(zip(texts, labels))
    middle = FakeLargeModel(truth, fail=texts[400:410], seed=1)
    last = FakeLargeModel(truth, fail=texts[400:405], seed=2)
    cascade = Cascade([("small", make_small("tfidf")), ("mid", middle), ("last", last)], thresholds=[2.0, 2.0])
    routes = cascade.fit(texts[:400], labels[:400]).route(texts[400:420])
    assert routes["route"].tolist()[:5] == ["fallback"] * 5  # both failed: the small model's answer stands
    assert (
        routes["flag"].iloc[0].startswith("mid: simulated time-out")
        and "; last: simulated time-out" in routes["flag"].iloc[0]
        and routes["label"].notna().all()
    )
    assert routes["route"].tolist()[5:10] == ["last"] * 5  # the middle failed: passed on to the last
    assert routes["route"].tolist()[10:] == ["last"] * 10 and routes["flag"].iloc[10:].isna().all()


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"stages": [("only", LogisticRegression())]}, ConfigError, "at least two"),
        ({"stages": [("a", LogisticRegression()), ("a", LogisticRegression())]}, ConfigError, "distinct"),
        ({"thresholds": [0.5, 0.5]}, ConfigError, "2 stages need 1 thresholds, got 2"),
        ({"thresholds": [[0.5, 0.5, 0.5]]}, ConfigError, "one number per class"),
        ({"tolerance": 2}, ConfigError, "'tolerance' parameter of Cascade"),
        ({"policy": "max_cost"}, ConfigError, "policy 'max_cost' needs max_cost"),
    ],
)
def test_bad_settings_are_clear_errors(sentiment, oracle, kwargs, error, message):
    texts, labels = sentiment
    settings = {"stages": [("small", make_small("tfidf")), ("llm", oracle)], **kwargs}
    with pytest.raises(error, match=message):
        Cascade(**settings).fit(texts[:300], labels[:300])


def test_one_class_and_invalid_rows(sentiment, oracle):
    texts, labels = sentiment
    cascade = Cascade([("small", make_small("tfidf")), ("llm", oracle)], thresholds=[0.9])
    with pytest.raises(DataError, match="only one class"):
        cascade.fit(texts[:10], ["positive"] * 10)
    routes = cascade.fit(texts[:300], labels[:300]).route(["great superb movie", "", None])
    assert routes["route"].tolist()[1:] == ["invalid", "invalid"] and routes["flag"].tolist()[1:] == [
        "blank text",
        "missing text (None/NaN)",
    ]


@parametrize_with_checks(
    [Cascade([("lr", LogisticRegression()), ("llm", FakeLargeModel())], random_state=0)],
    expected_failed_checks=lambda est: {
        "check_sample_weight_equivalence_on_dense_data": "fit takes no sample_weight",
        "check_sample_weights_not_an_array": "fit takes no sample_weight",
    },
)
def test_sklearn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        check(estimator)


def _saved_cascade(tmp_path, sentiment, per_class=False):
    texts, labels = sentiment
    answers = tmp_path / "answers.csv"
    pd.DataFrame({"id": texts, "prediction": labels, "conf": 0.9}).to_csv(answers, index=False)
    replay = ReplayModel(str(answers), confidence_column="conf", price={"per_call": 0.01})
    small = FrozenEstimator(make_small("tfidf").fit(texts[:200], labels[:200]))
    cascade = Cascade([("small", small), ("recorded", replay)], per_class=per_class, random_state=0)
    return cascade.fit(texts[200:400], labels[200:400]), answers


@pytest.mark.parametrize("per_class", [False, True])
def test_a_saved_cascade_routes_exactly_like_the_original(tmp_path, sentiment, per_class):
    from datashunt.io.persist import load, save

    texts, _ = sentiment
    cascade, answers = _saved_cascade(tmp_path, sentiment, per_class)
    folder = save(cascade, tmp_path / "model")
    with pytest.raises(ConfigError, match=r"uses table=.*answers.csv'"):
        load(folder)
    loaded = load(folder, large_options={"recorded": {"table": str(answers)}})
    pd.testing.assert_frame_equal(loaded.route(texts[400:]), cascade.route(texts[400:]))
    assert len(loaded.thresholds_) == 1 and np.shape(loaded.thresholds_[0]) == ((2,) if per_class else ())


def test_a_distilled_cascade_saves_its_copy_and_an_older_save_still_loads(tmp_path, sentiment):
    import json

    from datashunt.exceptions import ModelFileError
    from datashunt.io.persist import load, save

    texts, labels = sentiment
    cascade, answers = _saved_cascade(tmp_path, sentiment)
    options = {"recorded": {"table": str(answers)}}
    old = save(cascade, tmp_path / "before")
    meta = json.loads((old / "model.json").read_text())
    meta["learned"] = {}  # as saved before cascades could be distilled
    (old / "model.json").write_text(json.dumps(meta))
    assert not hasattr(load(old, large_options=options), "learnable_")
    cascade.distill(texts[400:500], X_train=texts[:200], y_train=labels[:200])  # the frozen model's copy learns
    folder = save(cascade, tmp_path / "model")
    loaded = load(folder, large_options=options)
    assert (folder / "learnable.skops").is_file() and loaded.distillation_ == cascade.distillation_
    routes = loaded.route(texts[500:])
    pd.testing.assert_frame_equal(routes, cascade.route(texts[500:]))
    assert cascade.distillation_["n_from_large"] > 0 and (routes["route"] == "learnable").any()
    (old / "learnable.skops").write_bytes((folder / "learnable.skops").read_bytes())  # a copy slipped in
    with pytest.raises(ModelFileError, match="learnable.skops is there though learned.distillation is null"):
        load(old, large_options=options)
    (folder / "learnable.skops").unlink()  # a copy lost: it would route differently
    with pytest.raises(ModelFileError, match="learnable.skops is missing though learned.distillation says"):
        load(folder, large_options=options)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda m: m.update(thresholds=[0.5, 0.5]), "thresholds must be 1 numbers or per-class lists of 2"),
        (lambda m: m["stages"][0].update(kind="python"), "must be a trainable model or a backend, got kind 'python'"),
        (lambda m: m["params"].update(tolerance="0.1"), "'tolerance' parameter of Cascade"),
        (lambda m: m.update(extra=1), r"unknown key\(s\) \['extra'\]"),
    ],
)
def test_a_tampered_cascade_folder_is_refused(tmp_path, sentiment, edit, message):
    import json

    from datashunt.exceptions import ModelFileError
    from datashunt.io.persist import load, save

    cascade, answers = _saved_cascade(tmp_path, sentiment)
    folder = save(cascade, tmp_path / "model")
    meta = json.loads((folder / "model.json").read_text())
    edit(meta)
    (folder / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelFileError, match=message):
        load(folder, large_options={"recorded": {"table": str(answers)}})


@pytest.mark.skipif(not YELP.is_file(), reason="shared FrugalML table not present")
def test_per_class_thresholds_for_three_stages_never_cost_more_than_single_ones():
    table = pd.read_csv(YELP).sample(n=4000, random_state=1)
    fits = {
        per_class: Cascade(yelp_stages(table), per_class=per_class, tolerance=0.005, random_state=0).fit(
            table["id"], table["true_label"], X_val=table["id"], y_val=table["true_label"]
        )
        for per_class in (False, True)
    }
    assert all(np.shape(t) == (2,) for t in fits[True].thresholds_)
    assert fits[True].calibration_["goal_met"]
    assert fits[True].calibration_["cost_per_item"] <= fits[False].calibration_["cost_per_item"] + 1e-12


def test_predict_refuses_to_guess_when_no_stage_answered(sentiment):
    from datashunt.exceptions import LargeModelError

    texts, labels = sentiment
    truth = dict(zip(texts, labels))
    stages = [("first", FakeLargeModel(truth, fail=texts[:3], seed=1)), ("last", FakeLargeModel(truth, fail=texts[:2]))]
    cascade = Cascade(stages, thresholds=[2.0]).fit(texts[10:300], labels[10:300])
    routes = cascade.route(texts[:3])
    assert routes["route"].tolist() == ["invalid", "invalid", "last"] and routes["label"].isna().tolist()[:2] == [
        True,
        True,
    ]
    with pytest.raises(LargeModelError, match=r"2 items got no answer from any stage \(row 0: first: simulated"):
        cascade.predict(texts[:3])
