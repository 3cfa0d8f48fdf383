from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from datashunt import ShuntClassifier
from datashunt.backends.replay import ReplayModel, recorded_proba
from datashunt.exceptions import DataError

YELP = Path(__file__).resolve().parents[2] / "shared" / "data" / "frugalml_yelp" / "yelp_api_outputs.csv"


def test_recorded_scores_keep_prediction_as_argmax_and_ranking():
    proba = recorded_proba(["a", "b", "a"], [0.0, 0.3, 0.9], ["a", "b", "c"])
    assert proba.argmax(axis=1).tolist() == [0, 1, 0]
    assert proba.max(axis=1)[0] < proba.max(axis=1)[1] < proba.max(axis=1)[2]
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)


def test_unknown_keys_and_labels_are_flagged_per_row():
    table = pd.DataFrame({"id": ["a", "b"], "prediction": ["pos", "meh"]})
    result = ReplayModel(table).predict_proba(["a", "b", "c"], ["neg", "pos"])
    assert result.ok.tolist() == [True, False, False]
    assert result.error[1] == "recorded answer 'meh' for input 'b' is not one of the labels ['neg', 'pos']"
    assert result.error[2] == "no recorded answer for input 'c'"


def test_missing_column_and_duplicate_keys_raise(tmp_path):
    with pytest.raises(DataError, match=r"lacks column\(s\) \['prediction'\]"):
        ReplayModel(pd.DataFrame({"id": ["a"]})).predict_proba(["a"], ["x"])
    with pytest.raises(DataError, match="duplicate keys"):
        ReplayModel(pd.DataFrame({"id": ["a", "a"], "prediction": ["x", "x"]})).predict_proba(["a"], ["x"])


def test_replay_charges_recorded_price_per_call():
    table = pd.DataFrame({"id": ["a"], "prediction": ["x"]})
    result = ReplayModel(table, price={"per_call": 2.5e-4}).predict_proba(["a"], ["x", "y"])
    assert result.cost.tolist() == [2.5e-4]


class RecordedSmall:
    """The recorded vader answers as a small model (fit learns nothing but the classes)."""

    def __init__(self, table):
        self.table = table

    def get_params(self, deep=True):
        return {"table": self.table}

    def set_params(self, **params):
        self.table = params.get("table", self.table)
        return self

    def fit(self, X, y):
        self.classes_ = np.unique(y)
        return self

    def predict_proba(self, X):
        rows = self.table.set_index("id").loc[list(X)]
        return recorded_proba(rows["vader_pred"].tolist(), rows["vader_conf"].to_numpy(), self.classes_.tolist())


@pytest.mark.skipif(not YELP.is_file(), reason="shared FrugalML table not present")
def test_shunt_on_real_recorded_api_answers_beats_the_cheap_model():
    table = pd.read_csv(YELP)
    table["vader_pred"] = table["vader_pred"].astype(int)
    table = table.sample(frac=1.0, random_state=0)  # the file is sorted by label: both halves need both classes
    calib, report = table.iloc[:5000], table.iloc[5000:10000]
    google = ReplayModel(
        table, prediction_column="google_pred", confidence_column="google_conf", price={"per_call": 2.5e-4}
    )
    shunt = ShuntClassifier(RecordedSmall(table), google, policy="max_large_rate", max_large_rate=0.5)
    shunt.fit(calib["id"], calib["true_label"], X_val=calib["id"], y_val=calib["true_label"])
    routes = shunt.route(report["id"])
    accuracy = (routes["label"].to_numpy() == report["true_label"].to_numpy()).mean()
    assert (routes["route"] == "large").mean() <= 0.55
    assert accuracy > 0.745 + 0.05  # vader alone is 0.745 on this table
    assert routes["cost"].sum() == pytest.approx(2.5e-4 * (routes["route"] == "large").sum())


def test_candidates_renormalise_recorded_answers_and_flag_excluded_ones():
    table = pd.DataFrame({"id": ["a", "b"], "prediction": ["cat", "fox"], "conf": [0.5, 0.9]})
    result = ReplayModel(table, confidence_column="conf", prediction_column="prediction").predict_proba(
        ["a", "b"], ["cat", "dog", "fox"], candidates=[[0, 1], [0, 1]]
    )
    assert result.proba[0, 2] == 0.0 and result.proba[0].sum() == pytest.approx(1.0)
    assert result.error[1] == "recorded answer 'fox' for input 'b' is not among the candidates kept"
