"""The spending hook: a meter set through :func:`~datashunt.backends.base.metering` limits and pays the calls the
backends make, without any of their methods being replaced."""

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from fakes import FakeGenerator, FakeLargeModel

from datashunt.backends.base import NOT_ASKED, metering
from datashunt.backends.replay import ReplayModel
from datashunt.jobs.spending import Meter

TEXTS = [f"text {i}" for i in range(6)]
METHODS = {"predict_proba", "_score_many", "_score", "generate", "chat", "_generate_many", "_generate"}


def paid(meter) -> list:
    """The costs in the meter's ledger, after its header and the run's committed cost."""
    return [json.loads(line)["cost"] for line in meter.path.read_text().splitlines()[2:]]


def untouched(backend) -> bool:
    return not METHODS & set(vars(backend))


def test_a_budget_limits_a_large_model_per_distinct_prompt_and_pays_each_answer_once(tmp_path):
    large = FakeLargeModel({t: "pos" for t in TEXTS}, price={"per_call": 0.001})
    meter = Meter(tmp_path / "ledger", "run", budget=0.0035)
    items = TEXTS[:3] + TEXTS[:1] + TEXTS[3:]  # the first text twice: asked once
    with meter.watch(SimpleNamespace(large_=large)):
        assert meter.watched == 1 and untouched(large)
        result = large.predict_proba(items, ["neg", "pos"])
        assert untouched(large)
    assert result.error == [None] * 4 + [NOT_ASKED] * 3 and large.calls == 3
    assert result.cached.tolist() == [False, False, False, True, False, False, False]
    assert result.cost.tolist() == [0.001] * 3 + [0.0] * 4 and np.isnan(result.proba[4:]).all()
    assert meter.refused and meter.spent == pytest.approx(0.003) and paid(meter) == [0.001] * 3
    assert large.predict_proba(TEXTS, ["neg", "pos"]).ok.all()  # the watch is over: nothing limits it
    assert meter.spent == pytest.approx(0.003)
    meter.close()


def test_a_budget_limits_a_generator_and_a_meter_without_one_pays_every_answer(tmp_path):
    table = {t: ("Text", [0.9]) for t in TEXTS} | {None: ("Hallo", [0.8])}
    generator = FakeGenerator(table, price={"per_call": 0.002})
    meter = Meter(tmp_path / "limited", "run", budget=0.005)
    with meter.watch(SimpleNamespace(stages_=[("large", generator)])):
        out = generator.generate(TEXTS[:4])
        assert untouched(generator)
    assert out.text == ["Text", "Text", None, None] and out.flag[2:] == [NOT_ASKED] * 2
    assert out.cost.tolist() == [0.002, 0.002, 0.0, 0.0] and paid(meter) == [0.002] * 2 and meter.refused
    meter.close()
    free_run = Meter(tmp_path / "unlimited", "run")
    with free_run.watch(SimpleNamespace(stages_=[("large", generator)])):
        chat = generator.chat([[{"role": "user", "content": "Hallo?"}]] * 2 + [[{"role": "user", "content": "Hi"}]])
    assert chat.text == ["Hallo"] * 3 and chat.cached.tolist() == [False, True, False]
    assert paid(free_run) == [0.002] * 2 and not free_run.refused
    free_run.close()


def test_a_budget_limits_a_replay_per_item_and_pays_each_recorded_answer(tmp_path):
    table = pd.DataFrame({"id": ["a", "b", "c"], "prediction": ["pos", "neg", "pos"]})
    replay = ReplayModel(table, price={"per_call": 0.01})
    meter = Meter(tmp_path / "ledger", "run", budget=0.025)
    with meter.watch(SimpleNamespace(large_=replay)):
        result = replay.predict_proba(["a", "zzz", "b", "c"], ["neg", "pos"])
        assert untouched(replay)
    assert result.error == [None, "no recorded answer for input 'zzz'", None, NOT_ASKED]
    assert result.cost.tolist() == [0.01, 0.0, 0.01, 0.0] and np.isnan(result.call_seconds[3])
    assert np.isnan(result.proba[3]).all() and paid(meter) == [0.01, 0.01] and meter.refused
    meter.close()


def test_only_the_backends_handed_to_the_hook_are_metered_and_in_the_groups_their_meter_allows():
    class Allowance:
        """Lets ``room`` calls out in all, and keeps what it was asked and paid."""

        def __init__(self, room):
            self.room, self.wanted, self.paid = room, [], []

        def allowed(self, model, floor, wanted):
            self.wanted.append(wanted)
            n = min(wanted, self.room, 2)
            self.room -= n
            return n

        def pay(self, model, cost):
            self.paid.append((model, cost))

    priced = FakeLargeModel({t: "pos" for t in TEXTS}, price={"per_call": 0.5})
    free = FakeLargeModel({t: "pos" for t in TEXTS}, seed=1)
    meter = Allowance(3)
    with metering(meter, [priced]):
        assert free.predict_proba(TEXTS, ["neg", "pos"]).ok.all()
        result = priced.predict_proba(TEXTS[:5], ["neg", "pos"])
    assert meter.wanted == [5, 3, 2] and meter.paid == [(priced.identity(), 0.5)] * 3
    assert result.error == [None] * 3 + [NOT_ASKED] * 2 and priced.calls == 3
