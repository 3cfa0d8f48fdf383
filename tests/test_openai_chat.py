import json
import re

import numpy as np
import pytest
from fakes import FakeOpenAIServer

from datashunt.backends.cache import CallCache
from datashunt.backends.openai_chat import OpenAIChatModel, label_logprobs
from datashunt.exceptions import ConfigError

LABELS = ["negative", "positive"]
ANSWERS = {
    "lovely": [("positive", -0.05), ("negative", -3.0), ("The", -5.0)],
    "dreadful": [(" Negative", -0.2), ("pos", -2.0)],
    "rambling": [("I", -0.1), ("The", -3.0)],
}


def test_probabilities_come_from_top_logprobs_over_http(monkeypatch):
    monkeypatch.setenv("TEST_KEY", "sk-secret-123")
    with FakeOpenAIServer(ANSWERS) as server:
        model = OpenAIChatModel("tiny", base_url=server.base_url, api_key_env="TEST_KEY", cache=False)
        result = model.predict_proba(["a lovely film", "a dreadful film"], LABELS)
    expected = np.exp([-3.0, -0.05]) / np.exp([-3.0, -0.05]).sum()
    np.testing.assert_allclose(result.proba[0], expected)
    assert result.proba[1].argmax() == 0
    assert result.prompt_tokens.tolist() == [42, 42]
    body = server.requests[0]["body"]
    assert body["logprobs"] is True and body["max_tokens"] == 1 and body["top_logprobs"] == 20
    assert {r["auth"] for r in server.requests} == {"Bearer sk-secret-123"}


def test_api_key_never_reaches_cache_or_params(monkeypatch, tmp_path):
    monkeypatch.setenv("TEST_KEY", "sk-secret-123")
    path = tmp_path / "calls.sqlite"
    with FakeOpenAIServer(ANSWERS) as server:
        model = OpenAIChatModel("tiny", base_url=server.base_url, api_key_env="TEST_KEY", cache=path)
        model.predict_proba(["a lovely film"], LABELS)
    assert "sk-secret" not in repr(model.get_params())
    CallCache(path)._conn.execute("PRAGMA wal_checkpoint(FULL)")
    for file in tmp_path.iterdir():
        assert b"sk-secret" not in file.read_bytes()


def test_answer_without_label_tokens_is_flagged():
    with FakeOpenAIServer(ANSWERS) as server:
        result = OpenAIChatModel("tiny", base_url=server.base_url, cache=False).predict_proba(
            ["a rambling film"], LABELS
        )
    assert not result.ok[0]
    assert result.error[0].startswith("off-label answer")


def test_server_errors_are_flagged_per_row_and_do_not_leak_the_key(monkeypatch):
    monkeypatch.setenv("TEST_KEY", "sk-secret-123")
    with FakeOpenAIServer(ANSWERS, status=500) as server:
        model = OpenAIChatModel("tiny", base_url=server.base_url, api_key_env="TEST_KEY", max_retries=0, cache=False)
        result = model.predict_proba(["a lovely film", "a dreadful film"], LABELS)
    assert not result.ok.any()
    assert all(e.startswith("call to 'tiny' failed: InternalServerError") for e in result.error)
    assert not any("sk-secret" in e for e in result.error)


def test_timeouts_are_flagged_per_row():
    with FakeOpenAIServer(ANSWERS, delay=1.0) as server:
        model = OpenAIChatModel("tiny", base_url=server.base_url, timeout=0.2, max_retries=0, cache=False)
        result = model.predict_proba(["a lovely film"], LABELS)
    assert "APITimeoutError" in result.error[0]


def test_endpoint_without_logprobs_is_flagged():
    with FakeOpenAIServer(ANSWERS, logprobs=False) as server:
        result = OpenAIChatModel("tiny", base_url=server.base_url, cache=False).predict_proba(["a lovely film"], LABELS)
    assert "returned no logprobs" in result.error[0]


def test_requests_run_concurrently_and_each_answer_is_cached(tmp_path):
    path = tmp_path / "calls.sqlite"
    texts = [f"a lovely film {i}" for i in range(16)]
    with FakeOpenAIServer(ANSWERS, delay=0.2) as server:
        model = OpenAIChatModel("tiny", base_url=server.base_url, max_concurrency=8, cache=path)
        import time

        start = time.perf_counter()
        result = model.predict_proba(texts, LABELS)
        elapsed = time.perf_counter() - start
        again = OpenAIChatModel("tiny", base_url=server.base_url, cache=path).predict_proba(texts, LABELS)
    assert result.ok.all() and elapsed < 16 * 0.2 / 2
    assert again.cached.all() and len(server.requests) == 16


def test_openai_without_key_says_which_variable(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="set the environment variable OPENAI_API_KEY"):
        OpenAIChatModel("gpt-4o-mini", cache=False).predict_proba(["x"], LABELS)


def test_label_matching_ignores_ambiguous_prefixes():
    logp = label_logprobs([("ne", -0.1), ("neu", -1.0), ("negative", -2.0)], ["negative", "neutral"])
    assert logp.tolist() == [-2.0, -1.0]


BROKEN = {
    "malformed": (b'{"id": "cmpl-1", "choices": [', "application/json"),
    "html": (b"<html><body><h1>502 Bad Gateway</h1></body></html>", "text/html"),
    "empty": (
        json.dumps({"id": "c", "object": "chat.completion", "created": 0, "model": "tiny", "choices": []}).encode(),
        "application/json",
    ),
}


@pytest.mark.parametrize(
    "kind, message",
    [
        ("malformed", "call to 'tiny' failed: JSONDecodeError"),
        (
            "html",
            "the endpoint answered with something that is not a chat completion: '<html><body><h1>502 Bad Gateway",
        ),
        ("empty", "the endpoint returned no choices for model 'tiny'"),
    ],
)
def test_garbage_responses_are_flagged_per_row_and_the_run_goes_on(kind, message):
    with FakeOpenAIServer(ANSWERS, raw=BROKEN) as server:
        model = OpenAIChatModel("tiny", base_url=server.base_url, max_retries=0, cache=False)
        result = model.predict_proba([f"a {kind} reply", "a lovely film"], LABELS)
    assert result.error[0].startswith(message)
    assert result.ok.tolist() == [False, True]


@pytest.mark.parametrize("logprob", [float("nan"), 0.7])
def test_impossible_logprobs_are_flagged_and_never_cached(tmp_path, logprob):
    path = tmp_path / "calls.sqlite"
    answers = {"odd": [("positive", logprob), ("negative", -2.0)]}
    with FakeOpenAIServer(answers) as server:
        model = OpenAIChatModel("tiny", base_url=server.base_url, cache=path)
        first = model.predict_proba(["an odd film"], LABELS)
        again = OpenAIChatModel("tiny", base_url=server.base_url, cache=path).predict_proba(["an odd film"], LABELS)
    assert "returned impossible logprobs" in first.error[0] and not first.ok[0]
    assert len(CallCache(path)) == 0 and not again.cached[0] and len(server.requests) == 2


def test_duplicate_items_are_asked_once_and_paid_once():
    texts = ["a lovely film", "a dreadful film"] * 12 + ["a lovely film"]
    with FakeOpenAIServer(ANSWERS) as server:
        model = OpenAIChatModel("tiny", base_url=server.base_url, cache=False, price={"per_call": 1.0})
        result = model.predict_proba(texts, LABELS)
    assert len(server.requests) == 2 and result.ok.all()
    assert result.cost.sum() == 2.0 and result.cached.sum() == 23
    np.testing.assert_allclose(result.proba[2], result.proba[0])


def test_a_text_longer_than_max_chars_is_flagged_not_sent():
    with FakeOpenAIServer(ANSWERS) as server:
        model = OpenAIChatModel("tiny", base_url=server.base_url, cache=False, max_chars=1000)
        result = model.predict_proba(["lovely " * 2_000_000, "a lovely film"], LABELS)
    assert (
        result.error[0] == "text of 14,000,000 characters is longer than this backend takes (max_chars=1,000); not sent"
    )
    assert len(server.requests) == 1 and result.ok.tolist() == [False, True]


@pytest.mark.parametrize(
    "params, message",
    [
        ({"timeout": "abc"}, "'timeout' parameter of OpenAIChatModel must be a float in the range (0.0, 3600.0]"),
        ({"api_key_env": "KEY; curl evil"}, "'api_key_env' parameter must name an environment variable"),
        ({"max_concurrency": True}, "the 'max_concurrency' parameter must be a number, got the boolean True"),
    ],
)
def test_bad_backend_settings_are_refused_before_any_call(params, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        OpenAIChatModel("tiny", base_url="http://127.0.0.1:9/v1", cache=False, **params).predict_proba(["x"], LABELS)


def test_impossible_usage_or_total_probability_is_flagged(monkeypatch):
    monkeypatch.setenv("TEST_KEY", "sk-secret-123")
    usage = {
        "id": "c",
        "object": "chat.completion",
        "created": 0,
        "model": "tiny",
        "choices": [
            {
                "index": 0,
                "finish_reason": "length",
                "message": {"role": "assistant", "content": "positive"},
                "logprobs": {
                    "content": [
                        {
                            "token": "positive",
                            "logprob": -0.1,
                            "bytes": None,
                            "top_logprobs": [{"token": "positive", "logprob": -0.1, "bytes": None}],
                        }
                    ]
                },
            }
        ],
        "usage": {"prompt_tokens": -(10**9), "completion_tokens": 1, "total_tokens": 1},
    }
    raw = {
        "negative usage": (json.dumps(usage).encode(), "application/json"),
        "proxy page": (b"<html>Authorization: Bearer sk-secret-123</html>", "text/html"),
    }
    answers = {"both": [("positive", 0.0), ("negative", 0.0)]}
    with FakeOpenAIServer(answers, raw=raw) as server:
        model = OpenAIChatModel("tiny", base_url=server.base_url, api_key_env="TEST_KEY", cache=False)
        result = model.predict_proba(["negative usage", "both labels certain", "a proxy page"], LABELS)
    assert result.error[0] == "the endpoint reported impossible token counts [-1000000000, 1] for model 'tiny'"
    assert "more than 1 in all" in result.error[1]
    assert "sk-secret" not in result.error[2] and "Bearer ***" in result.error[2]


def test_calls_work_inside_a_running_event_loop():
    import asyncio

    async def notebook_cell(model):
        return model.predict_proba(["a lovely film", "a dreadful film"], LABELS)

    with FakeOpenAIServer(ANSWERS) as server:
        result = asyncio.run(notebook_cell(OpenAIChatModel("tiny", base_url=server.base_url, cache=False)))
    assert result.ok.all() and result.proba.argmax(axis=1).tolist() == [1, 0]


def test_an_api_without_logprobs_can_state_its_confidence():
    answers = {"lovely": [("Positive 85", -0.1)], "dreadful": [("negative, 70%", -0.1)], "rambling": [("Hmm.", -0.1)]}
    with FakeOpenAIServer(answers, logprobs=False) as server:
        model = OpenAIChatModel("tiny", base_url=server.base_url, scoring="stated", cache=False)
        result = model.predict_proba(["a lovely film", "a dreadful film", "a rambling film"], LABELS)
    np.testing.assert_allclose(result.proba[:2], [[0.15, 0.85], [0.7, 0.3]])
    assert result.error[2] == "the stated-confidence answer 'Hmm.' names no label and confidence"
    body = server.requests[0]["body"]
    assert "logprobs" not in body and body["max_tokens"] == 16
    assert body["messages"][-1]["content"].endswith(
        "give your confidence that it is right as a whole number from 0 to 100, e.g.: positive 85"
    )
    assert model.describe().endswith("confidence stated by the model, not measured from log-probabilities")
    assert model.identity() != OpenAIChatModel("tiny", base_url=server.base_url).identity()  # cached apart


def test_an_api_without_logprobs_can_vote_by_self_consistency():
    answers = {
        "lovely": [(" positive", 0.0), ("Positive.", 0.0), ("negative", 0.0), ("positive", 0.0), ("Hmm", 0.0)],
        "rambling": [("Hmm", 0.0), ("I think", 0.0), ("neg", 0.0), ("no", 0.0), ("?", 0.0)],
    }
    with FakeOpenAIServer(answers, logprobs=False) as server:
        model = OpenAIChatModel(
            "tiny",
            base_url=server.base_url,
            scoring="sampled",
            samples=5,
            cache=False,
            min_label_mass=0.5,
            price={"per_million_output": 1e6},
        )
        result = model.predict_proba(["a lovely film", "a rambling film"], LABELS)
    np.testing.assert_allclose(result.proba[0], [0.25, 0.75])  # 3 of the 4 votes that name a label
    assert result.error[1].startswith("off-label answer: only 20.00% of the next-token probability")
    body = server.requests[0]["body"]
    assert body["n"] == 5 and body["temperature"] == 1.0 and "logprobs" not in body
    assert result.cost[0] == pytest.approx(5.0)  # every sample's output token is paid
    assert "votes of 5 samples at temperature 1.0 (self-consistency)" in model.describe()
    assert model.identity() != OpenAIChatModel("tiny", base_url=server.base_url, scoring="stated").identity()


def test_stated_confidence_is_asked_after_an_image_part():
    image = np.zeros((4, 4, 3), np.uint8)
    with FakeOpenAIServer({"image_url": [("positive 90", -0.1)]}, logprobs=False) as server:
        model = OpenAIChatModel("vision", base_url=server.base_url, scoring="stated", cache=False)
        result = model.predict_proba([image], LABELS, modality="image")
    assert result.ok.all() and result.proba[0, 1] == pytest.approx(0.9)
    parts = server.requests[0]["body"]["messages"][-1]["content"]
    assert [p["type"] for p in parts] == ["text", "image_url", "text"]
    assert parts[-1]["text"].endswith("e.g.: positive 85")


def test_sampled_scoring_without_any_sample_is_an_error():
    from datashunt.backends.openai_chat import sampled_logprobs
    from datashunt.exceptions import LargeModelError

    with pytest.raises(LargeModelError, match="returned no sampled answers"):
        sampled_logprobs([], LABELS)


@pytest.mark.parametrize("base_url", ["ftp://x", "localhost:8000/v1", "http://", "http://host:port/v1", "file:///etc"])
def test_a_base_url_that_is_not_an_http_endpoint_is_refused_before_any_call(base_url):
    from datashunt.backends.generate.openai_chat import OpenAIChatGenerator
    from datashunt.core.params import check_params

    with pytest.raises(
        ConfigError,
        match=re.escape(
            f"'base_url' parameter must be an http:// or https:// URL with "
            f"a host, such as http://127.0.0.1:8000/v1, got {base_url!r}"
        ),
    ):
        OpenAIChatModel("tiny", base_url=base_url, cache=False).predict_proba(["x"], LABELS)
    with pytest.raises(ConfigError, match="'base_url' parameter must be an http:// or https:// URL"):
        check_params(OpenAIChatGenerator("tiny", base_url=base_url))


def test_calibrating_on_an_endpoint_that_fails_every_call_is_refused(sentiment):
    from datashunt import Cascade, ShuntGenerator
    from datashunt.backends.generate.openai_chat import OpenAIChatGenerator
    from datashunt.estimators.shunt import ShuntClassifier
    from datashunt.exceptions import LargeModelError
    from datashunt.small import make_small

    texts, labels = sentiment
    with FakeOpenAIServer(ANSWERS, status=500) as server:
        large = OpenAIChatModel("tiny", base_url=server.base_url, max_retries=0, cache=False)
        first = r"\(the first: call to 'tiny' failed: InternalServerError"
        with pytest.raises(
            LargeModelError, match=r"all 40 calls to the large model on the validation data failed " + first
        ):
            ShuntClassifier(make_small("tfidf"), large, confidence_level=None).fit(texts[:200], labels[:200])
        with pytest.raises(
            LargeModelError, match=r"all 40 calls to stage 'llm' on the validation data failed " + first
        ):
            Cascade([("tfidf", make_small("tfidf")), ("llm", large)]).fit(texts[:200], labels[:200])
        writer = OpenAIChatGenerator("tiny", base_url=server.base_url, max_retries=0, cache=False)
        generator = ShuntGenerator([("a", writer), ("b", writer)])
        with pytest.raises(LargeModelError, match=r"all 8 calls to stage 'a' on the validation data failed " + first):
            generator.fit(texts[:40], labels[:40])
