"""Admission of API requests: ASGI middleware around the whole application.

For a request to an API route (``/v1/...``), in this order: the API key (401); the whole body,
bounded in size (413, ``max_body_bytes``, chunked bodies included) and in time (408,
``body_timeout``) before it takes a place, so a slow client holds no place while its body trickles
in; a place among ``max_concurrency`` working and ``max_pending`` waiting (503 with
``Retry-After`` beyond); then ``request_timeout`` over the wait and the work, a streamed answer
included: the place is held until the stream ends, and a stream still running at the deadline
ends with an error event (504 when nothing was sent yet).

Every request is counted by route template and status (``other`` for paths no route matches;
``499`` for a client that hung up before its body arrived).
"""

import asyncio
import contextlib
import logging
import time
from urllib.parse import parse_qsl

from starlette.datastructures import Headers
from starlette.routing import Match

from .wire import Failure, dumps, failure_response

API_PREFIX = "/v1/"
OTHER = "other"
CLIENT_GONE = "499"
KEY_PARAMETERS = frozenset({"key", "api_key", "apikey", "api-key", "token", "access_token", "auth"})
CLOSE = {"Connection": "close"}


class Gate:
    """Places: ``max_concurrency`` requests worked on at once, ``max_pending`` more waiting, any
    further one turned away at once (503, ``Retry-After``) rather than queued without end."""

    def __init__(self, settings):
        self.settings, self.admitted = settings, 0
        self.slots = asyncio.Semaphore(settings.max_concurrency)

    def check(self) -> None:
        """Refuse (503) when every place is taken."""
        limit = self.settings.max_concurrency + self.settings.max_pending
        if self.admitted >= limit:
            raise Failure(
                503,
                f"the service is busy ({self.admitted} requests in progress or waiting, the most it "
                f"takes); retry after {self.settings.retry_after} s",
                "overloaded",
                {"Retry-After": str(self.settings.retry_after)},
            )

    @contextlib.asynccontextmanager
    async def enter(self):
        self.check()
        self.admitted += 1
        try:
            async with self.slots:
                yield
        finally:
            self.admitted -= 1


class _ClientGone(Exception):
    """The client hung up before its body arrived: there is no one to answer."""


class Admission:
    """The ASGI middleware of the module docstring, for the routes of ``router``; ``authorize(headers,
    query)`` raises a 401 :class:`Failure` for a request without a valid key."""

    def __init__(self, app, *, settings, metrics, router, authorize):
        self.app, self.settings, self.metrics, self.router = app, settings, metrics, router
        self.authorize, self.gate = authorize, Gate(settings)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        endpoint, admit = self.route(scope)
        answer = {"status": None, "media": b"", "done": False}

        async def watch(message):
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]
                answer["media"] = Headers(raw=message["headers"]).get("content-type", "")
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                answer["done"] = True
            await send(message)

        try:
            if endpoint.startswith(API_PREFIX):
                self.authorize(Headers(scope=scope), parse_qsl(scope.get("query_string", b"").decode("latin-1")))
            if admit:
                await self.admitted(scope, receive, watch, answer)
            else:
                await self.app(scope, receive, watch)
        except Failure as exc:
            if answer["status"] is None:
                await failure_response(exc)(scope, receive, watch)
        except _ClientGone:
            answer["status"] = CLIENT_GONE
        finally:
            status = str(answer["status"] or 500)
            self.metrics.requests.labels(endpoint, status).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - start)

    def route(self, scope) -> tuple[str, bool]:
        """The template of the route ``scope`` asks for (``other`` if none) and whether it is an
        API route to admit (path and method match)."""
        partial = None
        for route in self.router.routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return route.path, route.path.startswith(API_PREFIX)
            if match is Match.PARTIAL and partial is None:
                partial = route.path
        return partial or OTHER, False

    async def admitted(self, scope, receive, send, answer) -> None:
        self.gate.check()  # a quick refusal when busy, before reading a body
        body = await self.read_body(scope, receive)
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        deadline = asyncio.timeout(self.settings.request_timeout)
        try:
            async with deadline:
                async with self.gate.enter():
                    await self.app(scope, replay, send)
        except TimeoutError:
            if not deadline.expired():
                raise
            late = Failure(
                504, f"the request took longer than {self.settings.request_timeout:g} s (request_timeout)", "timeout"
            )
            if answer["status"] is None:
                raise late from None
            if not answer["done"]:  # a stream under way: say why it ends, then end it
                error = {"error": {"message": late.message, "type": late.kind, "code": late.status}}
                tail = f"\n\ndata: {dumps(error)}\n\n".encode() if "text/event-stream" in answer["media"] else b""
                await send({"type": "http.response.body", "body": tail, "more_body": False})

    async def read_body(self, scope, receive) -> bytes:
        """The whole body, refused past ``max_body_bytes`` (413) or ``body_timeout`` (408)."""
        limit = self.settings.max_body_bytes
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise Failure(
                413,
                f"the body is {int(declared):,} bytes; this service takes at most {limit:,} (max_body_bytes)",
                "request_too_large",
                CLOSE,
            )
        body = bytearray()
        timer = asyncio.timeout(self.settings.body_timeout)
        try:
            async with timer:
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        raise _ClientGone
                    body += message.get("body", b"")
                    if len(body) > limit:
                        raise Failure(
                            413, f"the body is over {limit:,} bytes (max_body_bytes)", "request_too_large", CLOSE
                        )
                    if not message.get("more_body"):
                        return bytes(body)
        except TimeoutError:
            if not timer.expired():
                raise
            raise Failure(
                408,
                f"the body did not arrive within {self.settings.body_timeout:g} s (body_timeout; "
                f"{len(body):,} bytes came); send the whole body at once",
                "timeout",
                CLOSE,
            ) from None


def keys_in_query(query: list) -> bool:
    """Whether a query string's parameters look like an API key (never accepted from a URL).

    Examples
    --------
    >>> keys_in_query([("api_key", "sk-1")]), keys_in_query([("page", "2")])
    (True, False)
    """
    return any(name.lower() in KEY_PARAMETERS for name, _ in query)


class RedactQuery(logging.Filter):
    """Writes uvicorn's access-log lines without their query string (which may hold a secret)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str) and "?" in args[2]:
            record.args = (*args[:2], args[2].split("?", 1)[0] + "?[query redacted]", *args[3:])
        return True


REDACT_QUERY = RedactQuery()


def redact_access_log() -> None:
    """Keep query strings out of uvicorn's access log, however uvicorn was started."""
    logging.getLogger("uvicorn.access").addFilter(REDACT_QUERY)
