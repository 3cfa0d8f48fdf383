"""Segments (Data Shunt+): documents cut into sentences, the large model asked only the open ones, together."""

import json

import pandas as pd
import pytest
from fakes import FakeGenerator

from datashunt import Segments, ShuntGenerator
from datashunt.core.segments import split
from datashunt.exceptions import ConfigError, DataError, LargeModelError

EASY = {f"Easy sentence {i}.": f"Leichter Satz {i}." for i in range(8)}
HARD = {f"Hard sentence {i}.": f"Schwerer Satz {i}." for i in range(8)}


class JointGenerator(FakeGenerator):
    """The fake large model, also answering whole chats: each numbered line of the last user
    message translated from the table (``garble``: an answer without numbers)."""

    def __init__(
        self,
        table=None,
        *,
        name="large",
        fail=(),
        max_new_tokens=16,
        stop=None,
        price=None,
        garble=False,
        cache=False,
        fail_joint=False,
    ):
        super().__init__(
            table, name=name, fail=fail, max_new_tokens=max_new_tokens, stop=stop, price=price, cache=cache
        )
        self.garble, self.fail_joint = garble, fail_joint
        self.chats = []  # shared with the copy a joint call is made by

    def _generate(self, messages, item):
        if item is not None:
            return super()._generate(messages, item)
        self.chats.append(messages)
        if self.fail_joint:
            raise LargeModelError("upstream error 503")
        lines = [line.split(". ", 1) for line in messages[-1]["content"].splitlines() if line[:1].isdigit()]
        answers = [f"{n}. {self.table[text][0]}" for n, text in lines]
        from datashunt.backends.generate.base import Generated

        text = "Hier ist alles." if self.garble else "\n".join(answers)
        return Generated(text, [-0.01] * len(answers), prompt_tokens=100, completion_tokens=10 * len(answers))


def shunt(garble=False, fail=(), thresholds=(0.5,), cache=False):
    small = {s: (t, [0.95, 0.95]) for s, t in EASY.items()} | {s: ("falsch", [0.3, 0.3]) for s in HARD}
    large = {s: (t, [0.99]) for s, t in (EASY | HARD).items()}
    return ShuntGenerator(
        [
            ("small", FakeGenerator(small, name="small")),
            (
                "large",
                JointGenerator(large, name="large", garble=garble, fail=fail, price={"per_call": 1.0}, cache=cache),
            ),
        ],
        thresholds=list(thresholds),
        confidence="mean_proba",
    )


DOCS = [
    "Easy sentence 0. Hard sentence 0.\nEasy sentence 1.",
    "Hard sentence 1. Easy sentence 2. Hard sentence 2.",
    "Easy sentence 3. Easy sentence 4.",
]
REFS = [
    "Leichter Satz 0. Schwerer Satz 0.\nLeichter Satz 1.",
    "Schwerer Satz 1. Leichter Satz 2. Schwerer Satz 2.",
    "Leichter Satz 3. Leichter Satz 4.",
]


def test_split_keeps_the_documents_line_breaks():
    pieces = split("One. Two three.\n\n * four\nfive")
    assert pieces == [("One.", " "), ("Two three.", "\n\n"), ("* four", "\n"), ("five", "")]
    assert [p for p, _ in split("One. Two.", "lines")] == ["One. Two."]
    with pytest.raises(ConfigError, match="unit must be one of"):
        split("x", "words")


def test_only_the_open_sentences_reach_the_large_model_and_one_document_asks_once():
    model = Segments(shunt(), context=True).fit(DOCS, REFS)
    table = model.route(DOCS)
    assert table["text"].tolist() == REFS  # the hard sentences translated by the large model, line breaks kept
    assert table["parts"].tolist() == [3, 3, 2]
    assert table["large_parts"].tolist() == [1, 2, 0]
    assert table["large_calls"].tolist() == [1, 1, 0]  # the two open sentences of document 1 in one call
    assert table["routes"].iloc[1] == ["large", "small", "large"]
    large = model.shunt_.stages_[-1][1]
    assert large.calls == ["Hard sentence 0."]  # document 0's single open sentence: its own call
    (chat,) = large.chats
    ask = chat[-1]["content"]
    assert "1. Hard sentence 1.\n2. Hard sentence 2." in ask and "same numbers" in ask
    assert "the text around it reads: Leichter Satz 2." in ask  # the small side's neighbour as context
    assert table["large_prompt_tokens"].tolist() == [10, 100, 0]  # the large model's alone
    assert table["prompt_tokens"].iloc[2] == 20  # the small model's two calls
    assert table["cost"].tolist() == [1.0, 1.0, 0.0]
    assert table["flag"].isna().all()
    assert model.alignment_["training"]["aligned"] + model.alignment_["validation"]["aligned"] == 3


def test_a_translation_memory_first_settles_the_sentences_solved_before():
    from datashunt.small.memory import MemoryGenerator

    stages = shunt().stages
    three = ShuntGenerator([("memory", MemoryGenerator()), *stages], thresholds=[0.99, 0.5], confidence="mean_proba")
    seen = ["Hard sentence 1. Easy sentence 2.", "Hard sentence 2."]  # translated before
    model = Segments(three).fit(seen, ["Schwerer Satz 1. Leichter Satz 2.", "Schwerer Satz 2."], DOCS, REFS)
    table = model.route(DOCS)
    assert table["text"].tolist() == REFS
    assert table["routes"].iloc[1] == ["memory", "memory", "memory"]
    assert table["large_calls"].iloc[1] == 0 and table["cost"].iloc[1] == 0  # nothing left for the models
    assert model.shunt_.stages_[-1][1].calls == ["Hard sentence 0."]  # only what the memory has not seen


def test_an_unreadable_joint_answer_is_flagged_and_asked_part_by_part():
    table = Segments(shunt(garble=True)).fit(DOCS, REFS).route(DOCS[1:2])
    assert table["text"].iloc[0] == REFS[1]
    assert table["large_calls"].iloc[0] == 3  # the joint call, then one per open sentence
    assert "did not number every part; asked part by part" in table["flag"].iloc[0]


def test_without_together_or_context_each_open_part_is_its_own_plain_call():
    model = Segments(shunt(), together=False, context=False).fit(DOCS, REFS)
    table = model.route(DOCS[1:2])
    assert table["large_calls"].iloc[0] == 2
    large = model.shunt_.stages_[-1][1]
    assert "around it" not in large.last_messages[-1]["content"]


def test_by_default_the_joint_call_shows_the_open_parts_only():
    model = Segments(shunt()).fit(DOCS, REFS)
    model.route(DOCS[1:2])
    (chat,) = model.shunt_.stages_[-1][1].chats
    assert "1. Hard sentence 1.\n2. Hard sentence 2." in chat[-1]["content"]
    assert "around it" not in chat[-1]["content"]  # no context line unless asked for


def test_a_failing_large_model_keeps_the_small_text_flagged():
    table = Segments(shunt(fail=("Hard sentence 0.",))).fit(DOCS, REFS).route(DOCS[:1])
    assert table["text"].iloc[0] == "Leichter Satz 0. falsch\nLeichter Satz 1."
    assert table["routes"].iloc[0][1] == "fallback"
    assert "upstream error 500" in table["flag"].iloc[0]


def test_bad_documents_are_flagged_per_row():
    table = Segments(shunt()).fit(DOCS, REFS).route([DOCS[2], None, "   "])
    assert table["text"].iloc[0] == REFS[2]
    assert table["flag"].iloc[1] == "not text (NoneType); not sent"
    assert table["flag"].iloc[2] == "no text to cut into parts"
    assert table["parts"].tolist() == [2, 0, 0] and table["route"].tolist() == ["small", "invalid", "invalid"]
    with pytest.raises(LargeModelError, match="2 documents lack a text"):
        Segments(shunt()).fit(DOCS, REFS).generate([DOCS[2], None, "   "])


def test_a_document_that_is_not_valid_unicode_is_flagged_and_the_others_answered():
    table = Segments(shunt()).fit(DOCS, REFS).route(["Hard sentence 1. x\ud800 y. Easy sentence 2.", DOCS[2]])
    assert table["route"].tolist() == ["invalid", "small"] and table["text"].tolist() == [None, REFS[2]]
    assert table["flag"].iloc[0] == "not valid Unicode: a lone surrogate U+D800 at character 18; not sent"


def test_a_failed_joint_call_is_counted_and_a_long_document_asks_in_several_joint_calls():
    from datashunt.estimators.segments import MOST_TOGETHER

    model = Segments(shunt()).fit(DOCS, REFS)
    large = model.shunt_.stages_[-1][1]
    table = model.route(DOCS[1:2])
    assert table["failed_calls"].tolist() == [0] and table["large_calls"].tolist() == [1]
    large.fail_joint = True  # the joint call errs, the calls part by part do not
    table = model.route(DOCS[1:2])
    assert table["text"].tolist() == REFS[1:2] and table["large_calls"].tolist() == [3]
    assert table["failed_calls"].tolist() == [1] and "asked part by part" in table["flag"].iloc[0]
    hard = " ".join(list(HARD)[:2] * (MOST_TOGETHER // 2 + 1))  # more open parts than one joint call asks about
    large.fail_joint, chats = False, len(large.chats)
    table = model.route([hard])
    assert len(large.chats) - chats == 2 and table["large_calls"].tolist() == [2]
    assert max(len(c[-1]["content"].splitlines()) for c in large.chats[chats:]) <= MOST_TOGETHER + 2


def test_calibration_uses_the_aligned_sentences_and_refuses_when_none_align():
    model = Segments(shunt(thresholds=())).set_params(shunt__thresholds="auto")
    model.fit(DOCS, REFS, X_val=DOCS, references_val=REFS)
    assert 0.3 < model.shunt_.thresholds_[0] <= 0.95  # δ between the unsure and the sure sentences
    assert model.alignment_["validation"] == {"documents": 3, "aligned": 3, "parts": 8}
    assert model.score(DOCS, REFS) == pytest.approx(100.0)
    with pytest.raises(DataError, match="no document's reference has as many sentences"):
        Segments(shunt()).fit(DOCS, ["Ein Satz."] * 3)
    with pytest.raises(DataError, match="expected one reference per document"):
        Segments(shunt()).fit(DOCS, REFS[:2])
    with pytest.raises(DataError, match="are not non-blank strings"):
        Segments(shunt()).fit(DOCS[:2] + [3], REFS)


def test_segments_needs_a_shunt_generator():
    with pytest.raises(ConfigError, match="needs a ShuntGenerator"):
        Segments("translate").fit(DOCS, REFS)
    with pytest.raises(ConfigError, match="together must be True or False"):
        Segments(shunt(), together="yes").fit(DOCS, REFS)
    assert len(Segments(shunt()).fit(DOCS, REFS).route([])) == 0


def test_a_budget_asks_the_least_sure_open_parts_first_and_keeps_the_rest_small():
    budgeted = shunt()
    budgeted.stages[0][1].table["Hard sentence 1."] = ("falsch", [0.1, 0.1])  # the least sure part
    model = Segments(budgeted, max_cost=1 / 3).fit(DOCS, REFS)  # one call of 1.0 for three documents
    table = model.route(DOCS)
    assert model.shunt_.stages_[-1][1].calls == ["Hard sentence 1."]
    assert table["text"].tolist() == [
        "Leichter Satz 0. falsch\nLeichter Satz 1.",
        "Schwerer Satz 1. Leichter Satz 2. falsch",
        REFS[2],
    ]
    assert table["held_back"].tolist() == [1, 1, 0] and table["large_calls"].tolist() == [0, 1, 0]
    assert table["routes"].iloc[1] == ["large", "small", "small"]
    assert table["cost"].sum() == 1.0 and table["flag"].isna().all()
    whole = Segments(shunt(), max_cost=1.0).fit(DOCS, REFS).route(DOCS)  # room for all three open parts
    assert whole["text"].tolist() == REFS and whole["held_back"].sum() == 0 and whole["cost"].sum() == 3.0
    assert Segments(shunt(), max_cost=0).fit(DOCS, REFS).route(DOCS)["large_calls"].sum() == 0
    from datashunt.eval.plus import describe_plus, evaluate_segments

    summary, _ = evaluate_segments(model, DOCS, REFS, n_bootstrap=20)
    assert summary["held_back_share_of_parts"] == 2 / 8 and summary["large_share_of_parts"] == 1 / 8
    assert "the budget kept 25.0% of the parts on the small side" in describe_plus(model, summary)


def test_a_budget_starts_from_the_price_seen_on_validation():
    model = Segments(shunt(thresholds=()).set_params(thresholds="auto"), max_cost=4.0)
    model.fit(DOCS, REFS, X_val=DOCS, references_val=REFS)
    assert model.shunt_.calibration_["stage_price"] == [0.0, 1.0]  # each stage's mean price of an answer
    table = model.route(DOCS[1:2])  # two open parts, room for four: half of it spent at once, together
    assert table["large_calls"].tolist() == [1] and table["held_back"].tolist() == [0]
    table = model.set_params(max_cost=2.0).route(DOCS[1:2])  # room for two: one round each
    assert table["large_calls"].tolist() == [2] and table["held_back"].tolist() == [0]


def test_a_budget_needs_a_number_and_a_priced_large_model():
    with pytest.raises(ConfigError, match="max_cost must be a non-negative number or None"):
        Segments(shunt(), max_cost=-1).fit(DOCS, REFS)
    with pytest.raises(ConfigError, match="max_cost must be a non-negative number or None"):
        Segments(shunt(), max_cost="cheap").fit(DOCS, REFS)
    free = shunt()
    free.stages[-1][1].price = None
    with pytest.raises(ConfigError, match="give its stage a price"):
        Segments(free, max_cost=1.0).fit(DOCS, REFS)


def test_a_metered_run_pays_for_the_joint_calls():
    from datashunt.backends.base import metering
    from datashunt.jobs.spending import priced_models

    class Recorder:
        def __init__(self):
            self.paid = []

        def allowed(self, model, floor, wanted):
            return wanted

        def pay(self, model, cost):
            self.paid.append((model, cost))

    model = Segments(shunt()).fit(DOCS, REFS)
    recorder = Recorder()
    with metering(recorder, priced_models(model)):
        table = model.route(DOCS)
    assert table["route"].tolist() == ["large", "large", "small"]
    assert recorder.paid == [("fake_generator:large", 1.0)] * 2  # the joint call is paid like any other


def server_answers() -> tuple[dict, dict]:
    """What the loopback small and large servers answer: word tokens per sentence, and the large
    one's joint answer to document 1's two open sentences."""

    def tokens(text, logprob):
        return [(word + " ", logprob) for word in text.split()]

    small = {s: tokens(t, -0.01) for s, t in EASY.items()} | {s: tokens("falsch", -2.0) for s in HARD}
    joint = {"1. Hard sentence 1.": [("1. Schwerer Satz 1.\n", -0.01), ("2. Schwerer Satz 2.", -0.01)]}
    return small, joint | {s: tokens(t, -0.01) for s, t in (EASY | HARD).items()}


def test_segments_save_and_load_with_real_http_backends(tmp_path):
    from fakes import FakeOpenAIServer

    from datashunt.backends.generate.openai_chat import OpenAIChatGenerator
    from datashunt.exceptions import ModelFileError
    from datashunt.io.persist import load, save, saved_kind

    small, large = server_answers()
    with FakeOpenAIServer(small, sequence=True) as first, FakeOpenAIServer(large, sequence=True) as last:
        stages = [
            ("small", OpenAIChatGenerator("tiny", base_url=first.base_url, instruction="Translate.")),
            ("large", OpenAIChatGenerator("big", base_url=last.base_url, instruction="Translate.")),
        ]
        model = Segments(ShuntGenerator(stages, thresholds=[0.5], confidence="mean_proba")).fit(DOCS, REFS)
        table = model.route(DOCS)
        assert table["text"].tolist() == REFS and table["large_calls"].tolist() == [1, 1, 0]
        folder = save(model, tmp_path / "m")
        assert saved_kind(folder) == "Segments" and (folder / "shunt" / "model.json").is_file()
        options = {
            "small": {"model": "tiny", "base_url": first.base_url},
            "large": {"model": "big", "base_url": last.base_url},
        }
        loaded = load(folder, large_options=options)
        again = loaded.route(DOCS)
        assert table["cached_calls"].tolist() == [0, 0, 0] and again["cached_calls"].tolist() == [1, 1, 0]
        pd.testing.assert_frame_equal(again.drop(columns="cached_calls"), table.drop(columns="cached_calls"))
        assert loaded.get_params()["unit"] == "sentences" and loaded.alignment_ == model.alignment_
    meta = json.loads((folder / "segments.json").read_text())
    (folder / "segments.json").write_text(json.dumps(meta | {"unit": "words"}))
    with pytest.raises(ModelFileError, match="unit must be one of"):
        load(folder, large_options=options)
    (folder / "segments.json").write_text(json.dumps(meta | {"max_cost": "lots"}))
    with pytest.raises(ModelFileError, match="max_cost must be a non-negative number"):
        load(folder, large_options=options)
    older = {k: v for k, v in meta.items() if k != "max_cost"}  # saved before budgets were held
    (folder / "segments.json").write_text(json.dumps(older))
    assert load(folder, large_options=options).max_cost is None
    (folder / "segments.json").write_text(json.dumps(meta | {"code": "import os"}))
    with pytest.raises(ModelFileError, match="the keys must be"):
        load(folder, large_options=options)


def test_drift_is_judged_on_every_part_not_on_the_unsure_ones_alone():
    import warnings

    from datashunt.exceptions import DriftWarning

    easy, hard = list(EASY), list(HARD)
    docs = [f"{easy[i % 8]} {hard[i % 8]} {easy[(i + 1) % 8]}" for i in range(40)]
    refs = [" ".join((EASY | HARD)[s] for s in (easy[i % 8], hard[i % 8], easy[(i + 1) % 8])) for i in range(40)]
    model = Segments(shunt().set_params(thresholds="auto")).fit(docs[:20], refs[:20], docs[20:], refs[20:])
    with warnings.catch_warnings():
        warnings.simplefilter("error", DriftWarning)  # the same mix as in calibration: no warning
        table = model.route(docs)
    assert table.attrs["drift"]["drifted"] is False and table.attrs["drift"]["n_live"] == 120
    with pytest.warns(DriftWarning):
        assert model.route([" ".join(hard[:4])] * 20).attrs["drift"]["drifted"] is True


def memory_first(seen=("Easy sentence 0.",), cache=False, **options) -> Segments:
    """A translation memory (it remembered ``seen``), the small model, the large one."""
    from datashunt.small.memory import MemoryGenerator

    stages = shunt(cache=cache).stages
    three = ShuntGenerator([("memory", MemoryGenerator()), *stages], thresholds=[0.99, 0.5], confidence="mean_proba")
    refs = [(EASY | HARD)[text] for text in seen]
    return Segments(three, **options).fit(list(seen), refs, DOCS, REFS)


def test_distilling_a_memory_remembers_the_large_models_confident_parts_from_the_cache():
    model = memory_first(cache=True)
    large = model.shunt_.stages_[-1][1]
    before = model.route(DOCS)
    assert before["large_calls"].tolist() == [1, 1, 0] and before["routes"].iloc[0][0] == "memory"
    asked = (list(large.calls), len(large.chats))
    model.distill(DOCS)
    assert (large.calls, len(large.chats)) == asked  # the pool was answered as route answers it: from the cache
    # the three hard sentences from the large model (two from one joint call), the one the memory settled itself
    assert model.distillation_ == {"n_pool": 8, "n_from_small": 1, "n_from_large": 3, "n_documents": 3}
    after = model.route(DOCS)
    assert after["text"].tolist() == REFS and after["large_calls"].tolist() == [0, 0, 0]
    assert after["routes"].iloc[1] == ["learnable", "small", "learnable"]  # the copy remembered them
    assert model.shunt_.stages_[0][1].memory_.texts_.tolist() == ["Easy sentence 0."]  # the original is kept


def test_parts_held_back_by_the_budget_teach_nothing():
    from datashunt.small.memory import MemoryGenerator

    stages = [("memory", MemoryGenerator()), shunt().stages[-1]]
    two = ShuntGenerator(stages, thresholds=[0.99], confidence="mean_proba")
    model = Segments(two, max_cost=0).fit(["Easy sentence 0."], ["Leichter Satz 0."], DOCS, REFS)
    assert model.route(DOCS[:1])["held_back"].tolist() == [2]  # the memory's guesses kept, never sure
    model.distill(DOCS[:1])
    assert model.distillation_ == {"n_pool": 3, "n_from_small": 1, "n_from_large": 0, "n_documents": 1}
    assert model.shunt_.learnable_.memory_.texts_.tolist() == ["Easy sentence 0."]  # nothing new remembered
    model.shunt_.learnable_.distill(["Hard sentence 0."], ["Schwerer Satz 0."])  # as if taught by a later round
    table = model.route(DOCS[:1])
    # the copy settles the hard sentence; the one held back keeps the guess of the surer of the two: the copy's
    assert table["routes"].iloc[0] == ["memory", "learnable", "learnable"] and table["held_back"].tolist() == [1]


def test_distill_refuses_an_untrainable_first_stage_and_half_given_validation_before_any_call():
    model = Segments(shunt()).fit(DOCS, REFS)
    with pytest.raises(ConfigError, match=r"the first stage \(FakeGenerator\) is not trainable"):
        model.distill(DOCS)
    model = memory_first()
    with pytest.raises(DataError, match="both the validation documents and their references"):
        model.distill(DOCS, X_val=DOCS)
    with pytest.raises(DataError, match="no document of the pool has text"):
        model.distill([None, "  "])
    assert not hasattr(model.shunt_.stages_[-1][1], "calls")  # the large model was never asked
    from datashunt.collab.distill import distill_rounds

    untrainable = Segments(shunt()).fit(DOCS, REFS)
    with pytest.raises(ConfigError, match="is not trainable"):  # before round 0 routes anything
        distill_rounds(untrainable, DOCS, 1, DOCS, REFS)
    assert not hasattr(untrainable.shunt_.stages_[-1][1], "calls")
    with pytest.raises(DataError, match="routed has 1 rows for 2 pool items"):
        model.shunt_.distill(["a", "b"], routed=pd.DataFrame({"text": ["x"], "stage": [0], "confidence": [1.0]}))


def test_distill_calibrates_again_on_the_validation_documents_parts():
    model = memory_first(seen=("Easy sentence 0.", "Hard sentence 0."))
    assert "n_validation" not in model.shunt_.calibration_  # δ given: nothing measured at fit
    model.distill(DOCS, X_val=DOCS[:2], references_val=REFS[:2])
    assert model.shunt_.calibration_["n_validation"] == 6  # the aligned parts of two documents
    assert model.shunt_.calibration_["quality"] == 100.0
    assert model.route(DOCS)["text"].tolist() == REFS


def test_a_distilled_memory_is_saved_and_loaded_with_what_it_remembered(tmp_path):
    from fakes import FakeOpenAIServer

    from datashunt.backends.generate.openai_chat import OpenAIChatGenerator
    from datashunt.io.persist import load, save
    from datashunt.small.memory import MemoryGenerator

    small, large = server_answers()
    with FakeOpenAIServer(small, sequence=True) as first, FakeOpenAIServer(large, sequence=True) as last:
        stages = [
            ("memory", MemoryGenerator()),
            ("small", OpenAIChatGenerator("tiny", base_url=first.base_url, instruction="Translate.")),
            ("large", OpenAIChatGenerator("big", base_url=last.base_url, instruction="Translate.")),
        ]
        three = ShuntGenerator(stages, thresholds=[0.99, 0.5], confidence="mean_proba")
        model = Segments(three).fit(["Easy sentence 0."], ["Leichter Satz 0."], DOCS, REFS).distill(DOCS)
        options = {name: {"model": m.model, "base_url": m.base_url} for name, m in stages[1:]}
        loaded = load(save(model, tmp_path / "m"), large_options=options)
        remembered = model.shunt_.learnable_.memory_.texts_.tolist()
        assert loaded.shunt_.learnable_.memory_.texts_.tolist() == remembered and len(remembered) == 4
        assert loaded.shunt_.distillation_ == model.shunt_.distillation_
        assert loaded.route(DOCS)["large_calls"].tolist() == [0, 0, 0]
