"""The HTTP service on loopback: a real uvicorn server, the official openai client, fake upstreams."""

import asyncio
import time

import httpx
import numpy as np
import openai
import pandas as pd
import pytest
from fakes import FakeOpenAIServer

from datashunt import ShuntGenerator
from datashunt.backends.generate.openai_chat import OpenAIChatGenerator
from datashunt.backends.replay import ReplayModel
from datashunt.estimators.shunt import ShuntClassifier
from datashunt.serve.app import create_app, running
from datashunt.serve.proxy import Upstream
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
    requests = [texts[i:i + 8] for i in range(0, 160, 8)]
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
        assert refused.json()["error"]["message"] == ("a valid API key is needed: send it as "
                                                      "'Authorization: Bearer <key>'")
    assert right.status_code == 200 and health.status_code == 200
    assert 'status="401"} 2.0' in metrics and KEY not in metrics


def test_limits_and_malformed_bodies(shunt):
    settings = ServeSettings(max_body_bytes=2000, max_items=5)
    with running(create_app(shunt, settings)) as url:
        def post(**kwargs):
            answer = httpx.post(url + "/v1/classify", **kwargs)
            return answer.status_code, answer.json()["error"]["message"]

        assert post(json={"items": ["x" * 3000]}) == (413, "the body is 3,014 bytes; this service takes at most "
                                                           "2,000 (max_body_bytes)")
        assert post(json={"items": ["a"] * 6}) == (413, "6 items is more than this service takes in one request "
                                                        "(5, max_items)")
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
    assert answers[1].json()["error"]["message"] == ("the service is busy (1 requests in progress or waiting, the "
                                                     "most it takes); retry after 2 s")
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


# -- the OpenAI-compatible routing proxy ------------------------------------------------------
SURE = [("Bonjour", -0.01), (" le", -0.02), (" monde", -0.01)]
UNSURE = [("Je", -1.5), (" sais", -2.0), (" pas", -1.2)]


@pytest.fixture
def proxy(tmp_path):
    with FakeOpenAIServer({"easy": SURE, "hard": UNSURE}, sequence=True) as cheap, \
            FakeOpenAIServer({"": [("Grande", -0.1), (" réponse", -0.1)]}, sequence=True) as big:
        stages = [("cheap", OpenAIChatGenerator("small", base_url=cheap.base_url, cache=False)),
                  ("big", OpenAIChatGenerator("big", base_url=big.base_url, cache=False))]
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
            model="shunt", messages=[{"role": "user", "content": "an easy one"}])
        assert easy.headers["x-datashunt-route"] == "small"
        answer = easy.parse()
        assert answer.choices[0].message.content == "Bonjour le monde"
        assert answer.model_extra["datashunt"]["route"] == "small" and answer.usage.prompt_tokens == 42
        hard = client.chat.completions.with_raw_response.create(
            model="shunt", messages=[{"role": "user", "content": "a hard one"}])
        assert hard.headers["x-datashunt-route"] == "large"
        assert hard.parse().choices[0].message.content == "Grande réponse"
        assert hard.parse().model_extra["datashunt"]["confidence"] == pytest.approx(np.exp([-1.5, -2, -1.2]).mean())
        for content, route, text in [("easy", "small", "Bonjour le monde"), ("hard", "large", "Grande réponse")]:
            raw = client.chat.completions.with_raw_response.create(
                model="shunt", stream=True, messages=[{"role": "user", "content": content}])
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
    (tmp_path / "run.toml").write_text(f'[large]\nbackend = "replay"\ntable = "{tmp_path / "answers.csv"}"\n'
                                       f'[serve]\nmax_items = 3\n')
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [str(Path(sys.executable).parent / "datashunt"), "serve", str(tmp_path / "model"), "--config",
               str(tmp_path / "run.toml"), "--port", str(port)]
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
        stages = [("local", LlamaCppGenerator(str(path), max_new_tokens=6, cache=False)),
                  ("big", OpenAIChatGenerator("big", base_url=big.base_url, cache=False))]
        shunt = ShuntGenerator(stages, thresholds=[threshold]).fit(["a", "b"] * 2, ["x", "y"] * 2)
        with running(create_app(shunt, upstream=Upstream(big.base_url, "big"))) as url:
            client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
            raw = client.chat.completions.with_raw_response.create(
                model="m", stream=True, messages=[{"role": "user", "content": "Say hello."}])
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
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['port'\] in \[serve\]"):
        ServeSettings.from_sources({"port": 80})
    monkeypatch.setenv("DATASHUNT_API_KEY_SHA256", f" {hash_key('a')} ,{hash_key('b')}")
    both = ServeSettings.from_sources({"api_key_sha256": [hash_key("c")]}, max_items=None)
    assert all(both.accepts(k) for k in "abc") and not both.accepts("d") and both.max_items == 256
    with pytest.raises(ConfigError, match="the upstream base_url must start with http:// or https://"):
        Upstream("file:///etc/passwd", "m")
    with pytest.raises(ConfigError, match="api_key_env must name an environment variable"):
        Upstream("http://127.0.0.1:1/v1", "m", api_key_env="A B")
