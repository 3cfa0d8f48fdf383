"""The generator interface: text out, with the log-probability of every token it chose.

A generating backend implements :meth:`Generator._generate` (or :meth:`Generator._generate_many`
for several prompts at once); the prompt, the persistent cache, the cost meter and the per-row
flags live here once, as for :class:`~datashunt.backends.base.LargeModel`. A trainable small
generator (:class:`~datashunt.small.captioner.CaptionerGenerator`) fulfils the same contract, so
every stage of a :class:`~datashunt.ShuntGenerator` is asked the same way.
"""

import math
import time
from dataclasses import dataclass, field
from numbers import Integral
from pathlib import PurePath

import numpy as np
from sklearn.utils._param_validation import Interval

from ...core.params import check_params
from ...exceptions import ConfigError, LargeModelError
from ...progress import track
from ..base import Backend, RetrievedShots
from ..cache import call_key
from ..pricing import Price
from ..prompt import check_template

DEFAULT_TEMPLATE = "{instruction}\n{hint}\n{noun}: {text}"


@dataclass
class Generated:
    """One answer: the text, the log-probability of each token chosen (None when the service
    gives none), and what it used."""

    text: str
    token_logprob: list | None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0


@dataclass
class Generation:
    """Answers of one stage for a batch, as parallel lists and arrays.

    ``text`` is None where the stage failed or was not asked (``flag`` says why);
    ``token_logprob`` is None where the text came without log-probabilities (then its confidence
    is unknown and the item is routed on). ``cost`` is what this batch paid (zero for cached
    answers), ``price`` what each answer costs uncached, ``seconds`` how long it took to compute.
    """

    text: list
    token_logprob: list
    cost: np.ndarray
    price: np.ndarray
    cached: np.ndarray
    prompt_tokens: np.ndarray
    completion_tokens: np.ndarray
    seconds: np.ndarray
    flag: list = field(default_factory=list)
    confidence: np.ndarray | None = None
    learnable: np.ndarray | None = None

    def __post_init__(self):
        if self.learnable is None:
            self.learnable = np.zeros(len(self.text), bool)

    @classmethod
    def empty(cls, n: int) -> "Generation":
        """Rows for ``n`` items none of which was asked."""
        return cls(
            [None] * n,
            [None] * n,
            np.zeros(n),
            np.zeros(n),
            np.zeros(n, bool),
            np.zeros(n, int),
            np.zeros(n, int),
            np.full(n, np.nan),
            [None] * n,
            np.full(n, np.nan),
        )

    @property
    def ok(self) -> np.ndarray:
        return np.array([t is not None for t in self.text], dtype=bool)

    def put(self, rows, other: "Generation") -> None:
        """Write ``other``'s answers into ``rows``."""
        for name in (
            "cost",
            "price",
            "cached",
            "prompt_tokens",
            "completion_tokens",
            "seconds",
            "confidence",
            "learnable",
        ):
            getattr(self, name)[rows] = getattr(other, name)
        for name in ("text", "token_logprob", "flag"):
            mine = getattr(self, name)
            for i, value in zip(rows, getattr(other, name)):
                mine[i] = value

    def predicted(self):
        """Generations have no classes: thresholds are single numbers."""
        return None


@dataclass(frozen=True)
class Request:
    """One prompt to send: the item's row, its cache key, the chat messages and the checked item
    (for backends that take it directly, such as image-to-text models)."""

    index: int
    key: str
    messages: list
    item: object = None


def _usable(hit) -> dict | None:
    """A cached answer written by :meth:`Generator.generate`, or None (then it is asked again)."""
    if not isinstance(hit, dict) or not isinstance(hit.get("text"), str):
        return None
    lp = hit.get("token_logprob")
    if lp is not None and not (isinstance(lp, list) and all(isinstance(v, int | float) and v <= 0 for v in lp)):
        return None
    if not all(type(hit.get(k, 0)) is int and hit.get(k, 0) >= 0 for k in ("prompt_tokens", "completion_tokens")):
        return None
    return hit


GENERATOR_CONSTRAINTS = {
    "instruction": [str],
    "template": [str, None],
    "max_new_tokens": [Interval(Integral, 1, 1 << 16, closed="both")],
    "stop": [list, tuple, None],
    "shots": [Interval(Integral, 0, 64, closed="both")],
    "price": [Price, dict, None],
    "cache": ["boolean", str, PurePath],
}


class Generator(RetrievedShots, Backend):
    """Base of the generating backends: text for each item, with its tokens' log-probabilities.

    Parameters shared by every generator: ``instruction`` (what to do with each item),
    ``template`` (how the instruction, an optional ``{hint}`` and the item make the user message;
    fields ``{instruction}``, ``{hint}``, ``{noun}``, ``{text}``), ``max_new_tokens``, ``stop``
    (strings that end an answer, such as ``"\\n"`` for one-line answers), ``shots`` (how many of
    the training pairs most like each item are shown first, as earlier turns of the chat,
    :class:`~datashunt.collab.memory.ExampleMemory`; 0 for none), ``price`` and ``cache`` (as for
    :class:`~datashunt.backends.base.LargeModel`).
    """

    modalities = ("text",)

    def generate(self, inputs, hints=None, progress: bool = False, modality="auto") -> Generation:
        """Generate for each input; failures are flagged per row, never raised.

        ``hints`` (one string or None per input) is put where the template says ``{hint}``: a
        smaller model's draft, for instance. Items that make the same prompt are asked once.
        """
        check_params(self)
        n = len(inputs)
        out = Generation.empty(n)
        if n == 0:
            return out
        batch = self._inputs(inputs, modality)
        kind = batch.modality
        hints = [None] * n if hints is None else list(hints)
        if len(hints) != n:
            raise ConfigError(f"got {len(hints)} hints for {n} inputs")
        problems = batch.problems or [None] * n
        examples = self._examples(batch.items, problems)
        cache = self._cache()
        identity = self.identity()
        pending: dict[str, list[Request]] = {}
        for i, (item, problem, hint, shown) in enumerate(zip(batch.items, problems, hints, examples)):
            if problem is not None:
                out.flag[i] = f"{problem}; not sent"
                continue
            stand_in = kind.prompt_key(item)
            key = call_key(
                identity, self._messages(stand_in, hint, kind.noun, shown), self.max_new_tokens, list(self.stop or ())
            )
            if self._from_cache(out, i, cache, key):
                continue
            content = stand_in if isinstance(stand_in, str) else kind.content(item)
            pending.setdefault(key, []).append(Request(i, key, self._messages(content, hint, kind.noun, shown), item))
        self._ask(out, pending, progress)
        return out

    def chat(self, conversations, progress: bool = False) -> Generation:
        """Answer whole chat conversations (each a list of ``{"role", "content"}`` messages) as
        given: no instruction, template or examples are added. Cached and metered as :meth:`generate`.

        Examples
        --------
        >>> from datashunt.backends.generate.llama_cpp import LlamaCppGenerator
        >>> LlamaCppGenerator("smollm2-135m").chat([]).text
        []
        """
        check_params(self)
        out = Generation.empty(len(conversations))
        cache = self._cache()
        identity = self.identity()
        pending: dict[str, list[Request]] = {}
        for i, messages in enumerate(conversations):
            key = call_key(identity, messages, self.max_new_tokens, list(self.stop or ()))
            if not self._from_cache(out, i, cache, key):
                pending.setdefault(key, []).append(Request(i, key, messages))
        self._ask(out, pending, progress)
        return out

    def _from_cache(self, out: Generation, i: int, cache, key: str) -> bool:
        hit = _usable(cache.get(key)) if cache is not None else None
        if hit is None:
            return False
        self._put(out, i, hit, cached=True)
        return True

    def _ask(self, out: Generation, pending: dict, progress: bool) -> None:
        """Ask one request per distinct prompt (:meth:`~datashunt.backends.base.Backend._dispatch`) into ``out``."""
        self._dispatch(
            pending,
            self._generate_many,
            self._entry,
            lambda request, entry, cached, cost: self._put(out, request.index, entry, cached, cost),
            out.flag,
            progress,
        )

    def _put(self, out: Generation, i: int, entry: dict, cached: bool, cost: float = 0.0) -> None:
        """Write a cache entry (from the cache or just computed) into row ``i`` of ``out``."""
        logprob, tokens = entry.get("token_logprob"), (entry.get("prompt_tokens", 0), entry.get("completion_tokens", 0))
        out.text[i] = entry["text"]
        out.token_logprob[i] = None if logprob is None else np.asarray(logprob, dtype=float)
        out.prompt_tokens[i], out.completion_tokens[i] = tokens
        out.seconds[i] = entry.get("seconds", math.nan)
        out.price[i] = Price.coerce(self.price).cost(*tokens)
        out.cached[i], out.cost[i] = cached, cost
        if logprob is None:
            out.flag[i] = "no log-probabilities: confidence unknown, routed on"

    def _entry(self, request: Request, got: Generated) -> dict:
        """The cache entry of a usable answer (:meth:`_checked`)."""
        got = self._checked(got)
        return {
            "text": got.text,
            "token_logprob": got.token_logprob,
            "prompt_tokens": got.prompt_tokens,
            "completion_tokens": got.completion_tokens,
            "seconds": got.seconds,
        }

    @staticmethod
    def _checked(got: Generated) -> Generated:
        """The answer, its log-probabilities clipped at 0; raises LargeModelError saying why it cannot be used."""
        if not isinstance(got.text, str) or not got.text.strip():
            raise LargeModelError("the generator returned no text")
        if got.token_logprob is not None:
            lp = np.asarray(got.token_logprob, dtype=float)
            if lp.ndim != 1 or not len(lp) or np.isnan(lp).any() or (lp > 1e-6).any():
                raise LargeModelError(
                    f"impossible token log-probabilities ({len(lp)} values, NaN or above 0); "
                    "the answer was not used or cached"
                )
            got.token_logprob = np.minimum(lp, 0.0).tolist()
        return got

    def _messages(self, text, hint, noun: str, examples=None) -> list[dict]:
        template = self.template if self.template is not None else DEFAULT_TEMPLATE
        turns = []
        for shown, answer in examples or ():
            turns += [
                {"role": "user", "content": fill(template, self.instruction, shown, None, noun)},
                {"role": "assistant", "content": answer},
            ]
        return turns + [{"role": "user", "content": fill(template, self.instruction, text, hint, noun)}]

    def price_of(self, prompt_tokens, completion_tokens) -> np.ndarray:
        """Uncached price of answers that used these tokens."""
        price = Price.coerce(self.price)
        return np.array([price.cost(int(p), int(c)) for p, c in zip(prompt_tokens, completion_tokens)])

    # -- what a backend provides -------------------------------------------------------------
    def _generate(self, messages: list[dict], item) -> Generated:
        """Greedy answer to one chat prompt (for the default :meth:`_generate_many`)."""
        raise NotImplementedError(f"{type(self).__name__} implements neither _generate nor _generate_many")

    def _generate_many(self, todo: list[Request], progress: bool):
        """Yield ``(request, Generated | LargeModelError)`` for each request; override to batch."""
        for request in track(todo, "generator", enabled=progress):
            start = time.perf_counter()
            try:
                got = self._generate(request.messages, request.item)
            except LargeModelError as exc:
                yield request, exc
                continue
            got.seconds = time.perf_counter() - start
            yield request, got


def cut_at_stop(text: str, stop) -> tuple[str, bool]:
    """``text`` up to the first stop string, and whether one was found.

    Examples
    --------
    >>> cut_at_stop("freie Software\\nMehr", ["\\n"])
    ('freie Software', True)
    """
    ends = [text.find(s) for s in stop or () if s and s in text]
    return (text[: min(ends)], True) if ends else (text, False)


def fill(template: str, instruction: str, text, hint, noun: str = "Text"):
    """The user message: ``template`` with its fields filled; the ``{hint}`` line disappears when
    there is no hint. A non-string item (an image part) makes a list of content parts.

    Examples
    --------
    >>> fill(DEFAULT_TEMPLATE, "Translate into German.", "free software", None)
    'Translate into German.\\nText: free software'
    >>> fill(DEFAULT_TEMPLATE, "Translate into German.", "free software", "Draft: freie Software")
    'Translate into German.\\nDraft: freie Software\\nText: free software'
    """
    check_template(template.replace("{noun}", "").replace("{labels}", ""))
    head, tail = template.split("{text}")
    parts = [p.replace("{instruction}", instruction).replace("{noun}", noun) for p in (head, tail)]
    parts = [p.replace("{hint}\n", "").replace("{hint}", "") if not hint else p.replace("{hint}", hint) for p in parts]
    if isinstance(text, str):
        return parts[0] + text + parts[1]
    return [{"type": "text", "text": parts[0]}, text, *([{"type": "text", "text": parts[1]}] if parts[1] else [])]
