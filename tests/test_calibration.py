import numpy as np
import pytest

from datashunt.core.calibration import choose, sweep
from datashunt.exceptions import CalibrationWarning, ConfigError


def threshold_sweep(conf, small_ok, large_ok, large_cost=None):
    """The two-stage sweep of a small and a large model (the large one priced per item)."""
    cost = None if large_cost is None else np.column_stack([np.zeros(len(conf)), large_cost])
    return sweep(conf, np.column_stack([small_ok, large_ok]), cost)


def brute_force(conf, small_ok, large_ok, delta):
    to_large = conf < delta
    return np.where(to_large, large_ok, small_ok).mean(), to_large.mean()


def test_sweep_matches_brute_force_at_every_threshold():
    rng = np.random.default_rng(1)
    conf = rng.choice([0.5, 0.6, 0.7, 0.8, 0.95], size=200)  # many ties
    small_ok, large_ok = rng.random(200) < conf, rng.random(200) < 0.85
    sweep = threshold_sweep(conf, small_ok, large_ok, np.full(200, 0.01))
    assert len(sweep) == len(np.unique(conf)) + 1
    for row in sweep.itertuples():
        acc, rate = brute_force(conf, small_ok, large_ok, row.threshold_1)
        assert row.accuracy == pytest.approx(acc)
        assert row.last_rate == pytest.approx(rate) and row.n_last == round(rate * 200)
        assert row.cost == pytest.approx(0.01 * rate)  # per item
        kept = conf >= row.threshold_1
        d = np.where(kept, small_ok.astype(int) - large_ok.astype(int), 0)
        assert row.gap_se == pytest.approx(d.std() / np.sqrt(200))  # paired standard error of the gap
    assert sweep["last_rate"].is_monotonic_increasing


def test_match_last_picks_lowest_rate_at_large_accuracy():
    conf = np.linspace(0.5, 1.0, 100)
    small_ok = conf > 0.7  # the small model is right exactly where it is sure
    large_ok = np.ones(100, bool)
    sweep = threshold_sweep(conf, small_ok, large_ok)
    choice = choose(sweep, "match_large")
    assert choice.met
    row = sweep.iloc[choice.row]
    assert row.accuracy == 1.0
    assert row.last_rate == pytest.approx((conf <= 0.7).mean())


def test_match_last_discounts_a_lead_within_noise():
    # The LLM alone gets 70 of 100. Keeping the 80 surest items on the small model ties it (the
    # point estimate's choice) although the two disagree on 60 of them; the guard wants a lead.
    conf = np.linspace(0.0, 1.0, 100)
    small_ok = np.zeros(100, bool)
    large_ok = np.ones(100, bool)
    small_ok[40:80], large_ok[40:80] = np.arange(40) % 4 != 0, np.arange(40) % 4 == 0  # 30 vs 10
    small_ok[80:], large_ok[80:] = True, True
    sweep = threshold_sweep(conf, small_ok, large_ok)
    naive = sweep.iloc[choose(sweep, "match_large", match_z=0).row]
    guarded = sweep.iloc[choose(sweep, "match_large", match_z=1).row]
    assert naive.last_rate < guarded.last_rate
    lead = guarded.accuracy - sweep.accuracy.iloc[-1]
    assert lead >= guarded.gap_se > 0
    with pytest.raises(ConfigError, match="match_z must be >= 0"):
        choose(sweep, "match_large", match_z=-1)


def test_max_large_rate_respects_budget():
    conf = np.linspace(0.5, 1.0, 100)
    sweep = threshold_sweep(conf, conf > 0.7, np.ones(100, bool))
    choice = choose(sweep, "max_large_rate", max_last_rate=0.3)
    assert sweep.iloc[choice.row].last_rate <= 0.3
    assert sweep.iloc[choice.row].last_rate == pytest.approx(0.3)


def test_target_accuracy_reached_with_fewest_calls():
    conf = np.linspace(0.5, 1.0, 100)
    sweep = threshold_sweep(conf, conf > 0.7, np.ones(100, bool))
    choice = choose(sweep, "target_accuracy", target_accuracy=0.9)
    row = sweep.iloc[choice.row]
    assert row.accuracy >= 0.9
    assert (sweep[sweep.accuracy >= 0.9].last_rate >= row.last_rate).all()


def test_unreachable_target_warns_and_uses_best_accuracy():
    conf = np.linspace(0.5, 1.0, 50)
    sweep = threshold_sweep(conf, np.zeros(50, bool), np.zeros(50, bool) | (conf > 0.9))
    with pytest.warns(CalibrationWarning, match="no thresholds reach"):
        choice = choose(sweep, "target_accuracy", target_accuracy=0.99)
    assert not choice.met
    assert sweep.iloc[choice.row].accuracy == sweep.accuracy.max()


@pytest.mark.parametrize(
    "policy, kwargs, message",
    [
        ("nope", {}, "unknown or unsupported policy .nope."),
        ("max_large_rate", {}, "needs max_last_rate"),
        ("target_accuracy", {}, "needs target_accuracy"),
    ],
)
def test_choose_bad_arguments_raise(policy, kwargs, message):
    sweep = threshold_sweep(np.array([0.6, 0.9]), np.array([1, 1], bool), np.array([1, 1], bool))
    with pytest.raises(ConfigError, match=message):
        choose(sweep, policy, **kwargs)


def test_sweep_on_empty_validation_raises():
    with pytest.raises(ConfigError, match="empty validation"):
        sweep(np.array([]), np.zeros((0, 2), bool))


def noisy_gain(n=1000):
    """Confidences 0..1; on the 100 least confident items the large model is right and the small
    one wrong (a clear gain); on the next 200 they disagree in turn, the large model ahead by 8 at
    the end (a gain validation noise explains); elsewhere both are right."""
    c = np.linspace(0, 1, n)
    small, large = np.ones(n, bool), np.ones(n, bool)
    small[:100] = False
    band = np.arange(100, 300)
    small[band[:192]] = np.arange(192) % 2 == 0  # lose, win, lose, win ...
    large[band[:192]] = ~small[band[:192]]
    small[band[192:]] = False
    return c, small, large


def test_the_budget_noise_guard_buys_only_gains_noise_cannot_explain():
    from datashunt.core.calibration import fewest_within_noise
    from datashunt.core.guarantee import choose_guaranteed, guaranteed_budget

    c, small, large = noisy_gain()
    table = threshold_sweep(c, small, large)
    best = choose(table, "max_last_rate", max_last_rate=0.5)
    assert table.iloc[best.row].n_last == 300  # the most accurate within budget takes the noisy band too
    row = fewest_within_noise(table["threshold_1"], best.row, c, large.astype(float) - small, 1.0)
    sent = int(table.iloc[row].n_last)
    assert 90 <= sent <= 100  # the clear gain is bought, the noise is not
    gap = table.iloc[best.row].accuracy - table.iloc[row].accuracy
    between = slice(sent, 300)
    d = large[between].astype(float) - small[between]
    assert gap == pytest.approx(d.sum() / 1000) and gap <= np.sqrt(((d**2).sum() / 1000 - gap**2) / 1000)
    assert fewest_within_noise(table["threshold_1"], best.row, c, large.astype(float) - small, 0.0) == best.row
    # the guaranteed budget: the same rule over its certified candidates
    plain = guaranteed_budget(c, small, large, max_large_rate=0.5, alpha=0.1)
    guarded = guaranteed_budget(c, small, large, max_large_rate=0.5, alpha=0.1, budget_z=1.0)
    assert plain.large_rate >= 0.3 and 0.09 <= guarded.large_rate <= 0.1  # ties: plain sends most
    choice = choose_guaranteed(c, small, large, "max_large_rate", confidence_level=0.9, max_large_rate=0.5, budget_z=1)
    assert choice.threshold == guarded.threshold and choice.goal.endswith("gain clears 1 standard errors")


def test_a_sampled_budget_counts_the_sample_in_its_noise():
    from datashunt.core.calibration import fewest_within_noise
    from datashunt.core.stratified import budget_limit, choose_budget, sample_calls

    c, small, large = noisy_gain()
    top = budget_limit(c, max_large_rate=0.5, alpha=0.1)
    every = sample_calls(c, below=top, random_state=0)
    exact = choose_budget(c, small, every, large[every], max_large_rate=0.5, alpha=0.1, budget_z=1.0)
    assert 0.09 <= exact.large_rate <= 0.1  # every item below the budget asked: the exact rule
    few = sample_calls(c, 120, below=top, random_state=0)
    sampled = choose_budget(c, small, few, large[few], max_large_rate=0.5, alpha=0.1, budget_z=1.0)
    assert sampled.large_rate <= choose_budget(c, small, few, large[few], max_large_rate=0.5, alpha=0.1).large_rate
    # a sample's own variance widens the noise: an equal gain counts for less than on every item
    thresholds, gain = np.array([0.1, 0.3]), large.astype(float) - small
    whole = fewest_within_noise(thresholds, 1, c, gain, 1.0)
    half = np.arange(0, 1000, 2)
    assert fewest_within_noise(thresholds, 1, c[half], gain[half], 1.0, n=1000, band=1000) <= whole
