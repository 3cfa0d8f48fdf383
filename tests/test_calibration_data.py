"""Where calibration evidence comes from: cross-fitting, a cap on large calls, and drift afterwards."""

import warnings

import numpy as np
import pandas as pd
import pytest
from fakes import FakeLargeModel

from datashunt import Cascade, ShuntClassifier
from datashunt.backends.replay import ReplayModel
from datashunt.exceptions import ConfigError, DataError, DriftWarning
from datashunt.small import make_small


def test_cross_fitting_calibrates_on_every_labelled_item_and_trains_on_all(sentiment, oracle):
    texts, labels = sentiment
    shunt = ShuntClassifier(make_small("tfidf"), oracle, cv=4, match_z=0, confidence_level=None, random_state=0).fit(
        texts, labels
    )
    assert shunt.calibration_["n_validation"] == len(texts) and shunt.calibration_["cross_fitted"]
    assert shunt.calibration_["large_calls"]["asked"] == len(texts) == shunt.large_.calls
    held_out = ShuntClassifier(make_small("tfidf"), oracle, random_state=0).fit(texts, labels)
    assert held_out.calibration_["n_validation"] == 120 and not held_out.calibration_["cross_fitted"]
    assert shunt.score(texts, labels) >= held_out.score(texts, labels) - 0.02


def test_cap_on_calibration_calls_asks_a_sample_stratified_by_label_under_paired_certification(sentiment):
    texts, labels = sentiment
    large = FakeLargeModel(dict(zip(texts, labels)))
    shunt = ShuntClassifier(
        make_small("tfidf"), large, cv=3, certification="paired", max_calibration_calls=60, random_state=0
    )
    shunt.fit(texts, labels)
    calls = shunt.calibration_["large_calls"]
    assert calls["asked"] == 60 and calls["paid"] == 60 and shunt.large_.calls == 60
    assert shunt.calibration_["n_validation"] == 60


def test_cap_on_calibration_calls_bounds_the_calls_but_not_the_labels_under_stratified_certification(sentiment):
    texts, labels = sentiment
    large = FakeLargeModel(dict(zip(texts, labels)))
    shunt = ShuntClassifier(make_small("tfidf"), large, cv=3, max_calibration_calls=60, random_state=0)
    shunt.fit(texts, labels)
    assert shunt.large_.calls == shunt.calibration_["large_calls"]["asked"] <= 60
    assert shunt.calibration_["n_validation"] == 600


def test_cross_fitting_refuses_what_it_cannot_do(sentiment, oracle):
    texts, labels = sentiment
    with pytest.raises(ConfigError, match="give either X_val"):
        ShuntClassifier(make_small("tfidf"), oracle, cv=3).fit(texts, labels, X_val=texts[:10], y_val=labels[:10])
    with pytest.raises(DataError, match="cv=5 needs at least 5 labelled items of every class; the rarest has 3"):
        ShuntClassifier(make_small("tfidf"), oracle, cv=5).fit(texts[:40] + texts[41:47:2], labels[:40] + ["odd"] * 3)
    with pytest.raises(ConfigError, match="cv"):
        ShuntClassifier(make_small("tfidf"), oracle, cv=1).fit(texts, labels)


def test_drift_is_flagged_when_traffic_changes_and_not_on_like_traffic(sentiment, oracle):
    texts, labels = sentiment
    shunt = ShuntClassifier(make_small("tfidf"), oracle, match_z=0, confidence_level=None, random_state=0).fit(
        texts[:400], labels[:400]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", DriftWarning)
        same = shunt.route(texts[400:]).attrs["drift"]
    assert same is not None and not same["drifted"]
    ambiguous = [t for i, t in enumerate(texts) if i % 5 == 0]  # only items the small model is unsure of
    with pytest.warns(DriftWarning, match="differs from the calibration data"):
        report = shunt.route(ambiguous).attrs["drift"]
    assert report["drifted"] and report["live_large_share"] > report["calibration_large_share"]
    assert shunt.route(texts[400:420]).attrs["drift"] is None  # too few items to say


def test_cascade_flags_drift_in_its_first_stage_too():
    rng = np.random.default_rng(0)
    n = 600
    truth = rng.choice(["neg", "pos"], size=n)
    ids = [f"r{i}" for i in range(n)]
    conf = rng.uniform(0.5, 1.0, n)
    first = pd.DataFrame({"id": ids, "prediction": truth, "conf": conf})
    last = pd.DataFrame({"id": ids, "prediction": truth, "conf": 0.99})
    cascade = Cascade(
        [
            ("cheap", ReplayModel(first, confidence_column="conf", name="cheap")),
            ("api", ReplayModel(last, confidence_column="conf", name="api")),
        ],
        thresholds=[0.75],
    ).fit(ids, truth)
    cascade.calibration_ = {}  # fixed thresholds keep no reference: nothing to compare
    assert cascade.route(ids).attrs["drift"] is None
    calibrated = Cascade(cascade.stages, random_state=0).fit(ids, truth)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DriftWarning)
        assert not calibrated.route(ids[:300]).attrs["drift"]["drifted"]
    unsure = [i for i, c in zip(ids, conf) if c < 0.7]
    with pytest.warns(DriftWarning, match="sent on by the first stage"):
        assert calibrated.route(unsure).attrs["drift"]["drifted"]
