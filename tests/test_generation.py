"""Generation: the generator contract, sequence confidence, quality metrics and ShuntGenerator."""

import numpy as np
import pytest
from fakes import FakeGenerator

from datashunt import ShuntGenerator
from datashunt.core.sequence import get_sequence_measure
from datashunt.eval.metrics import Metric, get_metric
from datashunt.exceptions import ConfigError, DataError

N = 120
ITEMS = [f"item {i}" for i in range(N)]
REFS = [f"Referenz {i}" for i in range(N)]
SURE = np.arange(N) % 3 != 0  # the small model is sure (and right) on two items in three


def small_table():
    return {
        x: (r, [0.95, 0.9]) if sure else (f"falsch {i}", [0.4, 0.5])
        for i, (x, r, sure) in enumerate(zip(ITEMS, REFS, SURE))
    }


def large_table():
    return {x: (r, [0.8, 0.9]) for x, r in zip(ITEMS, REFS)}


def shunt(**kw):
    stages = kw.pop("stages", None) or [
        ("small", FakeGenerator(small_table(), name="small")),
        ("large", FakeGenerator(large_table(), name="large")),
    ]
    return ShuntGenerator(stages, metric="exact_match", random_state=0, **kw)


def test_calibrated_threshold_keeps_the_sure_items_and_sends_the_rest():
    model = shunt().fit(ITEMS[:60], REFS[:60], X_val=ITEMS[60:], references_val=REFS[60:])
    assert 0.45 < model.thresholds_[0] < 0.925
    assert model.calibration_["goal_met"] and model.calibration_["quality"] == 100.0
    assert model.calibration_["stage_quality"] == pytest.approx([100 * SURE[60:].mean(), 100.0])
    table = model.route(ITEMS[:30])
    assert table["route"].tolist() == ["small" if s else "large" for s in SURE[:30]]
    assert table["text"].tolist() == REFS[:30]
    assert model.score(ITEMS[:30], REFS[:30]) == 100.0
    assert table.loc[table.route == "small", "confidence"].tolist() == pytest.approx([0.925] * int(SURE[:30].sum()))


def test_only_the_unsure_items_reach_the_large_stage():
    model = shunt(thresholds=[0.7]).fit(ITEMS, REFS)
    model.route(ITEMS[:30])
    large = model.stages_[1][1]
    assert large.calls == [x for x, s in zip(ITEMS[:30], SURE[:30]) if not s]


def test_budget_policy_caps_the_share_sent_on():
    model = shunt(policy="max_last_rate", max_last_rate=0.2).fit(ITEMS[:60], REFS[:60], ITEMS[60:], REFS[60:])
    assert model.calibration_["reach"][1] <= 0.2
    assert model.calibration_["goal_met"]


def test_draft_and_its_confidence_reach_the_large_stage_as_a_hint():
    model = shunt(hint=True, thresholds=[0.7]).fit(ITEMS, REFS)
    model.route([ITEMS[0]])  # item 0: the small model is unsure
    prompt = model.stages_[1][1].last_messages[-1]["content"]
    assert "A smaller model drafted this answer (its confidence: 0.45); it may be wrong: falsch 0" in prompt
    assert prompt.endswith("Text: item 0")


def test_large_stage_failure_falls_back_to_the_draft_with_a_flag():
    stages = [
        ("small", FakeGenerator(small_table(), name="small")),
        ("large", FakeGenerator(large_table(), name="large", fail=(ITEMS[0],))),
    ]
    table = shunt(stages=stages, thresholds=[0.7]).fit(ITEMS, REFS).route(ITEMS[:2])
    assert table["route"].tolist() == ["fallback", "small"]
    assert table["text"].iloc[0] == "falsch 0"
    assert table["flag"].iloc[0] == "large: upstream error 500"


def test_text_without_logprobs_is_flagged_and_routed_on():
    stages = [
        ("small", FakeGenerator(small_table(), name="small", no_logprobs=(ITEMS[1],))),
        ("large", FakeGenerator(large_table(), name="large")),
    ]
    table = shunt(stages=stages, thresholds=[0.7]).fit(ITEMS, REFS).route(ITEMS[:2])
    assert table["route"].iloc[1] == "large"  # item 1 was sure, but its confidence is unknown
    assert table["flag"].iloc[1] == "small: no log-probabilities: confidence unknown, routed on"


def test_blank_prompt_is_flagged_and_generate_refuses_to_guess():
    model = shunt(thresholds=[0.7]).fit(ITEMS, REFS)
    table = model.route([ITEMS[1], "  "])
    assert table["route"].tolist() == ["small", "invalid"]
    assert "blank" in table["flag"].iloc[1] and table["text"].iloc[1] is None
    with pytest.raises(DataError, match=r"1 bad inputs: row 1: blank text.*route\(\)"):
        model.generate([ITEMS[1], "  "])


def test_generator_returning_no_text_is_flagged():
    table = {**small_table(), ITEMS[1]: ("   ", [0.9])}
    got = FakeGenerator(table).generate(ITEMS[:2])
    assert got.text[1] is None and got.flag[1] == "the generator returned no text"


def test_impossible_logprobs_are_flagged_not_cached(tmp_path):
    table = {**small_table(), ITEMS[1]: ("x", [1.5])}
    gen = FakeGenerator(table, cache=str(tmp_path / "calls.sqlite"))
    got = gen.generate(ITEMS[:2])
    assert got.text[1] is None and "impossible token log-probabilities" in got.flag[1]
    assert len(gen._cache()) == 1


def test_answers_are_cached_and_not_paid_twice(tmp_path):
    gen = FakeGenerator(small_table(), cache=str(tmp_path / "calls.sqlite"), price={"per_million_output": 1e6})
    first = gen.generate(ITEMS[:3])
    second = FakeGenerator(
        small_table(), cache=str(tmp_path / "calls.sqlite"), price={"per_million_output": 1e6}
    ).generate(ITEMS[:3])
    assert first.cost.tolist() == [2.0, 2.0, 2.0] and not first.cached.any()
    assert second.cached.all() and second.cost.sum() == 0 and second.price.tolist() == [2.0, 2.0, 2.0]
    assert second.text == first.text
    np.testing.assert_allclose(second.token_logprob[0], first.token_logprob[0])


def test_shots_show_the_closest_training_pairs_as_earlier_turns():
    gen = FakeGenerator(small_table(), shots=2).fit(["free game", "image tool", "free software"], ["a", "b", "c"])
    gen.generate([ITEMS[1]])
    roles = [m["role"] for m in gen.last_messages]
    assert roles == ["user", "assistant", "user", "assistant", "user"]
    with pytest.raises(ConfigError, match="shots=2 needs the training pairs"):
        FakeGenerator(small_table(), shots=2).generate([ITEMS[1]])
    state = gen.fitted_state()
    restored = FakeGenerator(small_table(), shots=2).set_fitted_state(state)
    assert restored.memory_.nearest(["free games"], 1) == gen.memory_.nearest(["free games"], 1)


def test_missing_references_are_refused_with_the_rows():
    refs = REFS[:10] + [None] + REFS[11:]
    with pytest.raises(
        DataError, match=r"training: 1 items have no reference, or one that is not text \(rows \[10\]\)"
    ):
        shunt().fit(ITEMS, refs)
    with pytest.raises(DataError, match=r"rows \[3, 4\]"):
        shunt().fit(ITEMS, REFS[:3] + [5.0, ["  "]] + REFS[5:])
    with pytest.raises(DataError, match=r"validation: expected one reference per item \(5\), got 4"):
        shunt().fit(ITEMS, REFS, X_val=ITEMS[:5], references_val=REFS[:4])


def test_a_stage_that_is_not_a_generator_is_refused():
    with pytest.raises(ConfigError, match="stage 'x' is not a generator"):
        ShuntGenerator([("x", object()), ("y", FakeGenerator(large_table()))]).fit(ITEMS, REFS)


def test_sequence_measures_by_name_and_unknown_one():
    lp = [np.log([0.9, 0.5]), None, np.array([])]
    assert get_sequence_measure("mean_proba")(lp)[0] == pytest.approx(0.7)
    assert np.isnan(get_sequence_measure("min_proba")(lp)[1:]).all()
    with pytest.raises(ConfigError, match="unknown sequence confidence 'max'"):
        get_sequence_measure("max")


def test_chrf_is_sacrebleus_and_bootstrap_brackets_the_corpus_score():
    sacrebleu = pytest.importorskip("sacrebleu")
    hyps = ["freie Software", "ein Spiel für Kinder", "Bibliothek", "Werkzeug zum Zeichnen"]
    refs = ["Freie Software", "Spiel für Kinder", "Laufzeitbibliothek", "Zeichenwerkzeug"]
    chrf = get_metric("chrf")
    assert chrf.corpus(hyps, refs) == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score)
    low, high = chrf.bootstrap(hyps, refs, n=200)
    assert low <= chrf.corpus(hyps, refs) <= high
    slow = Metric("chrf", chrf.corpus_fn, chrf.item_fn)  # every resample scored from scratch
    assert slow.bootstrap(hyps, refs, n=200) == pytest.approx((low, high))
    with pytest.raises(DataError, match="item 1 has no reference"):
        chrf.corpus(hyps[:2], ["x", None])
    # paired: the difference of two systems on the same resamples, brackets their corpus difference
    worse = ["Software", "Spiel", "Bibliothek", "Werkzeug"]
    low, high = chrf.bootstrap(hyps, refs, n=200, against=worse)
    assert low <= chrf.corpus(hyps, refs) - chrf.corpus(worse, refs) <= high and low > 0
    assert slow.bootstrap(hyps, refs, n=200, against=worse) == pytest.approx((low, high))
    assert chrf.bootstrap(hyps, refs, n=50, against=hyps) == (0.0, 0.0)  # a system against itself
    with pytest.raises(DataError, match="against has 2 texts for 4 items"):
        chrf.bootstrap(hyps, refs, against=worse[:2])
    with pytest.raises(ConfigError, match="unknown metric 'meteor'"):
        get_metric("meteor")


@pytest.mark.parametrize("name", ["chrf", "bleu", "rouge_l", "exact_match", "token_f1", "cider"])
def test_a_mix_of_systems_scores_as_the_mixed_texts_do(name):
    pytest.importorskip("pycocoevalcap")
    refs = ["freie Software", "ein Spiel für Kinder", "Laufzeitbibliothek", "Zeichenwerkzeug", "das Paket"]
    systems = [
        ["Software frei", "Spiel für Kinder", "Bibliothek", "Werkzeug zum Zeichnen", "das Paket"],
        ["freie Software", "ein Spiel", "Laufzeitbibliothek", "Zeichenwerkzeug", "Paket"],
        ["frei", "Kinder", "Laufzeit", "zeichnen", "ein Paket"],
    ]
    metric = get_metric(name)
    mix = metric.mixer(systems, refs)
    for choice in ([0, 0, 0, 0, 0], [1, 2, 0, 1, 2], [2, 2, 1, 0, 1]):
        texts = [systems[c][i] for i, c in enumerate(choice)]
        assert mix(choice) == pytest.approx(metric.corpus(texts, refs))


def test_rouge_cider_and_token_f1_take_several_references():
    pytest.importorskip("pycocoevalcap")
    hyps = ["a dog runs on grass", "a red square"]
    refs = [["a dog running on the grass", "dog on grass"], ["a red square", "red square on white"]]
    assert get_metric("rouge_l").per_item(hyps, refs)[1] == 100.0
    assert get_metric("token_f1").per_item(hyps, refs)[1] == 100.0
    cider = get_metric("cider").per_item(hyps, refs)
    assert cider.shape == (2,) and (cider >= 0).all()


def test_openai_generator_reads_each_tokens_logprob_over_http(monkeypatch, tmp_path):
    from fakes import FakeOpenAIServer

    from datashunt.backends.generate.openai_chat import OpenAIChatGenerator

    monkeypatch.setenv("TEST_KEY", "sk-secret-123")
    answers = {"free software": [("freie", -0.1), (" Software", -0.3)], "image tool": [("Bild", -1.2)]}
    with FakeOpenAIServer(answers, sequence=True) as server:
        gen = OpenAIChatGenerator(
            "tiny",
            base_url=server.base_url,
            api_key_env="TEST_KEY",
            instruction="Translate.",
            stop=["\n"],
            cache=str(tmp_path / "calls.sqlite"),
        )
        got = gen.generate(["free software", "image tool"])
    assert got.text == ["freie Software", "Bild"]
    np.testing.assert_allclose(got.token_logprob[0], [-0.1, -0.3])
    body = server.requests[0]["body"]
    assert body["logprobs"] is True and body["temperature"] == 0.0 and body["stop"] == ["\n"]
    assert {r["auth"] for r in server.requests} == {"Bearer sk-secret-123"}
    assert "sk-secret" not in (tmp_path / "calls.sqlite").read_bytes().decode("latin-1")


def test_openai_generator_without_logprobs_flags_and_routes_on(monkeypatch):
    from fakes import FakeOpenAIServer

    from datashunt.backends.generate.openai_chat import OpenAIChatGenerator

    with FakeOpenAIServer({"free": [("frei", -0.1)]}, sequence=True, logprobs=False) as server:
        got = OpenAIChatGenerator("tiny", base_url=server.base_url, cache=False).generate(["free"])
    assert got.text == ["frei"] and got.token_logprob == [None]
    assert got.flag == ["no log-probabilities: confidence unknown, routed on"]


def test_openai_generator_server_error_is_flagged_per_row():
    from fakes import FakeOpenAIServer

    from datashunt.backends.generate.openai_chat import OpenAIChatGenerator

    with FakeOpenAIServer({}, status=500) as server:
        got = OpenAIChatGenerator("tiny", base_url=server.base_url, max_retries=0, cache=False).generate(["a", "b"])
    assert got.text == [None, None] and all("failed" in f and "500" in f for f in got.flag)


def test_a_changed_or_corrupt_generator_folder_is_refused(tmp_path):
    from datashunt.exceptions import ModelFileError
    from datashunt.io.persist import load

    (tmp_path / "model.json").write_text('{"format": 99}')
    with pytest.raises(ModelFileError, match="unsupported format 99"):
        load(tmp_path)
    (tmp_path / "model.json").write_text("{not json")
    with pytest.raises(ModelFileError, match="model.json is corrupt"):
        load(tmp_path)
