import warnings

import numpy as np
import pytest
from fakes import FakeLargeModel
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.utils.estimator_checks import parametrize_with_checks

from datashunt import ShuntClassifier
from datashunt.exceptions import CalibrationWarning, ConfigError, DataError
from datashunt.modalities.rows import Rows
from datashunt.small import make_small


def make_shunt(large, **kwargs):
    return ShuntClassifier(make_small("tfidf"), large, random_state=0, **kwargs)


def test_shunt_beats_both_models_and_sends_only_unsure_items(sentiment, oracle):
    texts, labels = sentiment
    shunt = make_shunt(oracle, match_z=0, confidence_level=None).fit(
        texts[:400], labels[:400]
    )  # the paper's point estimate
    table = shunt.route(texts[400:])
    y = np.array(labels[400:])
    acc = (table["label"].to_numpy() == y).mean()
    small_acc = (shunt.small_.predict(texts[400:]) == y).mean()
    assert acc > small_acc
    assert acc >= 0.9
    assert 0.1 < (table["route"] == "large").mean() < 0.6
    sure = table["confidence_small"] >= shunt.threshold_
    assert (table.loc[sure, "route"] == "small").all()
    assert table.loc[~sure, "confidence_large"].notna().all()
    assert table.loc[sure, "confidence_large"].isna().all()
    assert shunt.calibration_["accuracy"] >= shunt.calibration_["large_accuracy"]


def test_fit_keeps_full_sweep_and_does_not_touch_user_model(sentiment, oracle):
    texts, labels = sentiment
    small = make_small("tfidf")
    shunt = ShuntClassifier(small, oracle, random_state=0).fit(texts, labels)
    assert not hasattr(small, "classes_")
    assert list(shunt.sweep_.columns) == ["threshold_1", "accuracy", "cost", "last_rate", "n_last", "gap_se", "gain"]
    assert shunt.sweep_["last_rate"].iloc[0] == 0 and shunt.sweep_["last_rate"].iloc[-1] == 1
    assert shunt.calibration_["n_validation"] == 120


def test_budget_policy_caps_large_rate(sentiment, oracle):
    texts, labels = sentiment
    shunt = make_shunt(oracle, policy="max_large_rate", max_large_rate=0.1).fit(texts[:400], labels[:400])
    assert shunt.calibration_["large_rate"] <= 0.1
    table = shunt.route(texts[400:])
    assert (table["route"] == "large").mean() < 0.2


def test_target_accuracy_policy_meets_target_on_validation(sentiment, oracle):
    texts, labels = sentiment
    shunt = make_shunt(oracle, policy="target_accuracy", target_accuracy=0.85).fit(texts[:400], labels[:400])
    assert shunt.calibration_["goal_met"]
    assert shunt.calibration_["accuracy"] >= 0.85


def test_unreachable_target_accuracy_warns(sentiment):
    texts, labels = sentiment
    bad_large = FakeLargeModel(dict(zip(texts, labels)), accuracy=0.5)
    with pytest.warns(CalibrationWarning):
        make_shunt(bad_large, policy="target_accuracy", target_accuracy=0.999).fit(texts, labels)


def test_user_validation_set_is_used(sentiment, oracle):
    texts, labels = sentiment
    shunt = make_shunt(oracle).fit(texts[:300], labels[:300], X_val=texts[300:400], y_val=labels[300:400])
    assert shunt.calibration_["n_validation"] == 100


def test_fixed_threshold_makes_no_large_calls_during_fit(sentiment, oracle):
    texts, labels = sentiment
    shunt = make_shunt(oracle, threshold=0.8).fit(texts, labels)
    assert getattr(shunt.large_, "calls", 0) == 0
    shunt.predict(texts[:50])
    assert shunt.large_.calls > 0
    assert shunt.threshold_ == 0.8 and shunt.sweep_ is None


@pytest.mark.parametrize("measure", ["max_proba", "margin", "entropy"])
def test_every_confidence_measure_calibrates(sentiment, oracle, measure):
    texts, labels = sentiment
    shunt = make_shunt(oracle, confidence=measure).fit(texts[:400], labels[:400])
    assert shunt.calibration_["accuracy"] >= shunt.calibration_["large_accuracy"]


def test_predict_and_predict_proba_agree_with_route(sentiment, oracle):
    texts, labels = sentiment
    shunt = make_shunt(oracle).fit(texts[:400], labels[:400])
    proba = shunt.predict_proba(texts[400:450])
    assert proba.shape == (50, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert (shunt.predict(texts[400:450]) == shunt.route(texts[400:450])["label"].to_numpy()).all()


def test_bad_texts_are_flagged_per_row_and_the_rest_is_answered(sentiment, oracle):
    texts, labels = sentiment
    shunt = make_shunt(oracle, match_z=0, confidence_level=None).fit(
        texts[:400], labels[:400]
    )  # the small model answers the clear ones
    table = shunt.route(["great great movie", "", "   ", None, float("nan"), 42, "awful dull movie"])
    assert table["route"].tolist()[1:6] == ["invalid"] * 5
    assert table["flag"].tolist()[1:6] == [
        "blank text",
        "blank text",
        "missing text (None/NaN)",
        "missing text (None/NaN)",
        "not a string (int)",
    ]
    assert table["label"].tolist()[0] == "positive" and table["label"].tolist()[-1] == "negative"
    assert table["label"].iloc[1:6].isna().all()


def test_lone_surrogate_is_flagged_and_its_batch_answered(sentiment, tmp_path):
    texts, labels = sentiment
    large = FakeLargeModel(dict(zip(texts, labels)), cache=tmp_path / "calls.sqlite")  # the cache keys every item
    shunt = make_shunt(large, threshold=1.0).fit(texts[:400], labels[:400])  # everything goes to the large model
    table = shunt.route([texts[401], "x \ud800", texts[402]])
    assert table["route"].tolist() == ["large", "invalid", "large"]
    assert table["flag"].iloc[1] == "not valid Unicode: a lone surrogate U+D800 at character 2"
    assert table["label"].tolist()[::2] == [labels[401], labels[402]]


def test_predict_on_bad_texts_raises_with_rows(sentiment, oracle):
    texts, labels = sentiment
    shunt = make_shunt(oracle).fit(texts[:400], labels[:400])
    with pytest.raises(DataError, match=r"1 bad inputs: row 1: blank text.*route\(\)"):
        shunt.predict(["good movie", ""])


def test_fit_rejects_bad_training_texts_and_labels(sentiment, oracle):
    texts, labels = sentiment
    with pytest.raises(DataError, match="row 0: missing text"):
        make_shunt(oracle).fit([None] + texts[1:], labels)
    with pytest.raises(DataError, match="missing labels"):
        make_shunt(oracle).fit(texts, [None] + labels[1:])
    with pytest.raises(DataError, match="expected 600 labels"):
        make_shunt(oracle).fit(texts, labels[:10])
    with pytest.raises(DataError, match="empty"):
        make_shunt(oracle).fit([], [])
    with pytest.raises(DataError, match="single string"):
        make_shunt(oracle).fit("one text", ["positive"])


def test_validation_label_unseen_in_training_raises(sentiment, oracle):
    texts, labels = sentiment
    with pytest.raises(DataError, match=r"validation labels \['neutral'\] never occur"):
        make_shunt(oracle).fit(texts[:300], labels[:300], X_val=texts[300:302], y_val=["positive", "neutral"])


def test_failed_large_calls_fall_back_to_small_with_flag(sentiment):
    texts, labels = sentiment
    test = texts[400:]
    large = FakeLargeModel(dict(zip(texts, labels)), fail=test[::2], off_label=test[1::2])
    shunt = make_shunt(large).fit(texts[:400], labels[:400])
    table = shunt.route(test)
    sent = table[table["confidence_small"] < shunt.threshold_]
    assert len(sent) > 0
    assert (sent["route"] == "fallback").all()
    flags = set(sent["flag"].str.removeprefix("large: ").str.split(":").str[0])
    assert flags <= {"simulated time-out on '" + t + "'" for t in test} | {"off-label answer"}
    assert "off-label answer" in flags
    assert sent["label"].notna().all()  # the small model's answer stands, and is flagged
    assert sent["confidence_large"].isna().all()


def test_label_names_are_what_the_large_model_sees(sentiment):
    texts, labels = sentiment
    y = [1 if label == "positive" else 0 for label in labels]
    large = FakeLargeModel(dict(zip(texts, labels)))
    shunt = make_shunt(large, label_names={0: "negative", 1: "positive"}).fit(texts, y)
    assert shunt.labels_ == ["negative", "positive"]
    assert set(shunt.predict(texts[:20]).tolist()) <= {0, 1}
    with pytest.raises(ConfigError, match="distinct"):
        make_shunt(large, label_names={0: "x", 1: "x"}).fit(texts, y)


def test_bad_constructor_arguments_raise_at_fit(sentiment, oracle):
    texts, labels = sentiment
    with pytest.raises(ConfigError, match="'threshold' parameter of ShuntClassifier must be a str among {'auto'}"):
        make_shunt(oracle, threshold="sometimes").fit(texts, labels)
    with pytest.raises(ConfigError, match=r"'validation_fraction' parameter .* range \(0.0, 1.0\). Got 1.5"):
        make_shunt(oracle, validation_fraction=1.5).fit(texts, labels)
    with pytest.raises(ConfigError, match="'confidence' parameter .* Got 'vibes'"):
        make_shunt(oracle, confidence="vibes").fit(texts, labels)


def test_clone_and_params_round_trip(oracle):
    shunt = make_shunt(oracle, policy="max_large_rate", max_large_rate=0.3)
    params = shunt.get_params()
    assert params["max_large_rate"] == 0.3 and "small__clf__C" in params
    copy = clone(shunt).set_params(max_large_rate=0.2)
    assert copy.max_large_rate == 0.2 and shunt.max_large_rate == 0.3


def test_works_on_numeric_features_with_any_sklearn_classifier():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 4))
    y = (X[:, 0] + 0.3 * rng.normal(size=300) > 0).astype(int)
    large = FakeLargeModel({Rows().content(row): str(label) for row, label in zip(X, y)})  # the row as prompted
    shunt = ShuntClassifier(LogisticRegression(), large, random_state=0).fit(X, y)
    assert shunt.n_features_in_ == 4
    assert (shunt.predict(X) == y).mean() > 0.9


def _checks_expected_failures():
    return {
        "check_sample_weight_equivalence_on_dense_data": "fit takes no sample_weight",
        "check_sample_weights_not_an_array": "fit takes no sample_weight",
    }


@parametrize_with_checks(
    [ShuntClassifier(LogisticRegression(), FakeLargeModel(), confidence_level=None, random_state=0)],
    expected_failed_checks=lambda est: _checks_expected_failures(),
)
def test_sklearn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        check(estimator)


def test_an_infinite_threshold_sends_everything_to_the_large_model(sentiment, oracle):
    texts, labels = sentiment
    shunt = make_shunt(oracle, threshold=float("inf")).fit(texts[:400], labels[:400])
    assert (shunt.route(texts[400:450])["route"] == "large").all()


@pytest.mark.parametrize("confidence_level", [None, 0.9])
def test_a_budget_guarded_against_noise_sends_no_more_than_the_plain_budget(sentiment, confidence_level):
    texts, labels = sentiment
    large = FakeLargeModel(dict(zip(texts, labels)), accuracy=0.7)  # helps on some items, hurts on others
    common = dict(policy="max_last_rate", max_large_rate=0.6, confidence_level=confidence_level, confidence="max_proba")
    plain = make_shunt(large, **common).fit(texts[:400], labels[:400])
    guarded = make_shunt(large, budget_z=1.0, **common).fit(texts[:400], labels[:400])
    assert guarded.threshold_ <= plain.threshold_
    assert guarded.calibration_["large_rate"] <= plain.calibration_["large_rate"] <= 0.6
    assert guarded.calibration_["goal"].endswith("a larger share only where its gain clears 1 standard errors")
    with pytest.raises(ValueError, match="budget_z"):
        make_shunt(large, budget_z=-1, **common).fit(texts[:400], labels[:400])
