"""The FastAPI application: ``POST /v1/classify``, the OpenAI-compatible ``/v1/chat/completions``
and ``/v1/models``, ``/healthz``, ``/readyz`` and ``/metrics``.

Every error is an OpenAI-style body ``{"error": {"message", "type", "code"}}`` with a status that
says what to do: 401 (no or wrong API key), 400 (a body nested too deeply, a chat message whose
content the proxy does not take), 408 (the body came too slowly), 413 (body or item count over the
limits), 422 (the body is not what the endpoint takes, with the reason), 503 with ``Retry-After``
(too busy), 504 (over the per-request time), 502 (the upstream failed). Numbers JSON cannot hold
(an infinite δ, a missing confidence) are written as ``null``. Admission, limits and metrics by
route: :mod:`datashunt.serve.admission`.
"""

import asyncio
import contextlib
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
from fastapi import FastAPI, Request
from fastapi.responses import Response

from .admission import Admission, keys_in_query, redact_access_log
from .batching import MicroBatcher
from .metrics import Metrics
from .settings import ServeSettings
from .wire import Failure, SafeJSONResponse, failure_response, parse_json

CLASSIFY = "/v1/classify"
CHAT = "/v1/chat/completions"
MODELS = "/v1/models"
HEALTHZ, READYZ, METRICS = "/healthz", "/readyz", "/metrics"


def _plain(value):
    """A JSON-safe cell: NaN, infinities and NA become null, numpy scalars plain numbers."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or value is pd.NA or value is pd.NaT or (isinstance(value, float) and not math.isfinite(value)):
        return None
    return value


def _sent_on(table) -> np.ndarray:
    """Which items went past the first stage (a shunt's large or fallback routes; a cascade's later stages)."""
    if "stage" in table:
        return ((table["reached"] > 0) & (table["route"] != "invalid")).to_numpy()
    return table["route"].isin(["large", "fallback"]).to_numpy()


def create_app(
    model, settings: ServeSettings | None = None, *, name: str = "datashunt", upstream=None, executor=None
) -> FastAPI:
    """The service for a fitted ``model``: a :class:`~datashunt.ShuntClassifier` or
    :class:`~datashunt.Cascade` answers ``/v1/classify``; a :class:`~datashunt.ShuntGenerator`
    answers ``/v1/chat/completions``, its first stage locally and the rest forwarded to ``upstream``
    (:class:`~datashunt.serve.proxy.Upstream`, where its calls go: given by the caller, never read
    from the model folder).
    """
    from .proxy import ChatRouter  # noqa: PLC0415 (cycle: serve.proxy imports serve.app)

    settings = settings or ServeSettings()
    metrics = Metrics()
    executor = executor or ThreadPoolExecutor(1, thread_name_prefix="datashunt-model")
    generating = hasattr(model, "thresholds_") and hasattr(model, "generate")
    chat = ChatRouter(model, upstream, executor, metrics) if generating else None

    def classify_work(items: list):
        batch = np.empty(len(items), dtype=object)
        for i, item in enumerate(items):
            batch[i] = item
        return model.route(batch)

    batcher = MicroBatcher(
        classify_work, max_items=settings.max_batch_items, executor=executor, on_batch=metrics.batch_items.observe
    )

    @contextlib.asynccontextmanager
    async def lifespan(app):
        redact_access_log()
        if settings.micro_batching and not generating:
            await batcher.start()
        yield
        await batcher.stop()
        if chat is not None:
            await chat.close()

    app = FastAPI(
        title="datashunt", lifespan=lifespan, docs_url=None, redoc_url=None, default_response_class=SafeJSONResponse
    )
    app.state.settings, app.state.metrics = settings, metrics

    def authorize(headers, query: list) -> None:
        if not settings.api_key_sha256:
            return
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not settings.accepts(token.strip() or None):
            url = " (a key in the URL is never accepted: URLs end up in logs)" if keys_in_query(query) else ""
            raise Failure(
                401,
                f"a valid API key is needed: send it as 'Authorization: Bearer <key>'{url}",
                "authentication_error",
                {"WWW-Authenticate": "Bearer"},
            )

    app.add_middleware(Admission, settings=settings, metrics=metrics, router=app.router, authorize=authorize)

    @app.exception_handler(Failure)
    async def on_failure(request, exc: Failure):
        return failure_response(exc)

    @app.get(HEALTHZ)
    async def healthz():
        return {"status": "ok"}

    @app.get(READYZ)
    async def readyz():
        if chat is not None and chat.upstream is None:
            raise Failure(503, "no upstream is configured for the items the first stage is unsure of", "not_ready")
        return {"status": "ready", "model": name, "task": "generate" if generating else "classify"}

    @app.get(METRICS)
    async def prometheus():
        return Response(metrics.render(), media_type=metrics.content_type)

    @app.get(MODELS)
    async def models():
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "datashunt"}]}

    @app.post(CLASSIFY)
    async def classify(request: Request):
        if generating:
            raise Failure(404, f"this model generates text: use {CHAT}", "not_found")
        body = parse_json(await request.body())
        items = body.get("items") if isinstance(body, dict) else None
        if not isinstance(items, list):
            raise Failure(422, "the body must be a JSON object whose 'items' is a list of texts")
        if not items:
            raise Failure(422, "'items' is empty: send at least one text")
        if len(items) > settings.max_items:
            raise Failure(
                413,
                f"{len(items)} items is more than this service takes in one request ({settings.max_items}, max_items)",
                "request_too_large",
            )
        try:
            if settings.micro_batching:
                table = await batcher.submit(items)
            else:
                metrics.batch_items.observe(len(items))
                table = await asyncio.get_running_loop().run_in_executor(executor, classify_work, items)
        except Exception as exc:  # a failure of the model itself (bad rows are flagged, not raised)
            raise Failure(500, f"the model failed on this batch: {type(exc).__name__}: {exc}", "server_error") from None
        sent = _sent_on(table)
        metrics.routed(CLASSIFY, table["route"].tolist(), sent)
        metrics.cost.inc(float(table["cost"].sum()))
        if "cached" in table:
            metrics.cache_hits.inc(int((table["cached"] & sent).sum()))
        metrics.upstream_errors.inc(int((table["route"] == "fallback").sum()))
        results = [{k: _plain(v) for k, v in row.items()} for row in table.to_dict("records")]
        return {
            "object": "list",
            "model": name,
            "results": results,
            "usage": {"items": len(items), "cost": float(table["cost"].sum()), "large_share": float(sent.mean())},
        }

    @app.post(CHAT)
    async def chat_completions(request: Request):
        if chat is None:
            raise Failure(404, f"this model classifies: use {CLASSIFY}", "not_found")
        return await chat.complete(parse_json(await request.body()))

    return app


def server_options(settings: ServeSettings) -> dict:
    """uvicorn's own limits for ``settings``, to pass to ``uvicorn.run`` or ``uvicorn.Config``: the
    h11 parser (its bound on the request line and headers, ``max_header_bytes``, holds only there),
    open connections (``max_connections``; uvicorn answers 503 beyond), idle keep-alive
    (``keep_alive_timeout``) and the wait for requests under way at shutdown (``request_timeout``).

    Examples
    --------
    >>> server_options(ServeSettings())["limit_concurrency"]
    512
    """
    return {
        "http": "h11",
        "h11_max_incomplete_event_size": settings.max_header_bytes,
        "limit_concurrency": settings.max_connections,
        "timeout_keep_alive": settings.keep_alive_timeout,
        "timeout_graceful_shutdown": math.ceil(settings.request_timeout),
    }


@contextlib.contextmanager
def running(app, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"):
    """Run ``app`` with uvicorn (and :func:`server_options`) in a background thread (notebooks,
    tests, load tests); yields its URL.

    Examples
    --------
    >>> import httpx
    >>> from sklearn.dummy import DummyClassifier
    >>> with running(create_app(DummyClassifier())) as url:
    ...     httpx.get(url + "/healthz").json()
    {'status': 'ok'}
    """
    import uvicorn  # noqa: PLC0415 (uvicorn: the serve extra)

    limits = server_options(getattr(app.state, "settings", None) or ServeSettings())
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level, **limits))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError(f"the service could not start on {host}:{port}")
        time.sleep(0.01)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        thread.join()
