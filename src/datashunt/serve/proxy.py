"""The OpenAI-compatible routing proxy: the cheap stage answers a chat completion when its
sequence confidence clears the calibrated δ; otherwise the request goes to the upstream model.

The cheap stage must finish its answer before its confidence is known, so a streamed request
answered locally is streamed from the finished text; a forwarded one streams as the upstream
sends it. Every response says who answered: the ``X-Datashunt-Route`` header (``small`` or
``large``) and a ``datashunt`` field that OpenAI clients ignore.

A message's ``content`` is a string or a list of content parts. Text parts are joined (one line
each) for the cheap stage; a request with image, audio or file parts goes to the upstream as it
came, since the cheap stage reads text only. Anything else is refused with 400 naming the message.
"""

import asyncio
import json
import os
import re
import time
import uuid
from dataclasses import dataclass

import anyio
import httpx
from fastapi.responses import StreamingResponse

from ..core.params import env_name
from ..core.routes import OPEN
from ..exceptions import ConfigError
from ..modalities.text import lone_surrogate
from .wire import CHAT, Failure, SafeJSONResponse, dumps

ROUTE_HEADER = "X-Datashunt-Route"
SAMPLING_ONLY = ("tools", "functions", "tool_choice", "response_format", "logit_bias")
TEXT_PARTS = {"text": "text", "refusal": "refusal"}  # part type -> the key holding its text
MEDIA_PARTS = ("image_url", "input_audio", "file")
JSON_KINDS = {type(None): "null", dict: "an object", bool: "true or false", int: "a number", float: "a number"}


@dataclass(frozen=True)
class Upstream:
    """Where forwarded requests go: an OpenAI-compatible ``base_url`` and ``model``, the key read
    from ``api_key_env`` at each request (never stored or logged), and a time limit.

    Examples
    --------
    >>> Upstream("http://127.0.0.1:8000/v1", "big-model").url
    'http://127.0.0.1:8000/v1/chat/completions'
    """

    base_url: str
    model: str
    api_key_env: str = "OPENAI_API_KEY"
    timeout: float = 120.0

    def __post_init__(self):
        if not re.match(r"https?://", self.base_url):
            raise ConfigError(f"the upstream base_url must start with http:// or https://, got {self.base_url!r}")
        if not env_name(self.api_key_env):
            raise ConfigError(f"api_key_env must name an environment variable, got {self.api_key_env!r}")

    @property
    def url(self) -> str:
        return self.base_url.rstrip("/") + "/chat/completions"

    def headers(self) -> dict:
        key = os.environ.get(self.api_key_env)
        return {"Authorization": f"Bearer {key}"} if key else {}

    def redact(self, text: str) -> str:
        key = os.environ.get(self.api_key_env)
        return text.replace(key, "***") if key else text


def check_messages(body) -> tuple[list, bool]:
    """The request's messages as the cheap stage takes them (each ``content`` a string), and
    whether the request must go to the upstream as it came (media parts, tool-call turns).
    422 for a body that is not a chat request, 400 for a message content this service does not take."""
    if not isinstance(body, dict):
        raise Failure(422, "the body must be a JSON object (a chat completion request)")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise Failure(422, '\'messages\' must be a non-empty list of {"role", "content"} objects')
    if "stream" in body and not isinstance(body["stream"], bool):
        raise Failure(422, "'stream' must be true or false")
    plain, upstream_only = [], False
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str) or "content" not in message:
            raise Failure(422, f"messages[{i}] must be an object with a 'role' string and a 'content'")
        text, media = _content_text(message, f"messages[{i}].content")
        upstream_only |= media or text is None
        plain.append({**message, "content": text})
    return plain, upstream_only


def _content_text(message: dict, where: str) -> tuple[str | None, bool]:
    """A message's text (None for an assistant's tool-call turn without content) and whether it has media parts."""
    content = message["content"]
    if (
        content is None
        and message["role"] == "assistant"
        and (message.get("tool_calls") or message.get("function_call"))
    ):
        return None, False
    if isinstance(content, str):
        _valid_unicode(content, where)
        return content, False
    if not isinstance(content, list):
        kind = JSON_KINDS.get(type(content), type(content).__name__)
        raise Failure(
            400, f'{where} is {kind}; send a string or a list of content parts ({{"type": "text", "text": ...}})'
        )
    texts, media = [], False
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        key = TEXT_PARTS.get(kind)
        if key is not None and isinstance(part.get(key), str):
            _valid_unicode(part[key], f"{where}[{j}].{key}")
            texts.append(part[key])
        elif kind in MEDIA_PARTS and isinstance(part.get(kind), dict | str):
            media = True
        else:
            raise Failure(
                400,
                f"{where}[{j}] is not a content part this service takes: send "
                '{"type": "text", "text": "..."} (or an image_url, input_audio or file part, which go '
                "to the upstream)",
            )
    return "\n".join(texts), media


def _valid_unicode(text: str, where: str) -> None:
    problem = lone_surrogate(text)
    if problem:
        raise Failure(400, f"{where} is not valid Unicode ({problem}); send text that encodes as UTF-8")


class ChatRouter:
    """Answers chat completions with a fitted :class:`~datashunt.ShuntGenerator`: every stage but
    the last runs here through the engine (:meth:`~datashunt.ShuntGenerator.route_chats`: its
    thresholds, its 2CD copy, its drafts); what none of them keeps goes to ``upstream``, in the
    last stage's place. A request the local stages cannot honour as asked (tools, a response
    format, several choices) goes straight to the upstream."""

    def __init__(self, shunt, upstream: Upstream | None, executor, metrics):
        self.shunt, self.names = shunt, shunt.stage_names()
        unable = [name for name, model in shunt.stages_[:-1] if not callable(getattr(model, "chat", None))]
        if unable:
            raise ConfigError(f"the proxy answers chats; stages {unable} cannot (they have no chat method)")
        self.upstream, self.executor, self.metrics = upstream, executor, metrics
        self.client = httpx.AsyncClient(timeout=upstream.timeout if upstream else 60.0)

    async def close(self) -> None:
        await self.client.aclose()

    async def complete(self, body):
        messages, upstream_only = check_messages(body)
        stream = bool(body.get("stream"))
        confidence = None
        if not upstream_only and not any(body.get(k) for k in SAMPLING_ONLY) and (body.get("n") or 1) == 1:
            local = len(self.names) - 1
            table = await asyncio.get_running_loop().run_in_executor(
                self.executor, self.shunt.route_chats, [messages], local
            )
            row = table.iloc[0]
            if row["route"] != OPEN:
                self._count("small")
                usage = {
                    "prompt_tokens": int(row["prompt_tokens"]),
                    "completion_tokens": int(row["completion_tokens"]),
                    "total_tokens": int(row["prompt_tokens"] + row["completion_tokens"]),
                }
                info = {
                    "route": "small",
                    "stage": row["route"],
                    "confidence": float(row["confidence"]),
                    "threshold": float(self.shunt.thresholds_[row["stage"]]),
                }
                return self._local(body, row["text"], usage, info, stream)
            if row["reached"] >= 0:  # the latest local stage's confidence, for the record
                confidence = float(row[f"confidence_{self.names[row['reached']]}"])
        return await self._forward(body, stream, confidence)

    def _count(self, route: str) -> None:
        self.metrics.routed(CHAT, [route], [route == "large"])

    def _local(self, body, text: str, usage: dict, info: dict, stream: bool):
        head = {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "created": int(time.time()),
            "model": body.get("model") or info["stage"],
        }
        headers = {ROUTE_HEADER: "small"}
        if not stream:
            return SafeJSONResponse(
                {
                    **head,
                    "object": "chat.completion",
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "finish_reason": "stop",
                            "logprobs": None,
                        }
                    ],
                    "usage": usage,
                    "datashunt": info,
                },
                headers=headers,
            )

        def chunk(delta, finish=None, **extra):
            return (
                "data: "
                + dumps(
                    {
                        **head,
                        "object": "chat.completion.chunk",
                        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
                        **extra,
                    }
                )
                + "\n\n"
            )

        async def events():
            yield chunk({"role": "assistant", "content": ""}, datashunt=info)
            for piece in re.findall(r"\S*\s*", text):
                if piece:
                    yield chunk({"content": piece})
            yield chunk({}, "stop", usage=usage)
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream", headers=headers)

    async def _forward(self, body, stream: bool, confidence):
        if self.upstream is None:
            raise Failure(503, "the first stage is unsure of this request and no upstream is configured", "not_ready")
        self._count("large")
        request = self.client.build_request(
            "POST",
            self.upstream.url,
            content=dumps({**body, "model": self.upstream.model}).encode(),
            headers={**self.upstream.headers(), "Content-Type": "application/json"},
        )
        try:
            response = await self.client.send(request, stream=True)
        except httpx.HTTPError as exc:
            self.metrics.upstream_errors.inc()
            raise Failure(
                502,
                self.upstream.redact(f"the upstream could not be reached: {type(exc).__name__}: {exc}"),
                "upstream_error",
            ) from None
        headers = {ROUTE_HEADER: "large"}
        if response.status_code >= 400:
            detail = (await response.aread()).decode("utf-8", "replace")[:300]
            await response.aclose()
            self.metrics.upstream_errors.inc()
            raise Failure(
                502,
                self.upstream.redact(f"the upstream answered {response.status_code}: {detail}"),
                "upstream_error",
                headers,
            )
        if stream:

            async def relay():  # whole lines, so that a stream cut at request_timeout ends between events
                try:
                    async for line in response.aiter_lines():
                        yield line + "\n"
                finally:
                    with anyio.CancelScope(shield=True):
                        await response.aclose()

            return StreamingResponse(
                relay(),
                status_code=response.status_code,
                headers=headers,
                media_type=response.headers.get("content-type", "text/event-stream"),
            )
        try:
            answer = json.loads(await response.aread())
        except ValueError:
            self.metrics.upstream_errors.inc()
            raise Failure(
                502, "the upstream answered with something that is not JSON", "upstream_error", headers
            ) from None
        finally:
            await response.aclose()
        if isinstance(answer, dict):  # a NaN confidence (none from the cheap stage) or an infinite δ is written null
            answer["datashunt"] = {
                "route": "large",
                "stage": "upstream",
                "confidence": confidence,
                "threshold": float(self.shunt.thresholds_[-1]),
            }
        return SafeJSONResponse(answer, headers=headers)
