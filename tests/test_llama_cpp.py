"""The real local backend on a tiny real model (SmolLM2-135M, installed by `datashunt setup`)."""

from pathlib import Path

import numpy as np
import pytest

from datashunt.exceptions import ModelFileError

pytest.importorskip("llama_cpp")
from datashunt.backends.llama_cpp import LlamaCppModel  # noqa: E402

TINY = "smollm2-135m"
LABELS = ["negative", "positive"]
TEXTS = ["A wonderful, moving film.", "Dull and far too long.", "I loved every minute of it."]


def installed_tiny():
    """The tests' cache folder is a fresh temporary one, so look where `datashunt setup` put the model."""
    home = Path.home() / ".cache" / "datashunt" / "models" / f"{TINY}.gguf"
    return home if home.is_file() else None


@pytest.fixture(scope="module")
def tiny_path():
    path = installed_tiny()
    if path is None:
        pytest.skip("run `datashunt setup` first (installs the tiny test model)")
    return path


def test_real_model_gives_a_distribution_over_labels(tiny_path):
    result = LlamaCppModel(str(tiny_path), cache=False).predict_proba(TEXTS, LABELS)
    assert result.ok.all(), result.error
    np.testing.assert_allclose(result.proba.sum(axis=1), 1.0)
    assert (result.prompt_tokens > 20).all()


def test_prefix_reuse_gives_the_same_answers(tiny_path):
    reused = LlamaCppModel(str(tiny_path), cache=False, reuse_prefix=True).predict_proba(TEXTS, LABELS)
    fresh = LlamaCppModel(str(tiny_path), cache=False, reuse_prefix=False).predict_proba(TEXTS, LABELS)
    np.testing.assert_allclose(reused.proba, fresh.proba, atol=0.02)


def test_answers_are_cached_on_disk(tiny_path, tmp_path):
    path = tmp_path / "calls.sqlite"
    LlamaCppModel(str(tiny_path), cache=path).predict_proba(TEXTS, LABELS)
    again = LlamaCppModel(str(tiny_path), cache=path)
    result = again.predict_proba(TEXTS, LABELS)
    assert result.cached.all()
    assert getattr(again, "_loaded", None) is None  # the model was never even loaded


def test_prompt_longer_than_context_is_flagged(tiny_path):
    result = LlamaCppModel(str(tiny_path), cache=False, n_ctx=64).predict_proba(["word " * 200], LABELS)
    assert "does not fit the context of 64" in result.error[0]


def test_missing_gguf_file_raises(tmp_path):
    with pytest.raises(ModelFileError, match="no GGUF file at"):
        LlamaCppModel(str(tmp_path / "absent.gguf"), cache=False).predict_proba(["x"], LABELS)


def test_file_that_is_not_gguf_raises(tmp_path):
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"PK\x03\x04 not a model")
    with pytest.raises(ModelFileError, match="not a GGUF file"):
        LlamaCppModel(str(bad), cache=False).predict_proba(["x"], LABELS)


def test_truncated_gguf_raises(tmp_path, tiny_path):
    bad = tmp_path / "truncated.gguf"
    with open(tiny_path, "rb") as src:
        bad.write_bytes(src.read(1 << 20))
    with pytest.raises(ModelFileError, match="could not load"):
        LlamaCppModel(str(bad), cache=False).predict_proba(["x"], LABELS)


def test_known_model_not_installed_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("DATASHUNT_CACHE_DIR", str(tmp_path))
    with pytest.raises(ModelFileError, match="datashunt setup --model qwen2.5-coder-0.5b"):
        LlamaCppModel("qwen2.5-coder-0.5b", cache=False).predict_proba(["x"], LABELS)


def test_pruned_prompts_on_the_real_model(tiny_path):
    labels = ["sport", "politics", "science"]
    model = LlamaCppModel(str(tiny_path), cache=False, prompt="What is this news headline about?", min_label_mass=0.0)
    result = model.predict_proba(
        ["Local team wins the cup final"] * 2,
        labels,
        hints=["Prior knowledge: sport with probability 0.90.", None],
        candidates=[None, [1, 2]],
    )
    assert result.ok.all(), result.error
    assert result.proba[1, 0] == 0.0 and result.proba[1, 1:].sum() == pytest.approx(1.0)
    assert result.proba[0].min() > 0


def test_whole_labels_tell_apart_labels_that_share_a_first_token(tiny_path):
    from datashunt.exceptions import ConfigError

    labels = ["very good", "very bad"]
    with pytest.raises(ConfigError, match="label_scoring='whole'"):
        LlamaCppModel(str(tiny_path), cache=False).predict_proba(TEXTS[:1], labels)
    whole = LlamaCppModel(str(tiny_path), cache=False, label_scoring="whole")
    result = whole.predict_proba(TEXTS, labels)
    assert result.ok.all(), result.error
    np.testing.assert_allclose(result.proba.sum(axis=1), 1.0)
    assert not np.allclose(result.proba[0], 0.5)  # the second token decides, not a tie
    again = whole.predict_proba(TEXTS, labels)  # rewinding after each label leaves the next prompt intact
    np.testing.assert_allclose(again.proba, result.proba, atol=1e-6)


def test_whole_labels_nearly_agree_with_first_tokens_where_labels_are_one_token(tiny_path):
    """Only rare surface forms (upper case) take more than one token; there the whole form is
    less probable than its first token alone, so the two agree closely but not exactly. Both are
    evaluated one prompt at a time: batches round differently (tested on their own below)."""
    first = LlamaCppModel(str(tiny_path), cache=False, batch_size=1).predict_proba(TEXTS, LABELS)
    whole = LlamaCppModel(str(tiny_path), cache=False, label_scoring="whole").predict_proba(TEXTS, LABELS)
    np.testing.assert_allclose(whole.proba, first.proba, atol=0.01)
    assert (whole.proba.argmax(axis=1) == first.proba.argmax(axis=1)).all()


def test_greedy_generation_keeps_each_chosen_tokens_logprob(tiny_path):
    from scipy.special import log_softmax

    from datashunt.backends.generate.llama_cpp import LlamaCppGenerator

    gen = LlamaCppGenerator(str(tiny_path), instruction="Repeat the text.", max_new_tokens=6, cache=False)
    got = gen.generate(["free software"])
    assert got.ok.all(), got.flag
    lp = got.token_logprob[0]
    assert 1 <= len(lp) <= 6 and (lp <= 0).all() and got.completion_tokens[0] >= len(lp)
    llm = gen._llm()  # the same tokens, scored again from scratch: each is the argmax and has that logprob
    prompt = llm.tokenize(
        gen._formatter(messages=gen._messages("free software", None, "Text")).prompt.encode(),
        add_bos=False,
        special=True,
    )
    llm.reset()
    llm.eval(prompt)
    for expected in lp:
        logits = np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(llm.n_vocab(),)).astype(np.float64)
        token = int(np.argmax(logits))
        np.testing.assert_allclose(log_softmax(logits)[token], expected, atol=1e-4)
        llm.eval([token])


def test_generation_prompt_that_leaves_no_room_is_flagged(tiny_path):
    from datashunt.backends.generate.llama_cpp import LlamaCppGenerator

    got = LlamaCppGenerator(str(tiny_path), n_ctx=160, max_new_tokens=32, cache=False).generate(["word " * 120, "ok"])
    assert got.text[0] is None and "leaves less than max_new_tokens=32 of the context n_ctx=160" in got.flag[0]
    assert got.ok[1]


MORE = TEXTS + [
    "Not my kind of movie.",
    "A masterpiece of quiet grace.",
    "The plot made no sense at all, and the actors seemed bored.",
    "Funny.",
    "I walked out halfway through.",
]


def test_prompts_scored_in_batches_answer_like_one_at_a_time(tiny_path):
    one = LlamaCppModel(str(tiny_path), cache=False, batch_size=1).predict_proba(MORE, LABELS)
    batched = LlamaCppModel(str(tiny_path), cache=False, batch_size=4).predict_proba(MORE, LABELS)
    assert batched.ok.all(), batched.error
    np.testing.assert_allclose(batched.proba, one.proba, atol=0.05)  # rounding of a different evaluation order
    assert (batched.proba.argmax(axis=1) == one.proba.argmax(axis=1)).all()
    np.testing.assert_array_equal(batched.prompt_tokens, one.prompt_tokens)


def test_a_prompt_too_long_is_flagged_and_its_batch_neighbours_answered(tiny_path, monkeypatch):
    from datashunt.backends import llama_cpp as backend

    sizes, evaluate = [], backend.Batched.logprobs
    monkeypatch.setattr(backend.Batched, "logprobs", lambda self, p: sizes.append(len(p)) or evaluate(self, p))
    long = [f"{i}. {MORE[5]} Then it ended, and I was glad." for i in range(4)]  # no shared start
    items = long[:2] + ["word " * 200] + long[2:]
    result = LlamaCppModel(str(tiny_path), cache=False, n_ctx=128, batch_size=4).predict_proba(items, LABELS)
    assert "does not fit the context of 128" in result.error[2]
    assert result.ok[[0, 1, 3, 4]].all() and sizes == [2, 2]  # too long for 128 tokens together: split in two


def test_a_failed_batch_flags_its_calls_and_the_next_batch_starts_clean(tiny_path, monkeypatch):
    from datashunt.backends import llama_cpp as backend

    model = LlamaCppModel(str(tiny_path), cache=False, batch_size=4)
    original, failures = backend.Batched._decode, iter([True])

    def flaky(self, parts):
        if next(failures, False):
            raise RuntimeError("llama_decode returned 1")
        return original(self, parts)

    monkeypatch.setattr(backend.Batched, "_decode", flaky)
    result = model.predict_proba(MORE, LABELS)
    assert all("failed to evaluate a batch of prompts: llama_decode returned 1" in e for e in result.error[:4])
    assert result.ok[4:].all()
    clean = LlamaCppModel(str(tiny_path), cache=False, batch_size=1).predict_proba(MORE[4:], LABELS)
    np.testing.assert_allclose(result.proba[4:], clean.proba, atol=0.05)
