"""Any OpenAI-compatible chat endpoint (OpenAI, vLLM, a llama.cpp server, Ollama), scored from logprobs."""

import asyncio
import contextlib
import json
import os
import queue
import re
import threading
import time
from numbers import Integral, Real
from urllib.parse import urlsplit

import numpy as np
from scipy.special import logsumexp
from sklearn.utils._param_validation import Interval, InvalidParameterError, StrOptions

from ..core.params import env_name
from ..exceptions import ConfigError, LargeModelError, require
from ..progress import track
from .base import LOGPROB_SLACK, SHARED_CONSTRAINTS, LargeModel, RetrievedShots, Scored

DEFAULT_URL = "https://api.openai.com/v1"
MAX_TOKENS = 10_000_000  # a token count above this in a response is garbage, not usage


def label_logprobs(top_logprobs: list[tuple[str, float]], labels: list[str]) -> np.ndarray:
    """Log-mass per label from the first answer token's top alternatives.

    A token counts for a label when, stripped and lower-cased, it starts that label and no other
    (``"pos"`` counts for ``positive``; ``"ne"`` counts for neither ``negative`` nor ``neutral``).
    Labels absent from the list get ``-inf``.

    Examples
    --------
    >>> label_logprobs([(" Positive", -0.1), ("neg", -2.5), ("The", -4.0)], ["negative", "positive"]).tolist()
    [-2.5, -0.1]
    """
    lowered = [label.lower() for label in labels]
    per_label = [[] for _ in labels]
    for token, logprob in top_logprobs:
        tok = token.strip().lower()
        if not tok:
            continue
        owners = [j for j, name in enumerate(lowered) if name.startswith(tok)]
        if len(owners) == 1:
            per_label[owners[0]].append(logprob)
    return np.array([logsumexp(lp) if lp else -np.inf for lp in per_label])


STATED_SUFFIX = (
    "\nAfter the label, on the same line, give your confidence that it is right as a whole number "
    "from 0 to 100, e.g.: positive 85"
)


def stated_logprobs(content, labels: list[str]) -> np.ndarray:
    """Log-probabilities from an answer that states a label and a confidence (``"positive 85"``).

    The label is the first word that is a label, or the start (three letters at least) of exactly
    one label, case-insensitive; the confidence, the first number after it, is that label's
    probability (at least 1/k), the rest shared evenly.

    Examples
    --------
    >>> np.exp(stated_logprobs("Positive, 80", ["negative", "positive"])).round(2).tolist()
    [0.2, 0.8]
    >>> stated_logprobs("I cannot tell", ["negative", "positive"])
    Traceback (most recent call last):
    ...
    datashunt.exceptions.LargeModelError: the stated-confidence answer 'I cannot tell' names no label and confidence
    """
    text = content if isinstance(content, str) else ""
    for j, end in _named_labels(text, labels):
        number = re.search(r"\d+(?:\.\d+)?", text[end:])
        if number and 0 <= float(number.group()) <= 100:
            k = len(labels)
            top = max(float(number.group()) / 100, 1 / k)
            proba = np.full(k, (1 - top) / (k - 1) if k > 1 else 0.0)
            proba[j] = top
            with np.errstate(divide="ignore"):
                return np.log(proba)
    shown = " ".join(text.split())[:60]
    raise LargeModelError(f"the stated-confidence answer {shown!r} names no label and confidence")


def sampled_logprobs(contents, labels: list[str]) -> np.ndarray:
    """Log-probabilities from several sampled answers: the share of samples naming each label
    (self-consistency). Samples naming no label count against every label, so a model that mostly
    answers off-label gets little mass and is flagged by ``min_label_mass``.

    Examples
    --------
    >>> np.exp(sampled_logprobs(["positive", "Positive.", "negative", "no idea"], ["negative", "positive"])).tolist()
    [0.25, 0.5]
    """
    if not len(contents):
        raise LargeModelError("the endpoint returned no sampled answers")
    counts = np.zeros(len(labels))
    for content in contents:
        named = next(_named_labels(content if isinstance(content, str) else "", labels), None)
        if named is not None:
            counts[named[0]] += 1
    with np.errstate(divide="ignore"):
        return np.log(counts / len(contents))


def _named_labels(text: str, labels: list[str]):
    """Yield ``(label index, end of the word)`` for each word of ``text`` that is a label, or the
    start (three letters at least) of exactly one label, case-insensitive."""
    lowered = [label.lower() for label in labels]
    for match in re.finditer(r"[^\W\d_][\w-]*", text):
        word = match.group().lower()
        owners = [j for j, name in enumerate(lowered) if name == word or (len(word) >= 3 and name.startswith(word))]
        if len(owners) == 1:
            yield owners[0], match.end()


SCORING = ("logprobs", "stated", "sampled")


def http_url(text: str) -> bool:
    """Whether ``text`` is an http or https URL with a host: the only endpoints a chat client can reach.

    Examples
    --------
    >>> http_url("https://api.openai.com/v1"), http_url("ftp://x"), http_url("localhost:8000/v1")
    (True, False, False)
    """
    try:
        parts = urlsplit(text)
        return parts.scheme.lower() in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # an unbalanced bracket in the host, a port that is not a number
        return False


def _with_text(messages: list[dict], text: str) -> list[dict]:
    """``messages`` with ``text`` added to the end of the last one (a string, or a list of content parts)."""
    content = messages[-1]["content"]
    content = content + text if isinstance(content, str) else [*content, {"type": "text", "text": text}]
    return messages[:-1] + [{**messages[-1], "content": content}]


class OpenAIEndpoint:
    """The HTTP side shared by the OpenAI-compatible backends: the key from the environment (never
    stored), the official client, concurrent requests, failures as per-row errors, redaction.
    A backend using it provides ``_request(messages)`` and ``_parse(response, call)``."""

    _progress_name = "large model"

    def _validate_params(self):
        super()._validate_params()
        if not env_name(self.api_key_env):
            raise InvalidParameterError(
                f"The 'api_key_env' parameter must name an environment variable "
                f"(letters, digits, underscores), got {self.api_key_env!r}."
            )
        if self.base_url is not None and not http_url(self.base_url):
            raise InvalidParameterError(
                f"The 'base_url' parameter must be an http:// or https:// URL with a host, "
                f"such as http://127.0.0.1:8000/v1, got {self.base_url!r}."
            )

    def _api_key(self) -> str:
        key = os.environ.get(self.api_key_env)
        if key:
            return key
        if self.base_url is None:
            raise ConfigError(f"set the environment variable {self.api_key_env} to your API key")
        return "not-needed"  # local servers (vLLM, llama.cpp, Ollama) usually accept any key

    def _client(self, asynchronous=False):
        openai = require("openai", "openai")
        cls = openai.AsyncOpenAI if asynchronous else openai.OpenAI
        return cls(api_key=self._api_key(), base_url=self.base_url, timeout=self.timeout, max_retries=self.max_retries)

    @contextlib.contextmanager
    def _failures(self):
        """Turn a failed request (HTTP error, time-out, a body that is not JSON) into a LargeModelError."""
        openai = require("openai", "openai")
        try:
            yield
        except (openai.APIError, json.JSONDecodeError) as exc:
            raise LargeModelError(
                f"call to {self.model!r} failed: {self._redact(f'{type(exc).__name__}: {exc}')}"
            ) from None

    def _usage(self, response) -> list[int]:
        """Prompt and completion tokens of a chat completion, after checking it is one with choices."""
        if not hasattr(response, "choices"):  # the client hands back the body when it is not JSON
            shown = self._redact(" ".join(str(response).split())[:80])
            raise LargeModelError(f"the endpoint answered with something that is not a chat completion: {shown!r}")
        if not response.choices:
            raise LargeModelError(f"the endpoint returned no choices for model {self.model!r}")
        usage = getattr(response, "usage", None)
        tokens = [getattr(usage, name, 0) or 0 for name in ("prompt_tokens", "completion_tokens")]
        if not all(type(t) is int and 0 <= t < MAX_TOKENS for t in tokens):
            raise LargeModelError(f"the endpoint reported impossible token counts {tokens} for model {self.model!r}")
        return tokens

    def _redact(self, message: str) -> str:
        """``message`` with the API key, if it appears, replaced by ``***``."""
        key = os.environ.get(self.api_key_env)
        return message.replace(key, "***") if key else message

    async def _ascore(self, client, semaphore, call):
        async with semaphore:
            start = time.perf_counter()
            try:
                with self._failures():
                    response = await client.chat.completions.create(**self._request(call.messages))
                scored = self._parse(response, call)
            except LargeModelError as exc:
                return call, exc
            scored.seconds = time.perf_counter() - start
            return call, scored

    def _run_all(self, todo, progress):
        """Run the calls concurrently (at most ``max_concurrency`` at once), yielding each as it finishes.

        The requests run on an event loop of their own in a worker thread, so this works the same in
        a script and inside a running event loop (a notebook, an async server). Closing the generator
        early cancels what is still in flight.
        """
        if not todo:
            return
        finished: queue.Queue = queue.Queue()
        loop = asyncio.new_event_loop()

        async def run():
            client = self._client(asynchronous=True)
            semaphore = asyncio.Semaphore(self.max_concurrency)
            tasks = [asyncio.ensure_future(self._ascore(client, semaphore, call)) for call in todo]
            try:
                for done in asyncio.as_completed(tasks):
                    finished.put(await done)
            finally:
                for task in tasks:
                    task.cancel()
                await client.close()

        def work():
            try:
                loop.run_until_complete(run())
            except BaseException as exc:  # noqa: BLE001 - handed over to the caller's thread, raised there
                finished.put(exc)
            finally:
                loop.close()

        def results():
            for _ in todo:
                item = finished.get()
                if isinstance(item, BaseException):
                    raise item
                yield item

        worker = threading.Thread(target=work, name="datashunt-openai", daemon=True)
        worker.start()
        try:
            yield from track(results(), self._progress_name, enabled=progress, total=len(todo))
        finally:
            with contextlib.suppress(RuntimeError):  # the loop may have closed already
                loop.call_soon_threadsafe(lambda: [task.cancel() for task in asyncio.all_tasks(loop)])
            worker.join()


class OpenAIChatModel(OpenAIEndpoint, RetrievedShots, LargeModel):
    """A chat model behind an OpenAI-compatible HTTP API, asked for one token with ``top_logprobs``.

    Parameters
    ----------
    model : str
        Model name as the endpoint knows it.
    base_url : str, optional
        Endpoint root, e.g. ``http://127.0.0.1:8000/v1`` for vLLM or a llama.cpp server. None means OpenAI.
    api_key_env : str
        Name of the environment variable holding the key. The key is read when the first call is
        made and is never stored in parameters, caches, logs or reports.
    timeout, max_retries : float, int
        Per-request time-out in seconds and retries on transient errors (the client's own backoff).
    max_concurrency : int
        Requests in flight at once.
    top_logprobs : int
        Alternatives asked for at the answer position (OpenAI allows up to 20).
    max_chars : int
        Longest text sent; a longer one is not sent and is flagged (the small model answers it).
    scoring : {"logprobs", "stated", "sampled"}
        ``logprobs`` (default) measures each label's probability from the first answer token.
        Two modes serve APIs that give no log-probabilities: ``stated``, where the model answers
        the label and its confidence from 0 to 100, which becomes the label's probability (see
        :func:`stated_logprobs`: the model's claim, not a measurement), and ``sampled``
        (self-consistency), where ``samples`` answers drawn at ``temperature`` in one request
        (the API's ``n``) vote, and each label's share of the votes is its probability (see
        :func:`sampled_logprobs`; costs the output tokens of every sample). Calibrate δ on
        validation data as always; reports and the CLI say which mode is in use.
    samples, temperature : int, float
        ``sampled`` only: answers drawn per item, and the sampling temperature.
    shots : int, default=0
        Solved training examples most like each text shown in its prompt
        (:class:`~datashunt.backends.base.RetrievedShots`; a shunt gives them when it fits).
    prompt, price, cache, min_label_mass
        See :class:`~datashunt.backends.base.LargeModel`.
    """

    modalities = ("text", "rows", "image")  # images go as image_url parts, for vision models
    location_params = ("model", "base_url", "api_key_env")  # on a gateway the model name picks the provider
    _parameter_constraints = {
        "model": [str],
        "base_url": [str, None],
        "api_key_env": [str],
        "timeout": [Interval(Real, 0, 3600, closed="right")],
        "max_retries": [Interval(Integral, 0, 20, closed="both")],
        "max_concurrency": [Interval(Integral, 1, 1024, closed="both")],
        "top_logprobs": [Interval(Integral, 1, 20, closed="both")],
        "max_chars": [Interval(Integral, 1, 10_000_000, closed="both")],
        "scoring": [StrOptions(set(SCORING))],
        "samples": [Interval(Integral, 2, 128, closed="both")],
        "temperature": [Interval(Real, 0, 2, closed="right")],
        "shots": [Interval(Integral, 0, 64, closed="both")],
        **SHARED_CONSTRAINTS,
    }

    def __init__(
        self,
        model,
        *,
        base_url=None,
        api_key_env="OPENAI_API_KEY",
        timeout=30.0,
        max_retries=2,
        max_concurrency=8,
        top_logprobs=20,
        max_chars=20_000,
        scoring="logprobs",
        samples=5,
        temperature=1.0,
        shots=0,
        prompt=None,
        price=None,
        cache=True,
        min_label_mass=0.01,
    ):
        self.model = model
        self.base_url = base_url
        self.api_key_env = api_key_env
        self.timeout = timeout
        self.max_retries = max_retries
        self.max_concurrency = max_concurrency
        self.top_logprobs = top_logprobs
        self.max_chars = max_chars
        self.scoring = scoring
        self.samples = samples
        self.temperature = temperature
        self.shots = shots
        self.prompt = prompt
        self.price = price
        self.cache = cache
        self.min_label_mass = min_label_mass

    def describe(self) -> str:
        mode = {
            "logprobs": "",
            "stated": "; confidence stated by the model, not measured from log-probabilities",
            "sampled": f"; confidence from the votes of {self.samples} samples at temperature {self.temperature} "
            "(self-consistency), not from log-probabilities",
        }[self.scoring]
        return (
            f"model {self.model!r} at {self.base_url or DEFAULT_URL} (OpenAI-compatible HTTP), "
            f"API key from ${self.api_key_env}{mode}"
        )

    def identity(self) -> str:
        mode = {"logprobs": "", "stated": ":stated", "sampled": f":sampled{self.samples}@{self.temperature}"}
        return f"openai:{self.base_url or DEFAULT_URL}:{self.model}" + mode[self.scoring]

    def _request(self, messages):
        if self.scoring == "stated":
            return dict(model=self.model, messages=_with_text(messages, STATED_SUFFIX), max_tokens=16, temperature=0.0)
        if self.scoring == "sampled":
            return dict(model=self.model, messages=messages, max_tokens=8, temperature=self.temperature, n=self.samples)
        return dict(
            model=self.model,
            messages=messages,
            max_tokens=1,
            temperature=0.0,
            logprobs=True,
            top_logprobs=self.top_logprobs,
        )

    def _score_many(self, todo, progress):
        return self._run_all(todo, progress)

    def _parse(self, response, call) -> Scored:
        labels = call.labels
        tokens = self._usage(response)
        if self.scoring == "stated":
            content = getattr(getattr(response.choices[0], "message", None), "content", None)
            return Scored(stated_logprobs(content, labels), *tokens)
        if self.scoring == "sampled":
            contents = [getattr(getattr(choice, "message", None), "content", None) for choice in response.choices]
            return Scored(sampled_logprobs(contents, labels), *tokens)
        try:
            first = response.choices[0].logprobs.content[0]
            top = [(alt.token, alt.logprob) for alt in first.top_logprobs] or [(first.token, first.logprob)]
        except (AttributeError, IndexError, TypeError):
            raise LargeModelError(
                f"the endpoint returned no logprobs for model {self.model!r}; it must support "
                "'logprobs' and 'top_logprobs' in chat completions, or use scoring='stated'"
            ) from None
        numbers = all(isinstance(token, str) and type(lp) in (int, float) and lp <= 1e-6 for token, lp in top)
        if not numbers or logsumexp([lp for _, lp in top]) > LOGPROB_SLACK:
            raise LargeModelError(
                f"the endpoint returned impossible logprobs for model {self.model!r} (not "
                f"numbers, NaN, above 0 or more than 1 in all): {top[:5]}; the answer was not "
                "used or cached"
            )
        return Scored(label_logprobs(top, labels), *tokens)
