"""The HTTP service on loopback: a real uvicorn server, the official openai client, fake upstreams."""

import asyncio
import json
import logging
import socket
import time
import uuid

import httpx
import numpy as np
import openai
import pandas as pd
import pytest
from fakes import EndlessStreamServer, FakeOpenAIServer

from datashunt import Segments, ShuntGenerator, Subtasks
from datashunt.backends.generate.openai_chat import OpenAIChatGenerator
from datashunt.backends.replay import ReplayModel
from datashunt.estimators.shunt import ShuntClassifier
from datashunt.serve.app import CHAT, CLASSIFY, DOCUMENTS, HEALTHZ, METRICS, create_app, running
from datashunt.serve.proxy import ROUTE_HEADER, Upstream
from datashunt.serve.settings import ServeSettings, hash_key
from datashunt.small import make_small

KEY = "sk-test-0123456789"


@pytest.fixture(scope="module")
def shunt(sentiment):
    texts, labels = sentiment
    replay = ReplayModel(pd.DataFrame({"id": texts, "prediction": labels}), price={"per_call": 0.01})
    return ShuntClassifier(make_small("tfidf"), replay, threshold=0.8).fit(texts[:300], labels[:300])


class Slow:
    """The shunt, taking ``seconds`` longer per call (a busy model)."""

    def __init__(self, shunt, seconds):
        self.shunt, self.seconds = shunt, seconds

    def route(self, items):
        time.sleep(self.seconds)
        return self.shunt.route(items)


def test_classify_answers_each_item_with_route_label_and_flag(shunt, sentiment):
    texts = sentiment[0][300:340] + ["", 42]
    with running(create_app(shunt, name="reviews")) as url:
        body = httpx.post(url + "/v1/classify", json={"items": texts}).json()
    direct = shunt.route(np.array(texts[:40], dtype=object))
    results = body["results"]
    assert body["model"] == "reviews" and len(results) == 42
    assert [r["label"] for r in results[:40]] == direct["label"].tolist()
    assert [r["route"] for r in results[:40]] == direct["route"].tolist()
    assert results[40]["route"] == "invalid" and results[40]["flag"] == "blank text" and results[40]["label"] is None
    assert results[41]["route"] == "invalid" and "int" in results[41]["flag"]
    assert body["usage"]["cost"] == pytest.approx(direct["cost"].sum())
    assert body["usage"]["large_share"] == pytest.approx((direct["route"] == "large").sum() / 42)


@pytest.mark.parametrize("micro_batching", [True, False])
def test_concurrent_requests_get_their_own_rows(shunt, sentiment, micro_batching):
    texts = sentiment[0][300:]
    requests = [texts[i : i + 8] for i in range(0, 160, 8)]
    settings = ServeSettings(micro_batching=micro_batching)

    async def fire(url):
        async with httpx.AsyncClient(base_url=url) as client:
            answers = await asyncio.gather(*[client.post("/v1/classify", json={"items": r}) for r in requests])
            return [a.json()["results"] for a in answers], (await client.get("/metrics")).text

    with running(create_app(Slow(shunt, 0.05), settings)) as url:
        answers, metrics = asyncio.run(fire(url))
    direct = shunt.route(np.array(texts[:160], dtype=object))["label"].tolist()
    assert [r["label"] for answer in answers for r in answer] == direct
    value = {line.split()[0]: float(line.split()[1]) for line in metrics.splitlines() if line[:1] != "#"}
    mean_batch = value["datashunt_model_batch_items_sum"] / value["datashunt_model_batch_items_count"]
    if micro_batching:  # requests that queued while the model was busy were answered together
        assert mean_batch > 8
    else:
        assert mean_batch == 8


def test_api_keys(shunt):
    settings = ServeSettings(api_key_sha256=[hash_key(KEY)])
    with running(create_app(shunt, settings)) as url:
        missing = httpx.post(url + "/v1/classify", json={"items": ["fine"]})
        wrong = httpx.post(url + "/v1/classify", json={"items": ["fine"]}, headers={"Authorization": "Bearer nope"})
        right = httpx.post(url + "/v1/classify", json={"items": ["fine"]}, headers={"Authorization": f"Bearer {KEY}"})
        health = httpx.get(url + "/healthz")
        metrics = httpx.get(url + "/metrics").text
    for refused in (missing, wrong):
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
        assert refused.json()["error"]["message"] == (
            "a valid API key is needed: send it as 'Authorization: Bearer <key>'"
        )
    assert right.status_code == 200 and health.status_code == 200
    assert 'status="401"} 2.0' in metrics and KEY not in metrics


def test_limits_and_malformed_bodies(shunt):
    settings = ServeSettings(max_body_bytes=2000, max_items=5)
    with running(create_app(shunt, settings)) as url:

        def post(**kwargs):
            answer = httpx.post(url + "/v1/classify", **kwargs)
            return answer.status_code, answer.json()["error"]["message"]

        assert post(json={"items": ["x" * 3000]}) == (
            413,
            "the body is 3,014 bytes; this service takes at most 2,000 (max_body_bytes)",
        )
        assert post(json={"items": ["a"] * 6}) == (
            413,
            "6 items is more than this service takes in one request (5, max_items)",
        )
        status, message = post(content=b'{"items": ["a",', headers={"Content-Type": "application/json"})
        assert status == 422 and message.startswith("the body is not valid JSON: Expecting value")
        assert post(content=b'{"items": "\xff"}') == (422, "the body is not UTF-8 (invalid start byte at byte 11)")
        assert post(json={"texts": ["a"]}) == (422, "the body must be a JSON object whose 'items' is a list of texts")
        assert post(json={"items": []}) == (422, "'items' is empty: send at least one text")


def test_backpressure_and_timeout(shunt):
    settings = ServeSettings(max_concurrency=1, max_pending=0, micro_batching=False, retry_after=2)

    async def two(url):
        async with httpx.AsyncClient(base_url=url) as client:
            return await asyncio.gather(*[client.post("/v1/classify", json={"items": ["fine"]}) for _ in range(2)])

    with running(create_app(Slow(shunt, 0.5), settings)) as url:
        answers = sorted(asyncio.run(two(url)), key=lambda a: a.status_code)
    assert [a.status_code for a in answers] == [200, 503] and answers[1].headers["retry-after"] == "2"
    assert answers[1].json()["error"]["message"] == (
        "the service is busy (1 requests in progress or waiting, the most it takes); retry after 2 s"
    )
    with running(create_app(Slow(shunt, 1.0), ServeSettings(request_timeout=0.2))) as url:
        late = httpx.post(url + "/v1/classify", json={"items": ["fine"]})
        assert late.status_code == 504
        assert late.json()["error"]["message"] == "the request took longer than 0.2 s (request_timeout)"
        assert httpx.get(url + "/readyz").json()["status"] == "ready"


class Broken:
    def route(self, items):
        raise RuntimeError("out of memory")


@pytest.mark.parametrize("micro_batching", [True, False])
def test_a_failing_model_is_a_500_with_the_reason_and_the_service_stays_up(shunt, micro_batching):
    with running(create_app(Broken(), ServeSettings(micro_batching=micro_batching))) as url:
        failed = httpx.post(url + "/v1/classify", json={"items": ["fine"]})
        assert failed.status_code == 500
        assert failed.json()["error"]["message"] == "the model failed on this batch: RuntimeError: out of memory"
        assert httpx.get(url + "/healthz").status_code == 200


def test_metrics_count_requests_routes_and_cost(shunt, sentiment):
    with running(create_app(shunt)) as url:
        body = httpx.post(url + "/v1/classify", json={"items": sentiment[0][300:350]}).json()
        metrics = httpx.get(url + "/metrics").text
    large = sum(r["route"] == "large" for r in body["results"])
    assert 'datashunt_requests_total{endpoint="/v1/classify",status="200"} 1.0' in metrics
    assert f'datashunt_routed_items_total{{endpoint="/v1/classify",route="large"}} {large:.1f}' in metrics
    assert f'datashunt_large_share{{endpoint="/v1/classify"}} {large / 50}' in metrics
    value = {line.split()[0]: float(line.split()[1]) for line in metrics.splitlines() if line[:1] != "#"}
    assert value["datashunt_cost_total"] == pytest.approx(body["usage"]["cost"]) and body["usage"]["cost"] > 0
    assert 'datashunt_request_seconds_bucket{endpoint="/v1/classify",le="60.0"} 1.0' in metrics


def test_subtasks_are_served_with_a_route_per_subtask_and_counted_per_call():
    from fakes import FakeLargeModel
    from test_subtasks import packages

    texts, labels, _ = packages()
    faces = []
    for name, threshold in (("section", 0.0), ("interface", 1.1)):  # the section settled, the interface asked
        large = FakeLargeModel(dict(zip(texts, labels[name])), cache=True, fail=tuple(texts[250:253]))
        faces.append((name, ShuntClassifier(make_small("tfidf"), large, threshold=threshold)))
    model = Subtasks(faces).fit(texts[:250], labels[:250])
    items = texts[250:260] + [""]
    with running(create_app(model, name="packages")) as url:
        first = httpx.post(url + "/v1/classify", json={"items": items}).json()
        again = httpx.post(url + "/v1/classify", json={"items": items}).json()
        metrics = httpx.get(url + "/metrics").text
    rows = first["results"]
    assert [r["interface"] for r in rows[3:10]] == labels["interface"][253:260].tolist()
    assert {r["route_section"] for r in rows[:10]} == {"small"} and {r["route"] for r in rows[:10]} == {"large"}
    assert [r["route_interface"] for r in rows[:4]] == ["fallback"] * 3 + ["large"]
    assert "interface: large: simulated time-out" in rows[0]["flag"] and rows[10]["route"] == "invalid"
    assert [r["cached_calls"] for r in again["results"][:10]] == [0] * 3 + [1] * 7
    assert first["usage"]["large_share"] == pytest.approx(10 / 11)
    value = {line.split()[0]: float(line.split()[1]) for line in metrics.splitlines() if line[:1] != "#"}
    assert value["datashunt_cache_hits_total"] == 7 and value["datashunt_upstream_errors_total"] == 6
    assert value['datashunt_routed_items_total{endpoint="/v1/classify",route="large"}'] == 20


def test_segments_are_served_on_documents_with_every_call_counted():
    from test_segments import DOCS, REFS, shunt

    model = Segments(shunt(fail=("Hard sentence 0.",), cache=True)).fit(DOCS, REFS)
    with running(create_app(model, name="translate")) as url:
        ready = httpx.get(url + "/readyz").json()
        first = httpx.post(url + DOCUMENTS, json={"items": DOCS + [None]}).json()
        again = httpx.post(url + DOCUMENTS, json={"items": DOCS[1:2]}).json()
        wrong = httpx.post(url + CLASSIFY, json={"items": DOCS})
        metrics = httpx.get(url + "/metrics").text
    assert ready["task"] == "documents"
    rows = first["results"]
    assert [r["text"] for r in rows[1:]] == REFS[1:] + [None]
    assert rows[0]["text"] == "Leichter Satz 0. falsch\nLeichter Satz 1." and "upstream error 500" in rows[0]["flag"]
    assert [r["routes"] for r in rows[:2]] == [["small", "fallback", "small"], ["large", "small", "large"]]
    assert [r["route"] for r in rows] == ["large", "large", "small", "invalid"]
    assert [r["large_calls"] for r in rows] == [1, 1, 0, 0] and [r["cached_calls"] for r in rows] == [0] * 4
    assert again["results"][0]["cached_calls"] == 1 and again["results"][0]["text"] == REFS[1]
    assert first["usage"] == {"items": 4, "cost": 1.0, "large_share": 0.5}  # the failed call paid nothing
    assert wrong.status_code == 404 and "answers documents part by part: use /v1/documents" in wrong.text
    value = {line.split()[0]: float(line.split()[1]) for line in metrics.splitlines() if line[:1] != "#"}
    assert value["datashunt_cache_hits_total"] == 1 and value["datashunt_upstream_errors_total"] == 1
    assert value['datashunt_routed_items_total{endpoint="/v1/documents",route="large"}'] == 3
    assert value['datashunt_large_share{endpoint="/v1/documents"}'] == 3 / 5


def test_documents_beyond_max_parts_are_a_413_and_a_failed_joint_call_is_an_upstream_error():
    from test_segments import DOCS, REFS, shunt

    model = Segments(shunt()).fit(DOCS, REFS)
    model.shunt_.stages_[-1][1].fail_joint = True  # the joint call errs; the parts, asked one by one, do not
    with running(create_app(model, ServeSettings(max_parts=5), name="translate")) as url:
        big = httpx.post(url + DOCUMENTS, json={"items": DOCS})  # 8 parts
        answered = httpx.post(url + DOCUMENTS, json={"items": DOCS[1:2]}).json()
        metrics = httpx.get(url + "/metrics").text
    assert big.status_code == 413 and "cut into 8 parts, more than this service takes" in big.text
    assert answered["results"][0]["text"] == REFS[1] and answered["results"][0]["failed_calls"] == 1
    value = {line.split()[0]: float(line.split()[1]) for line in metrics.splitlines() if line[:1] != "#"}
    assert value["datashunt_upstream_errors_total"] == 1


# -- the OpenAI-compatible routing proxy ------------------------------------------------------
SURE = [("Bonjour", -0.01), (" le", -0.02), (" monde", -0.01)]
UNSURE = [("Je", -1.5), (" sais", -2.0), (" pas", -1.2)]


@pytest.fixture
def proxy(tmp_path):
    with (
        FakeOpenAIServer({"easy": SURE, "hard": UNSURE}, sequence=True) as cheap,
        FakeOpenAIServer({"": [("Grande", -0.1), (" réponse", -0.1)]}, sequence=True) as big,
    ):
        stages = [
            ("cheap", OpenAIChatGenerator("small", base_url=cheap.base_url, cache=False)),
            ("big", OpenAIChatGenerator("big", base_url=big.base_url, cache=False)),
        ]
        shunt = ShuntGenerator(stages, thresholds=[0.8]).fit(["a", "b"] * 2, ["x", "y"] * 2)
        upstream = Upstream(big.base_url, "big-model", api_key_env="UPSTREAM_KEY")
        yield shunt, upstream, cheap, big


def test_openai_client_through_the_proxy(proxy, monkeypatch):
    shunt, upstream, cheap, big = proxy
    monkeypatch.setenv("UPSTREAM_KEY", "sk-upstream-secret")
    with running(create_app(shunt, name="shunt", upstream=upstream)) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        assert [m.id for m in client.models.list()] == ["shunt"]
        easy = client.chat.completions.with_raw_response.create(
            model="shunt", messages=[{"role": "user", "content": "an easy one"}]
        )
        assert easy.headers["x-datashunt-route"] == "small"
        answer = easy.parse()
        assert answer.choices[0].message.content == "Bonjour le monde"
        assert answer.model_extra["datashunt"]["route"] == "small" and answer.usage.prompt_tokens == 42
        hard = client.chat.completions.with_raw_response.create(
            model="shunt", messages=[{"role": "user", "content": "a hard one"}]
        )
        assert hard.headers["x-datashunt-route"] == "large"
        assert hard.parse().choices[0].message.content == "Grande réponse"
        assert hard.parse().model_extra["datashunt"]["confidence"] == pytest.approx(np.exp([-1.5, -2, -1.2]).mean())
        for content, route, text in [("easy", "small", "Bonjour le monde"), ("hard", "large", "Grande réponse")]:
            raw = client.chat.completions.with_raw_response.create(
                model="shunt", stream=True, messages=[{"role": "user", "content": content}]
            )
            assert raw.headers["x-datashunt-route"] == route
            assert "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices) == text
        metrics = httpx.get(url + "/metrics").text
    assert [r["body"]["model"] for r in big.requests] == ["big-model", "big-model"]  # only the unsure two
    assert big.requests[0]["auth"] == "Bearer sk-upstream-secret" and len(cheap.requests) == 4
    assert 'datashunt_routed_items_total{endpoint="/v1/chat/completions",route="large"} 2.0' in metrics
    assert "sk-upstream-secret" not in metrics


def test_proxy_upstream_failure_and_bad_requests(proxy, monkeypatch):
    shunt, upstream, cheap, big = proxy
    monkeypatch.setenv("UPSTREAM_KEY", "sk-upstream-secret")
    big.status = 500
    with running(create_app(shunt, upstream=upstream)) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        with pytest.raises(openai.APIStatusError) as failed:
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hard"}])
        assert failed.value.status_code == 502
        assert failed.value.response.json()["error"]["message"].startswith("the upstream answered 500: ")
        bad = httpx.post(url + "/v1/chat/completions", json={"messages": [{"content": "hi"}]})
        assert bad.status_code == 422
        assert bad.json()["error"]["message"] == "messages[0] must be an object with a 'role' string and a 'content'"
        assert httpx.post(url + "/v1/classify", json={"items": ["x"]}).status_code == 404
        assert "datashunt_upstream_errors_total 1.0" in httpx.get(url + "/metrics").text
    with running(create_app(shunt, upstream=Upstream("http://127.0.0.1:9/v1", "m"))) as url:
        down = httpx.post(url + "/v1/chat/completions", json={"messages": [{"role": "user", "content": "hard"}]})
        assert down.status_code == 502 and "could not be reached" in down.json()["error"]["message"]
    with running(create_app(shunt)) as url:
        assert httpx.get(url + "/readyz").status_code == 503


def test_the_serve_command_starts_a_real_server(tmp_path, sentiment):
    """``datashunt serve`` in a subprocess, with the large model's location from the config."""
    import socket
    import subprocess
    import sys
    from pathlib import Path

    from datashunt.io.persist import save

    texts, labels = sentiment
    pd.DataFrame({"id": texts, "prediction": labels}).to_csv(tmp_path / "answers.csv", index=False)
    shunt = ShuntClassifier(make_small("tfidf"), ReplayModel(str(tmp_path / "answers.csv")), threshold=0.8)
    save(shunt.fit(texts[:300], labels[:300]), tmp_path / "model")
    (tmp_path / "run.toml").write_text(
        f'[large]\nbackend = "replay"\ntable = "{tmp_path / "answers.csv"}"\n[serve]\nmax_items = 3\n'
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [
        str(Path(sys.executable).parent / "datashunt"),
        "serve",
        str(tmp_path / "model"),
        "--config",
        str(tmp_path / "run.toml"),
        "--port",
        str(port),
    ]
    refused = subprocess.run(command + ["--host", "0.0.0.0"], capture_output=True, text=True)
    assert refused.returncode == 2 and "refusing to serve on 0.0.0.0 without API keys" in refused.stdout
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                if httpx.get(url + "/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        answer = httpx.post(url + "/v1/classify", json={"items": texts[300:303]})
        assert answer.status_code == 200 and len(answer.json()["results"]) == 3
        assert httpx.post(url + "/v1/classify", json={"items": texts[:4]}).status_code == 413  # [serve] max_items
    finally:
        server.terminate()
        server.wait(10)


@pytest.mark.slow
@pytest.mark.parametrize("threshold, route", [(0.0, "small"), (1.01, "large")])
def test_a_local_gguf_model_as_the_cheap_stage(threshold, route):
    """SmolLM2-135M through llama.cpp answers what clears δ; the rest goes to the upstream."""
    from pathlib import Path

    from datashunt.backends.generate.llama_cpp import LlamaCppGenerator

    path = Path.home() / ".cache" / "datashunt" / "models" / "smollm2-135m.gguf"
    if not path.is_file():
        pytest.skip("run `datashunt setup` first (installs the tiny test model)")
    with FakeOpenAIServer({"": [("Upstream", -0.1)]}, sequence=True) as big:
        stages = [
            ("local", LlamaCppGenerator(str(path), max_new_tokens=6, cache=False)),
            ("big", OpenAIChatGenerator("big", base_url=big.base_url, cache=False)),
        ]
        shunt = ShuntGenerator(stages, thresholds=[threshold]).fit(["a", "b"] * 2, ["x", "y"] * 2)
        with running(create_app(shunt, upstream=Upstream(big.base_url, "big"))) as url:
            client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
            raw = client.chat.completions.with_raw_response.create(
                model="m", stream=True, messages=[{"role": "user", "content": "Say hello."}]
            )
            text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    assert raw.headers["x-datashunt-route"] == route and text.strip()
    assert (text == "Upstream") == (route == "large") and len(big.requests) == (route == "large")


def test_settings_and_upstream_refuse_bad_values(monkeypatch):
    from datashunt.exceptions import ConfigError

    with pytest.raises(ConfigError, match="api_key_sha256 must hold SHA-256 hex digests .*; 1 do not"):
        ServeSettings(api_key_sha256=["my-plain-key"])
    with pytest.raises(ConfigError, match="max_items must be a whole number of at least 1, got 0"):
        ServeSettings(max_items=0)
    with pytest.raises(ConfigError, match="request_timeout must be a positive number of seconds, got -1"):
        ServeSettings(request_timeout=-1)
    with pytest.raises(ConfigError, match="body_timeout must be a positive number of seconds, got 0"):
        ServeSettings(body_timeout=0)
    with pytest.raises(ConfigError, match="max_connections must be a whole number of at least 1, got 0"):
        ServeSettings(max_connections=0)
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['port'\] in \[serve\]"):
        ServeSettings.from_sources({"port": 80})
    monkeypatch.setenv("DATASHUNT_API_KEY_SHA256", f" {hash_key('a')} ,{hash_key('b')}")
    both = ServeSettings.from_sources({"api_key_sha256": [hash_key("c")]}, max_items=None)
    assert all(both.accepts(k) for k in "abc") and not both.accepts("d") and both.max_items == 256
    with pytest.raises(ConfigError, match="the upstream base_url must start with http:// or https://"):
        Upstream("file:///etc/passwd", "m")
    with pytest.raises(ConfigError, match="api_key_env must name an environment variable"):
        Upstream("http://127.0.0.1:1/v1", "m", api_key_env="A B")


# -- reliability: clear refusals, bounded resources, exact counts -----------------------------
def strict_json(text: str):
    """JSON as the standard has it: NaN and Infinity are not numbers."""

    def refuse(constant):
        raise AssertionError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def connect(url: str, data: bytes = b"") -> socket.socket:
    """A raw connection to the service, having sent ``data``."""
    sock = socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])))
    sock.sendall(data)
    return sock


def answer_on(sock: socket.socket, timeout: float = 10.0) -> tuple[int, bytes]:
    """The status and body the service sends on ``sock`` before closing it."""
    sock.settimeout(timeout)
    data = b""
    with sock:
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


class Odd:
    """The shunt, with an infinite confidence on the first item and NaN on the second."""

    def __init__(self, shunt):
        self.shunt = shunt

    def route(self, items):
        table = self.shunt.route(items)
        table.loc[0, "confidence_small"], table.loc[1, "confidence_small"] = np.inf, np.nan
        return table


def test_classify_writes_non_finite_numbers_as_null(shunt):
    with running(create_app(Odd(shunt))) as url:
        answer = httpx.post(url + CLASSIFY, json={"items": ["great movie", "awful movie", "fine"]})
    assert answer.status_code == 200
    results = strict_json(answer.text)["results"]
    assert [r["confidence_small"] for r in results[:2]] == [None, None] and 0 <= results[2]["confidence_small"] <= 1


def test_proxy_infinite_threshold_and_nan_upstream_numbers_answer_200(proxy):
    shunt, upstream, cheap, big = proxy
    always = ShuntGenerator(shunt.stages, thresholds=[float("inf")]).fit(["a", "b"] * 2, ["x", "y"] * 2)
    big.raw["nan please"] = (
        b'{"id": "c", "object": "chat.completion", "created": 0, "model": "m", "choices": [], '
        b'"usage": {"prompt_tokens": NaN, "completion_tokens": Infinity}}',
        "application/json",
    )
    with running(create_app(always, upstream=upstream)) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        easy = client.chat.completions.with_raw_response.create(
            model="m", messages=[{"role": "user", "content": "an easy one"}]
        )
        odd = httpx.post(url + CHAT, json={"messages": [{"role": "user", "content": "nan please"}]})
    assert easy.http_response.status_code == 200 and easy.headers[ROUTE_HEADER] == "large"
    info = strict_json(easy.http_response.text)["datashunt"]
    assert info["threshold"] is None and info["confidence"] == pytest.approx(np.exp([-0.01, -0.02, -0.01]).mean())
    assert easy.parse().choices[0].message.content == "Grande réponse"
    assert odd.status_code == 200
    assert strict_json(odd.text)["usage"] == {"prompt_tokens": None, "completion_tokens": None}
    assert len(big.requests) == 2  # each paid call answered


def test_slow_bodies_hold_no_place_and_are_refused_with_408(shunt):
    settings = ServeSettings(max_concurrency=2, max_pending=0, body_timeout=2.0)
    head = b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    with running(create_app(shunt, settings)) as url:
        slow = [connect(url, head + b'{"items"') for _ in range(20)]
        time.sleep(0.3)  # every slow request is waiting for the rest of its body
        start = time.perf_counter()
        normal = [httpx.post(url + CLASSIFY, json={"items": ["fine"]}).status_code for _ in range(10)]
        took = time.perf_counter() - start
        refused = [answer_on(sock) for sock in slow]
        waited = time.perf_counter() - start
    assert normal == [200] * 10 and took < 1.5
    assert {status for status, _ in refused} == {408} and waited < 4.0
    assert strict_json(refused[0][1])["error"]["message"] == (
        "the body did not arrive within 2 s (body_timeout; 8 bytes came); send the whole body at once"
    )


def test_uvicorn_limits_bound_headers_connections_and_idle_keep_alive(shunt):
    settings = ServeSettings(max_connections=4, max_header_bytes=2048, keep_alive_timeout=1)
    with running(create_app(shunt, settings)) as url:
        endless_header = connect(url, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"x" * 4096)
        assert answer_on(endless_header)[0] == 400  # refused before the header ends
        idle = [connect(url) for _ in range(4)]
        crowded = httpx.get(url + HEALTHZ)
        for sock in idle:
            sock.close()
        time.sleep(0.2)
        kept = connect(url, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        start = time.perf_counter()
        status, _ = answer_on(kept)  # answered, then closed once idle for keep_alive_timeout
        idle_for = time.perf_counter() - start
    assert crowded.status_code == 503 and crowded.text == "Service Unavailable"
    assert status == 200 and 0.8 < idle_for < 3.0


def test_metrics_label_routes_by_template_and_unmatched_paths_as_other(shunt):
    with running(create_app(shunt)) as url, httpx.Client(base_url=url) as client:
        for _ in range(300):
            assert client.get(f"/{uuid.uuid4().hex}/{uuid.uuid4().hex}").status_code == 404
        client.post(CLASSIFY, json={"items": ["fine"]})
        client.get(CLASSIFY)
        metrics = client.get(METRICS).text
    series = sorted(line for line in metrics.splitlines() if line.startswith("datashunt_requests_total{"))
    assert series == [
        'datashunt_requests_total{endpoint="/v1/classify",status="200"} 1.0',
        'datashunt_requests_total{endpoint="/v1/classify",status="405"} 1.0',
        'datashunt_requests_total{endpoint="other",status="404"} 300.0',
    ]
    assert sum(line.startswith("datashunt_request_seconds_count{") for line in metrics.splitlines()) == 2


def test_deep_json_is_a_400_and_the_service_keeps_answering(shunt):
    settings = ServeSettings(max_body_bytes=1 << 20)
    with running(create_app(shunt, settings)) as url, httpx.Client(base_url=url) as client:
        deep = client.post(CLASSIFY, content=b"[" * 400_000 + b"]" * 400_000)
        nested = client.post(CLASSIFY, json={"items": [json.loads("[" * 80 + "]" * 80)]})
        after = client.post(CLASSIFY, json={"items": ["fine"]})
        chunked = client.post(CLASSIFY, content=iter([b'{"items": ["' + b"x" * 600_000, b"x" * 600_000 + b'"]}']))
        fresh = httpx.post(url + CLASSIFY, json={"items": ["fine"]})
    message = "the JSON body nests deeper than 64 levels, the most this service reads; send a flatter body"
    for refused in (deep, nested):
        assert refused.status_code == 400 and refused.json()["error"]["message"] == message
    assert after.status_code == 200 and fresh.status_code == 200
    assert "content-length" not in chunked.request.headers and chunked.status_code == 413
    assert chunked.json()["error"]["message"] == "the body is over 1,048,576 bytes (max_body_bytes)"


def test_proxy_content_parts_are_joined_and_other_content_is_refused(proxy):
    shunt, upstream, cheap, big = proxy

    def post(content, **extra):
        return httpx.post(
            url + CHAT,
            json={
                "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": content, **extra}]
            },
        )

    with running(create_app(shunt, upstream=upstream)) as url:
        parts = post([{"type": "text", "text": "an easy"}, {"type": "text", "text": "one"}])
        image = post(
            [
                {"type": "text", "text": "easy, with a picture"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            ]
        )
        tool_turn = httpx.post(
            url + CHAT,
            json={
                "messages": [
                    {"role": "user", "content": "easy"},
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
                    },
                    {"role": "tool", "tool_call_id": "c1", "content": "42"},
                ]
            },
        )
        refused = {
            kind: post(content)
            for kind, content in [
                ("null", None),
                ("an object", {"text": "hi"}),
                ("a number", 5),
                ("part", [{"type": "text", "text": "hi"}, {"type": "video", "video": {}}]),
            ]
        }
    assert parts.status_code == 200 and parts.headers[ROUTE_HEADER] == "small"
    assert cheap.requests[0]["body"]["messages"][1]["content"] == "an easy\none"
    assert image.status_code == 200 and image.headers[ROUTE_HEADER] == "large" and len(cheap.requests) == 1
    assert big.requests[0]["body"]["messages"][1]["content"][1]["type"] == "image_url"
    assert tool_turn.status_code == 200 and tool_turn.headers[ROUTE_HEADER] == "large" and len(cheap.requests) == 1
    for kind in ("null", "an object", "a number"):
        assert refused[kind].status_code == 400
        assert refused[kind].json()["error"]["message"] == (
            f'messages[1].content is {kind}; send a string or a list of content parts ({{"type": "text", "text": ...}})'
        )
    assert refused["part"].status_code == 400
    assert (
        refused["part"]
        .json()["error"]["message"]
        .startswith("messages[1].content[1] is not a content part this service takes")
    )
    assert len(big.requests) == 2


def test_proxy_lone_surrogates_in_messages_are_a_400(proxy):
    shunt, upstream, cheap, big = proxy
    with running(create_app(shunt, upstream=upstream)) as url:
        plain = httpx.post(url + CHAT, content=b'{"messages": [{"role": "user", "content": "x \\ud800"}]}')
        part = httpx.post(
            url + CHAT, content=b'{"messages": [{"role": "user", "content": [{"type": "text", "text": "\\udfff"}]}]}'
        )
    assert plain.status_code == 400 and plain.json()["error"]["message"] == (
        "messages[0].content is not valid Unicode (a lone surrogate U+D800 at character 2); send text that encodes "
        "as UTF-8"
    )
    assert part.status_code == 400 and "messages[0].content[0].text is not valid Unicode" in part.text
    assert not cheap.requests and not big.requests


def test_proxy_stream_holds_its_place_and_ends_at_request_timeout(proxy):
    shunt, upstream, cheap, big = proxy
    settings = ServeSettings(max_concurrency=1, max_pending=0, request_timeout=1.5)
    hard = {"stream": True, "messages": [{"role": "user", "content": "hard"}]}
    with (
        EndlessStreamServer() as endless,
        running(create_app(shunt, settings, upstream=Upstream(endless.base_url, "m"))) as url,
    ):
        start = time.perf_counter()
        with httpx.stream("POST", url + CHAT, json=hard) as stream:
            lines = stream.iter_lines()
            first = next(lines)
            during = httpx.post(url + CHAT, json={"messages": [{"role": "user", "content": "easy"}]})
            rest = list(lines)
        took = time.perf_counter() - start
        hung_up = endless.closed.wait(5)
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        with pytest.raises(openai.APIError, match=r"the request took longer than 1.5 s \(request_timeout\)"):
            for _ in client.chat.completions.create(model="m", **hard):
                pass
        after = httpx.post(url + CHAT, json={"messages": [{"role": "user", "content": "easy"}]})
    assert first.startswith("data: ") and stream.status_code == 200
    assert during.status_code == 503 and during.json()["error"]["type"] == "overloaded"
    events = [strict_json(line[len("data: ") :]) for line in rest if line.startswith("data: ")]
    assert events[-1] == {
        "error": {"message": "the request took longer than 1.5 s (request_timeout)", "type": "timeout", "code": 504}
    }
    assert all("choices" in e for e in events[:-1]) and 1.5 <= took < 3.5
    assert hung_up and after.status_code == 200


def test_access_log_never_shows_query_strings_and_url_keys_are_refused(shunt):
    lines = []

    class Keep(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())

    keep, access = Keep(), logging.getLogger("uvicorn.access")
    with running(create_app(shunt, ServeSettings(api_key_sha256=[hash_key(KEY)])), log_level="info") as url:
        access.addHandler(keep)
        try:
            in_url = httpx.post(url + CLASSIFY, params={"api_key": KEY}, json={"items": ["fine"]})
            both = httpx.post(
                url + CLASSIFY,
                params={"api_key": KEY, "page": 2},
                json={"items": ["fine"]},
                headers={"Authorization": f"Bearer {KEY}"},
            )
        finally:
            access.removeHandler(keep)
    assert in_url.status_code == 401 and in_url.json()["error"]["message"] == (
        "a valid API key is needed: send it as 'Authorization: Bearer <key>' (a key in the URL is never accepted: "
        "URLs end up in logs)"
    )
    assert both.status_code == 200
    assert len(lines) == 2 and not any(KEY in line for line in lines)
    assert 'POST /v1/classify?[query redacted] HTTP/1.1" 401' in lines[0]


class Picky:
    """The shunt, failing a whole call of the model when one item is not valid Unicode; keeps each call's size."""

    def __init__(self, shunt):
        self.shunt, self.calls = shunt, []

    def route(self, items):
        self.calls.append(len(items))
        time.sleep(0.02)
        if any(isinstance(x, str) and "\ud800" in x for x in items):
            raise ValueError("surrogates not allowed")
        return self.shunt.route(items)


def mixed_bodies(texts, bad: bytes) -> list:
    """40 requests of two texts each, with ``bad`` as every eleventh of 44."""
    good = [json.dumps({"items": texts[i : i + 2]}).encode() for i in range(0, 80, 2)]
    return [bad if k % 11 == 5 else good.pop(0) for k in range(44)]


async def post_all(url: str, bodies: list) -> list:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        return await asyncio.gather(
            *[client.post(CLASSIFY, content=b, headers={"Content-Type": "application/json"}) for b in bodies]
        )


def test_a_failing_request_never_fails_its_micro_batch_neighbours(shunt, sentiment):
    texts = sentiment[0][300:380]
    bodies = mixed_bodies(texts, b'{"items": ["x \\ud800"]}')
    picky = Picky(shunt)
    with running(create_app(picky, ServeSettings(micro_batching=True))) as url:
        answers = asyncio.run(post_all(url, bodies))
    good = [a for a, b in zip(answers, bodies) if b"ud800" not in b]
    bad = [a for a, b in zip(answers, bodies) if b"ud800" in b]
    assert max(picky.calls) > 2  # requests were pooled
    assert [a.status_code for a in good] == [200] * 40 and [a.status_code for a in bad] == [500] * 4
    assert [r["label"] for a in good for r in a.json()["results"]] == shunt.predict(texts).tolist()
    assert bad[0].json()["error"]["message"] == "the model failed on this batch: ValueError: surrogates not allowed"


def test_lone_surrogates_are_flagged_per_item_among_concurrent_requests(shunt, sentiment):
    texts = sentiment[0][300:380]
    bodies = mixed_bodies(texts, b'{"items": ["fine", "x \\ud800"]}')
    with running(create_app(Slow(shunt, 0.02), ServeSettings(micro_batching=True))) as url:
        answers = asyncio.run(post_all(url, bodies))
    assert [a.status_code for a in answers] == [200] * 44
    rows = [a.json()["results"] for a in answers]
    bad = [r for r, b in zip(rows, bodies) if b"ud800" in b]
    assert all(r[0]["route"] != "invalid" and r[1]["route"] == "invalid" for r in bad)
    assert all("lone surrogate U+D800" in r[1]["flag"] for r in bad)  # the text modality's own words
    good = [row["label"] for r, b in zip(rows, bodies) if b"ud800" not in b for row in r]
    assert good == shunt.predict(texts).tolist()


def test_the_proxy_refuses_a_local_stage_that_cannot_chat(proxy):
    from datashunt.exceptions import ConfigError

    class Writer:  # a generator of items, with no chat
        def fit(self, X, references):
            return self

        def generate(self, X, hints=None, progress=False, modality="auto"):
            raise AssertionError("not asked")

        def check_modality(self, name):
            pass

        def get_params(self, deep=True):
            return {}

    shunt, upstream, _, _ = proxy
    mute = ShuntGenerator([("writer", Writer()), shunt.stages[1]], thresholds=[0.5]).fit(["a", "b"] * 2, ["x", "y"] * 2)
    with pytest.raises(ConfigError, match=r"the proxy answers chats; stages \['writer'\] cannot"):
        create_app(mute, upstream=upstream)
