"""The FastAPI application: ``POST /v1/classify``, the OpenAI-compatible ``/v1/chat/completions``
and ``/v1/models``, ``/healthz``, ``/readyz`` and ``/metrics``.

Every error is an OpenAI-style body ``{"error": {"message", "type", "code"}}`` with a status that
says what to do: 401 (no or wrong API key), 413 (body or item count over the limits), 422 (the
body is not what the endpoint takes, with the reason), 503 with ``Retry-After`` (too busy), 504
(over the per-request time), 502 (the upstream failed).
"""

import asyncio
import contextlib
import json
import math
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from .batching import MicroBatcher
from .metrics import Metrics
from .settings import ServeSettings


class Failure(Exception):
    """An answer other than 200: its status, message, error type and extra headers."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", headers=None):
        super().__init__(message)
        self.status, self.message, self.kind, self.headers = status, message, kind, headers or {}


def failure_response(exc: Failure) -> JSONResponse:
    return JSONResponse({"error": {"message": exc.message, "type": exc.kind, "code": exc.status}},
                        status_code=exc.status, headers=exc.headers)


class Gate:
    """Admission: ``max_concurrency`` requests worked on at once, ``max_pending`` more waiting,
    any further one turned away at once (503, ``Retry-After``) rather than queued without end."""

    def __init__(self, settings: ServeSettings):
        self.settings, self.admitted = settings, 0
        self.slots = asyncio.Semaphore(settings.max_concurrency)

    @contextlib.asynccontextmanager
    async def enter(self):
        limit = self.settings.max_concurrency + self.settings.max_pending
        if self.admitted >= limit:
            raise Failure(503, f"the service is busy ({self.admitted} requests in progress or waiting, the most it "
                          f"takes); retry after {self.settings.retry_after} s", "overloaded",
                          {"Retry-After": str(self.settings.retry_after)})
        self.admitted += 1
        try:
            async with self.slots:
                yield
        finally:
            self.admitted -= 1


async def read_json(request: Request, settings: ServeSettings):
    """The request body as JSON, refusing one over ``max_body_bytes`` before reading it all."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > settings.max_body_bytes:
        raise Failure(413, f"the body is {int(declared):,} bytes; this service takes at most "
                      f"{settings.max_body_bytes:,} (max_body_bytes)", "request_too_large")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > settings.max_body_bytes:
            raise Failure(413, f"the body is over {settings.max_body_bytes:,} bytes (max_body_bytes)",
                          "request_too_large")
    try:
        return json.loads(body)
    except UnicodeDecodeError as exc:
        raise Failure(422, f"the body is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    except ValueError as exc:
        raise Failure(422, f"the body is not valid JSON: {exc}") from None


def _plain(value):
    """A JSON-safe cell: NaN and NA become null, numpy scalars plain numbers."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, np.generic):
        return _plain(value.item())
    return value


def _sent_on(table) -> np.ndarray:
    """Which items went past the first stage (a shunt's large or fallback routes; a cascade's later stages)."""
    if "stage" in table:
        return ((table["reached"] > 0) & (table["route"] != "invalid")).to_numpy()
    return table["route"].isin(["large", "fallback"]).to_numpy()


def create_app(model, settings: ServeSettings | None = None, *, name: str = "datashunt", upstream=None,
               executor=None) -> FastAPI:
    """The service for a fitted ``model``: a :class:`~datashunt.ShuntClassifier` or
    :class:`~datashunt.Cascade` answers ``/v1/classify``; a :class:`~datashunt.ShuntGenerator`
    answers ``/v1/chat/completions``, its first stage locally and the rest forwarded to ``upstream``
    (:class:`~datashunt.serve.proxy.Upstream`, where its calls go: given by the caller, never read
    from the model folder).
    """
    from .proxy import ChatRouter

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

    batcher = MicroBatcher(classify_work, max_items=settings.max_batch_items, executor=executor,
                           on_batch=metrics.batch_items.observe)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        app.state.gate = Gate(settings)
        if settings.micro_batching and not generating:
            await batcher.start()
        yield
        await batcher.stop()
        if chat is not None:
            await chat.close()

    app = FastAPI(title="datashunt", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.settings, app.state.metrics = settings, metrics

    @app.exception_handler(Failure)
    async def on_failure(request, exc: Failure):
        return failure_response(exc)

    @app.middleware("http")
    async def observe(request: Request, call_next):
        start = time.perf_counter()
        endpoint = request.url.path
        try:
            if endpoint.startswith("/v1/"):
                authorize(request)
                async with request.app.state.gate.enter():
                    response = await asyncio.wait_for(call_next(request), settings.request_timeout)
            else:
                response = await call_next(request)
        except Failure as exc:
            response = failure_response(exc)
        except TimeoutError:
            response = failure_response(Failure(504, f"the request took longer than {settings.request_timeout:g} s "
                                                     "(request_timeout)", "timeout"))
        metrics.requests.labels(endpoint, str(response.status_code)).inc()
        metrics.latency.labels(endpoint).observe(time.perf_counter() - start)
        return response

    def authorize(request: Request) -> None:
        if not settings.api_key_sha256:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not settings.accepts(token.strip() or None):
            raise Failure(401, "a valid API key is needed: send it as 'Authorization: Bearer <key>'",
                          "authentication_error", {"WWW-Authenticate": "Bearer"})

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz():
        if chat is not None and chat.upstream is None:
            raise Failure(503, "no upstream is configured for the items the first stage is unsure of", "not_ready")
        return {"status": "ready", "model": name, "task": "generate" if generating else "classify"}

    @app.get("/metrics")
    async def prometheus():
        return Response(metrics.render(), media_type=metrics.content_type)

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "datashunt"}]}

    @app.post("/v1/classify")
    async def classify(request: Request):
        if generating:
            raise Failure(404, "this model generates text: use /v1/chat/completions", "not_found")
        body = await read_json(request, settings)
        items = body.get("items") if isinstance(body, dict) else None
        if not isinstance(items, list):
            raise Failure(422, "the body must be a JSON object whose 'items' is a list of texts")
        if not items:
            raise Failure(422, "'items' is empty: send at least one text")
        if len(items) > settings.max_items:
            raise Failure(413, f"{len(items)} items is more than this service takes in one request "
                          f"({settings.max_items}, max_items)", "request_too_large")
        try:
            if settings.micro_batching:
                table = await batcher.submit(items)
            else:
                metrics.batch_items.observe(len(items))
                table = await asyncio.get_running_loop().run_in_executor(executor, classify_work, items)
        except Exception as exc:  # a failure of the model itself (bad rows are flagged, not raised)
            raise Failure(500, f"the model failed on this batch: {type(exc).__name__}: {exc}", "server_error") \
                from None
        sent = _sent_on(table)
        metrics.routed("/v1/classify", table["route"].tolist(), sent)
        metrics.cost.inc(float(table["cost"].sum()))
        if "cached" in table:
            metrics.cache_hits.inc(int((table["cached"] & sent).sum()))
        metrics.upstream_errors.inc(int((table["route"] == "fallback").sum()))
        results = [{k: _plain(v) for k, v in row.items()} for row in table.to_dict("records")]
        return {"object": "list", "model": name, "results": results,
                "usage": {"items": len(items), "cost": float(table["cost"].sum()), "large_share": float(sent.mean())}}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        if chat is None:
            raise Failure(404, "this model classifies: use /v1/classify", "not_found")
        return await chat.complete(await read_json(request, settings))

    return app


@contextlib.contextmanager
def running(app, host: str = "127.0.0.1", port: int = 0):
    """Run ``app`` with uvicorn in a background thread (notebooks, tests, load tests); yields its URL.

    Examples
    --------
    >>> import httpx
    >>> from sklearn.dummy import DummyClassifier
    >>> with running(create_app(DummyClassifier())) as url:
    ...     httpx.get(url + "/healthz").json()
    {'status': 'ok'}
    """
    import threading

    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
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
