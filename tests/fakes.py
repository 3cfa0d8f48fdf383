"""Fakes for tests: a scripted large model and an OpenAI-compatible HTTP server on loopback."""

import json
import re
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from datashunt.backends.base import LargeModel, RetrievedShots, Scored
from datashunt.backends.generate.base import Generated, Generator
from datashunt.exceptions import LargeModelError


class FakeLargeModel(RetrievedShots, LargeModel):
    """Answers from a lookup table of item -> label; everything else in the base class is real.

    ``accuracy`` < 1 makes it wrong on a fixed, seeded share of items; items in ``fail`` raise a
    LargeModelError, items in ``off_label`` put almost no probability on any label; ``shots``
    shows retrieved training examples in the prompt, as the chat backends do.
    """

    def __init__(
        self,
        truth=None,
        *,
        accuracy=1.0,
        confidence=0.9,
        fail=(),
        off_label=(),
        cache=False,
        price=None,
        min_label_mass=0.01,
        seed=0,
        shots=0,
    ):
        self.truth = truth
        self.accuracy = accuracy
        self.confidence = confidence
        self.fail = fail
        self.off_label = off_label
        self.cache = cache
        self.price = price
        self.min_label_mass = min_label_mass
        self.seed = seed
        self.shots = shots

    def identity(self):
        return f"fake:{self.seed}:{self.accuracy}"

    def _score(self, messages, labels):
        self.calls = getattr(self, "calls", 0) + 1
        self.last_prompt = messages[-1]["content"]
        text = re.search(r"\n(?:Text|Features): (.*)\Z", self.last_prompt, re.S).group(1)
        if text in set(map(str, self.fail)):
            raise LargeModelError(f"simulated time-out on {text!r}")
        if text in set(map(str, self.off_label)):
            return Scored(np.full(len(labels), np.log(1e-5)), prompt_tokens=10)
        truth = {str(k): str(v) for k, v in (self.truth or {}).items()}
        answer = truth.get(text, labels[0])
        rng = np.random.default_rng([self.seed, zlib.crc32(text.encode())])
        if rng.random() > self.accuracy:
            answer = [label for label in labels if label != answer][0]
        p = np.full(len(labels), (1 - self.confidence) / max(len(labels) - 1, 1))
        p[labels.index(answer)] = self.confidence
        return Scored(np.log(p * 0.95), prompt_tokens=len(text.split()) + 20, completion_tokens=1)


class LoopbackServer:
    """A threaded HTTP server on 127.0.0.1 serving ``handler``; a context manager, ``base_url`` its /v1."""

    def _serve(self, handler):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self):
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


class FakeOpenAIServer(LoopbackServer):
    """A real HTTP server on 127.0.0.1 speaking the chat-completions API with logprobs.

    ``answers`` maps a substring of the user message to a list of (token, logprob); ``status``
    makes every request fail with that HTTP status; ``delay`` sleeps before answering; ``raw``
    maps a substring of the user message to a (body bytes, content type) sent instead of a completion;
    ``sequence`` answers with all the tokens of the matching list, one logprob entry each (generation);
    ``refuse`` answers the first requests with these HTTP statuses in turn (429 and 503 with a
    ``Retry-After`` of ``retry_after`` seconds), then normally. Each request's arrival time is kept.
    """

    def __init__(
        self, answers, status=None, delay=0.0, logprobs=True, raw=None, sequence=False, refuse=(), retry_after="1"
    ):
        self.answers, self.status, self.delay, self.logprobs = answers, status, delay, logprobs
        self.sequence = sequence
        self.refuse, self.retry_after = list(refuse), retry_after
        self.raw = raw or {}
        self.requests = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                import time

                server.requests.append(
                    {"body": body, "auth": self.headers.get("Authorization"), "at": time.monotonic()}
                )
                if server.refuse:
                    data = json.dumps({"error": {"message": "slow down", "type": "rate_limit"}}).encode()
                    self.send_response(server.refuse.pop(0))
                    self.send_header("Retry-After", server.retry_after)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                if server.delay:
                    time.sleep(server.delay)
                text = json.dumps(body["messages"][-1]["content"])  # a string, or content parts (images)
                raw = next((v for k, v in server.raw.items() if k in text), None)
                content_type = "application/json"
                if raw is not None:
                    (data, content_type), code = raw, 200
                elif server.status:
                    payload, code = {"error": {"message": "boom", "type": "server_error"}}, server.status
                    data = json.dumps(payload).encode()
                elif body.get("stream"):
                    self.stream(server.completion(body))
                    return
                else:
                    data, code = json.dumps(server.completion(body)).encode(), 200
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def stream(self, completion):
                """The completion as server-sent events: a role chunk, one chunk per word, [DONE]."""
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                head = {k: completion[k] for k in ("id", "created", "model")}
                words = re.findall(r"\S*\s*", completion["choices"][0]["message"]["content"])
                deltas = [{"role": "assistant", "content": ""}] + [{"content": w} for w in words if w]
                for i, delta in enumerate(deltas + [{}]):
                    chunk = {
                        **head,
                        "object": "chat.completion.chunk",
                        "choices": [{"index": 0, "delta": delta, "finish_reason": None if delta or not i else "stop"}],
                    }
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                    self.wfile.flush()
                self.wfile.write(b"data: [DONE]\n\n")

        self._serve(Handler)

    def completion(self, body):
        """One choice per ``n`` asked (choice i answers the i-th token of the matching list, cycling)."""
        text = json.dumps(body["messages"][-1]["content"])
        top = next((v for k, v in self.answers.items() if k in text), [("Hmm", -0.1)])
        logprobs = {
            "content": [
                {
                    "token": top[0][0],
                    "logprob": top[0][1],
                    "bytes": None,
                    "top_logprobs": [{"token": t, "logprob": lp, "bytes": None} for t, lp in top],
                }
            ]
        }
        n = body.get("n") or 1
        if self.sequence:
            logprobs = {"content": [{"token": t, "logprob": lp, "bytes": None, "top_logprobs": []} for t, lp in top]}
            top = [("".join(t for t, _ in top), 0.0)]
        return {
            "id": "cmpl-1",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [
                {
                    "index": i,
                    "finish_reason": "length",
                    "logprobs": logprobs if self.logprobs else None,
                    "message": {"role": "assistant", "content": top[i % len(top)][0]},
                }
                for i in range(n)
            ],
            "usage": {"prompt_tokens": 42, "completion_tokens": n, "total_tokens": 42 + n},
        }


class FakeGenerator(Generator):
    """Answers from a lookup table of item -> (text, token probabilities); everything else in the
    base class (prompt, cache, flags, cost) is real. Items in ``fail`` raise a LargeModelError,
    items in ``no_logprobs`` come back without log-probabilities; the prompt seen last is kept."""

    def __init__(
        self,
        table=None,
        *,
        name="fake",
        fail=(),
        no_logprobs=(),
        instruction="Translate.",
        template=None,
        max_new_tokens=16,
        stop=None,
        shots=0,
        price=None,
        cache=False,
    ):
        self.table = table
        self.name = name
        self.fail = fail
        self.no_logprobs = no_logprobs
        self.instruction = instruction
        self.template = template
        self.max_new_tokens = max_new_tokens
        self.stop = stop
        self.shots = shots
        self.price = price
        self.cache = cache

    def identity(self):
        return f"fake_generator:{self.name}"

    def _generate(self, messages, item):
        self.calls = getattr(self, "calls", []) + [item]
        self.last_messages = messages
        if item in self.fail:
            raise LargeModelError("upstream error 500")
        text, probs = self.table[item]
        logprob = None if item in self.no_logprobs else np.log(probs).tolist()
        return Generated(text, logprob, prompt_tokens=10, completion_tokens=len(probs))


class EndlessStreamServer(LoopbackServer):
    """An OpenAI-compatible upstream on 127.0.0.1 that streams chat-completion chunks every
    ``every`` seconds and never ends. ``closed`` is set once the client has hung up on it."""

    def __init__(self, every=0.05):
        self.every, self.requests, self.closed = every, [], threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                import time

                server.requests.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                chunk = {
                    "id": "cmpl-endless",
                    "object": "chat.completion.chunk",
                    "created": 0,
                    "model": "m",
                    "choices": [{"index": 0, "delta": {"content": "more "}, "finish_reason": None}],
                }
                try:
                    while True:
                        self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                        self.wfile.flush()
                        time.sleep(server.every)
                except OSError:  # the client hung up
                    server.closed.set()

        self._serve(Handler)
