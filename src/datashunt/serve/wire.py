"""What crosses the wire: the paths served, error answers, JSON written safely (non-finite numbers
as ``null``) and JSON read with bounds (size is bounded by the admission middleware, depth here)."""

import json
import math

from fastapi.responses import JSONResponse

from ..exceptions import DatashuntError

CLASSIFY = "/v1/classify"
CHAT = "/v1/chat/completions"
DOCUMENTS = "/v1/documents"
MODELS = "/v1/models"
HEALTHZ, READYZ, METRICS = "/healthz", "/readyz", "/metrics"
MAX_JSON_DEPTH = 64
INVALID_REQUEST = "invalid_request_error"


class Failure(DatashuntError):
    """An answer other than 200: its status, message, error type and extra headers."""

    def __init__(self, status: int, message: str, kind: str = INVALID_REQUEST, headers=None):
        super().__init__(message)
        self.status, self.message, self.kind, self.headers = status, message, kind, headers or {}


def finite(value):
    """``value`` with every NaN and ±infinity (nested in dicts, lists and tuples) replaced by None:
    JSON has no such numbers.

    Examples
    --------
    >>> finite({"threshold": float("inf"), "scores": [0.5, float("nan")]})
    {'threshold': None, 'scores': [0.5, None]}
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def dumps(value) -> str:
    """``value`` as strict JSON text: non-finite numbers become ``null``; text that is not valid
    Unicode (a lone surrogate) is written as ``\\u`` escapes rather than failing.

    Examples
    --------
    >>> dumps({"delta": float("inf"), "text": "é \\ud800"})
    '{"delta":null,"text":"\\\\u00e9 \\\\ud800"}'
    >>> dumps({"text": "é"})
    '{"text":"é"}'
    """
    text = json.dumps(finite(value), ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(finite(value), allow_nan=False, separators=(",", ":"))
    return text


class SafeJSONResponse(JSONResponse):
    """A JSON answer that never fails on a number or a string: see :func:`dumps`."""

    def render(self, content) -> bytes:
        return dumps(content).encode("utf-8")


def failure_response(exc: Failure) -> SafeJSONResponse:
    return SafeJSONResponse(
        {"error": {"message": exc.message, "type": exc.kind, "code": exc.status}},
        status_code=exc.status,
        headers=exc.headers,
    )


def parse_json(body: bytes):
    """The body as JSON: 422 when it is not JSON, 400 when it nests deeper than ``MAX_JSON_DEPTH``."""
    too_deep = Failure(
        400,
        f"the JSON body nests deeper than {MAX_JSON_DEPTH} levels, the most this service reads; send a flatter body",
    )
    try:
        value = json.loads(body)
    except RecursionError:
        raise too_deep from None
    except UnicodeDecodeError as exc:
        raise Failure(422, f"the body is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    except ValueError as exc:
        raise Failure(422, f"the body is not valid JSON: {exc}") from None
    if _deeper_than(value, MAX_JSON_DEPTH):
        raise too_deep
    return value


def _deeper_than(value, limit: int) -> bool:
    """Whether ``value`` has containers nested more than ``limit`` levels (walked without recursion)."""
    stack = [(value, 1)] if isinstance(value, dict | list) else []
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children = node.values() if isinstance(node, dict) else node
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False
