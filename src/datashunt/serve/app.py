"""The FastAPI application: ``POST /v1/classify``, ``POST /v1/documents``, the OpenAI-compatible
``/v1/chat/completions`` and ``/v1/models``, ``/healthz``, ``/readyz`` and ``/metrics``.

Every error is an OpenAI-style body ``{"error": {"message", "type", "code"}}`` with a status that
says what to do: 401 (no or wrong API key), 400 (a body nested too deeply, a chat message whose
content the proxy does not take), 408 (the body came too slowly), 413 (body or item count over the
limits), 422 (the body is not what the endpoint takes, with the reason), 503 with ``Retry-After``
(too busy), 504 (over the per-request time), 502 (the upstream failed). Numbers JSON cannot hold
(an infinite δ, a missing confidence) are written as ``null``. Admission, limits and metrics by
route: :mod:`datashunt.serve.admission`.
"""

import contextlib
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from fastapi import FastAPI, Request
from fastapi.responses import Response

from ..estimators.segments import Segments
from .admission import Admission, keys_in_query, redact_access_log
from .items import ItemRouter, wrong_endpoint
from .metrics import Metrics
from .proxy import ChatRouter
from .settings import ServeSettings
from .wire import (
    CHAT,
    CLASSIFY,
    DOCUMENTS,
    HEALTHZ,
    METRICS,
    MODELS,
    READYZ,
    Failure,
    SafeJSONResponse,
    failure_response,
    parse_json,
)

__all__ = [
    "CHAT",
    "CLASSIFY",
    "DOCUMENTS",
    "HEALTHZ",
    "METRICS",
    "MODELS",
    "READYZ",
    "create_app",
    "running",
    "server_options",
]


def create_app(
    model, settings: ServeSettings | None = None, *, name: str = "datashunt", upstream=None, executor=None
) -> FastAPI:
    """The service for a fitted ``model``: a classifying one (:class:`~datashunt.ShuntClassifier`,
    :class:`~datashunt.Cascade`, :class:`~datashunt.Subtasks`) answers ``/v1/classify`` and
    :class:`~datashunt.Segments` ``/v1/documents`` (:mod:`datashunt.serve.items`); a
    :class:`~datashunt.ShuntGenerator` answers ``/v1/chat/completions``
    (:mod:`datashunt.serve.proxy`), every stage but the last locally and the rest forwarded to
    ``upstream`` (:class:`~datashunt.serve.proxy.Upstream`, where its calls go: given by the caller,
    never read from the model folder). Both route through the model's own engine.
    """
    settings = settings or ServeSettings()
    metrics = Metrics()
    executor = executor or ThreadPoolExecutor(1, thread_name_prefix="datashunt-model")
    task = "documents" if isinstance(model, Segments) else getattr(model, "task", None) or "classify"
    chat = ChatRouter(model, upstream, executor, metrics) if task == "generate" else None
    endpoint = DOCUMENTS if task == "documents" else CLASSIFY
    items = None if chat else ItemRouter(model, settings, metrics, executor, name, endpoint)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        redact_access_log()
        if items is not None:
            await items.start()
        yield
        if items is not None:
            await items.stop()
        if chat is not None:
            await chat.close()

    app = FastAPI(
        title="datashunt", lifespan=lifespan, docs_url=None, redoc_url=None, default_response_class=SafeJSONResponse
    )
    app.state.settings, app.state.metrics = settings, metrics
    app.add_middleware(
        Admission, settings=settings, metrics=metrics, router=app.router, authorize=_authorizer(settings)
    )

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
        return {"status": "ready", "model": name, "task": task}

    @app.get(METRICS)
    async def prometheus():
        return Response(metrics.render(), media_type=metrics.content_type)

    @app.get(MODELS)
    async def models():
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "datashunt"}]}

    @app.post(CLASSIFY)
    async def classify(request: Request):
        if task != "classify":
            raise wrong_endpoint(task)
        return await items.answer(parse_json(await request.body()))

    @app.post(DOCUMENTS)
    async def documents(request: Request):
        if task != "documents":
            raise wrong_endpoint(task)
        return await items.answer(parse_json(await request.body()))

    @app.post(CHAT)
    async def chat_completions(request: Request):
        if chat is None:
            raise wrong_endpoint(task)
        return await chat.complete(parse_json(await request.body()))

    return app


def _authorizer(settings: ServeSettings):
    """The check of a request's API key (none when the settings hold no key digests)."""

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

    return authorize


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
