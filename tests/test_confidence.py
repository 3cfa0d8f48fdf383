import numpy as np
import pytest

from datashunt.core.confidence import entropy, get_measure, margin, max_proba
from datashunt.exceptions import ConfigError

P = np.array([[0.98, 0.01, 0.01], [0.4, 0.35, 0.25], [1 / 3, 1 / 3, 1 / 3]])


@pytest.mark.parametrize("measure", [max_proba, margin, entropy])
def test_measures_rank_sure_above_unsure(measure):
    scores = measure(P)
    assert scores[0] > scores[1] > scores[2]


def test_entropy_is_zero_for_uniform_and_one_for_one_hot():
    assert entropy(np.array([[1.0, 0.0]]))[0] == pytest.approx(1.0)
    assert entropy(P[2:])[0] == pytest.approx(0.0, abs=1e-9)


def test_get_measure_accepts_names_and_callables():
    assert get_measure("margin") is margin
    assert get_measure(np.min) is np.min


def test_get_measure_unknown_name_raises():
    with pytest.raises(ConfigError, match="unknown confidence measure 'vibes'"):
        get_measure("vibes")
