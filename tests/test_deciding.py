import numpy as np
import pytest

from datashunt.core.calibration import choose, per_class_thresholds, sweep
from datashunt.core.deciding import keeps, outcome, stop_stage
from datashunt.exceptions import CalibrationWarning, ConfigError


def test_stop_stage_needs_one_threshold_per_stage_but_the_last():
    with pytest.raises(ConfigError, match="3 stages need 2 thresholds, got 1"):
        stop_stage(np.ones((4, 3)), [0.5])


def test_per_class_thresholds_need_valid_predictions():
    with pytest.raises(ConfigError, match="per-class thresholds need the class each item was predicted to be"):
        keeps([0.9], [0.5, 0.5])
    with pytest.raises(ConfigError, match="predicted classes must be indices below 2"):
        keeps([0.9, 0.8], [0.5, 0.5], predicted=[0, 2])


def test_a_failed_stage_passes_the_item_on():
    stage = stop_stage([[np.nan, 0.9, 1.0], [0.9, np.nan, 1.0]], [0.5, 0.5])
    assert stage.tolist() == [1, 0]


def test_per_class_thresholds_save_calls_where_one_class_is_reliable():
    rng = np.random.default_rng(0)
    n = 2000
    pred = rng.integers(0, 2, n)
    conf = rng.uniform(0.5, 1.0, n)
    small = np.where(pred == 0, rng.random(n) < 0.99, rng.random(n) < conf)  # class 0 is always reliable
    large = rng.random(n) < 0.95
    single = per_class_thresholds(conf, np.zeros(n, int), small, large, 1, min_accuracy=large.mean())[0]
    delta, met = per_class_thresholds(conf, pred, small, large, 2, min_accuracy=large.mean())
    calls = lambda t: (~keeps(conf, t, pred if np.ndim(t) else None)).sum()  # noqa: E731
    assert met and calls(delta) < calls(single[0])
    result = outcome(
        stop_stage(np.c_[conf, np.ones(n)], [delta], np.c_[pred, pred]),
        np.c_[small, large],
        np.tile([0.0, 1.0], (n, 1)),
    )
    assert result["accuracy"] >= large.mean() - 1e-9


def test_grid_thresholds_fall_back_to_the_most_accurate_point_when_the_goal_is_out_of_reach():
    conf = np.array([[0.9, 1.0], [0.4, 1.0]])
    right = np.array([[1, 0], [0, 0]], bool)
    table = sweep(conf, right, np.zeros((2, 2)), n_grid=3)
    with pytest.warns(CalibrationWarning, match="no thresholds reach the goal 'accuracy >= 1.0000'"):
        choice = choose(table, "target_accuracy", target_accuracy=1.0)
    assert not choice.met and table["accuracy"].iloc[choice.row] == 0.5
