"""The large-model interface: probabilities over a label set, from the model's own log-probabilities.

A backend implements :meth:`LargeModel._score`, which returns one log-probability mass per
label for a chat prompt. Everything else lives here once: the prompt, the persistent cache,
the cost meter, the per-row error flags and the renormalisation over the label set (eq. 5).
"""

import abc
import contextlib
import copy
import inspect
import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from numbers import Real
from pathlib import PurePath

import numpy as np
from scipy.special import logsumexp
from sklearn.base import BaseEstimator
from sklearn.utils._param_validation import Interval, InvalidParameterError

from ..collab.memory import ExampleMemory, examples_hint, saved_pairs
from ..core.params import check_params
from ..exceptions import ConfigError, LargeModelError
from ..modalities import as_inputs
from ..progress import track
from .cache import CallCache, call_key, default_cache_dir
from .pricing import Price
from .prompt import Prompt


@dataclass
class Scored:
    """What a backend returns for one prompt: log-mass per label and the tokens it used."""

    label_logprob: np.ndarray
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class Call:
    """One prompt to send: the item's row, its cache key, the messages, the labels offered, the
    item itself as checked by its modality and the hint (for backends that take them directly,
    such as image models; a hint from soft Prompt Pruning carries its probabilities as ``prior``)."""

    index: int
    key: str
    messages: list
    labels: list
    keep: list
    item: object = None
    hint: object = None


@dataclass
class LargeResult:
    """Answers of the large model for a batch of inputs.

    ``proba`` is (n, k) over the labels asked for; a row of NaN marks an item whose call failed,
    and ``error`` says why. ``cost`` is what this batch paid (zero for answers from the cache).
    ``call_seconds`` is how long each answer took when it was computed, cached or not (NaN where
    unknown): what a free local model costs.
    """

    proba: np.ndarray
    cost: np.ndarray
    prompt_tokens: np.ndarray
    cached: np.ndarray
    error: list = field(default_factory=list)
    call_seconds: np.ndarray | None = None

    @property
    def ok(self) -> np.ndarray:
        return ~np.isnan(self.proba).any(axis=1)


LOGPROB_SLACK = 0.01  # a label's log-mass above this (a probability over 1.01) is impossible, not rounding

#: The flag of an item whose call a meter refused (see :func:`metering`).
NOT_ASKED = "not asked: the run's spending limit (max_cost) is reached"

#: The meters watching backends in this context, as ``(backend, meter)`` pairs (see :func:`metering`).
_METERS: ContextVar[tuple] = ContextVar("datashunt_meters", default=())


@contextlib.contextmanager
def metering(meter, backends):
    """Let ``meter`` limit and pay the calls that ``backends`` make in this context (thread) while the block runs.

    ``meter.allowed(model, floor, wanted)`` says how many of ``wanted`` calls to the model whose identity is ``model``
    (each costing at least ``floor``) may go out now; the others are not made and their items are flagged
    :data:`NOT_ASKED`. ``meter.pay(model, cost)`` is told of each answer paid for, as it arrives.
    """
    token = _METERS.set(_METERS.get() + tuple((backend, meter) for backend in backends))
    try:
        yield meter
    finally:
        _METERS.reset(token)


def _put(result: "LargeResult", i: int, keep: list, entry: dict, cached: bool, cost: float = 0.0) -> None:
    """Write a cache entry (from the cache or just computed) over the labels ``keep`` into row ``i`` of ``result``."""
    result.proba[i] = 0.0
    result.proba[i, keep] = entry["proba"]
    result.prompt_tokens[i] = entry["prompt_tokens"]
    result.call_seconds[i] = entry.get("seconds", np.nan)
    result.cached[i] = cached
    result.cost[i] = cost


def _usable(hit, k: int) -> dict | None:
    """A cached answer, or None when it is not one written by this module for ``k`` labels (then it is asked again)."""
    if (
        not isinstance(hit, dict)
        or type(hit.get("prompt_tokens")) is not int
        or hit["prompt_tokens"] < 0
        or type(hit.get("seconds", 0.0)) not in (int, float)
    ):
        return None
    try:
        proba = np.asarray(hit.get("proba"), dtype=float)
    except (TypeError, ValueError):
        return None
    if proba.shape != (k,) or not np.isfinite(proba).all() or (proba < 0).any() or abs(proba.sum() - 1) > 1e-6:
        return None
    return hit


#: Constraints of the settings every backend shares (see :mod:`datashunt.core.params`).
SHARED_CONSTRAINTS = {
    "prompt": [Prompt, str, None],
    "price": [Price, dict, None],
    "cache": ["boolean", str, PurePath],
    "min_label_mass": [Interval(Real, 0, 1, closed="both")],
}


class Backend(BaseEstimator, abc.ABC):
    """What every model behind a service boundary shares, whatever it answers (labels or text):
    the modalities it reads, where its calls go, the persistent cache, the price and what it may
    learn from training items. :class:`LargeModel` (labels) and
    :class:`~datashunt.backends.generate.base.Generator` (text) build on it.
    """

    #: The modalities (:mod:`datashunt.modalities`) this backend can answer about.
    modalities: tuple = ("text", "rows")

    #: Parameters that decide where texts go, which secret is sent or which local file is read.
    #: A loaded model takes them from its caller, never from the saved folder (:mod:`datashunt.io.persist`).
    location_params: tuple = ()

    @classmethod
    def is_default_location(cls, name: str, value) -> bool:
        """Whether ``value`` is the constructor default of the location parameter ``name``."""
        default = inspect.signature(cls.__init__).parameters[name].default
        return default is not inspect.Parameter.empty and default == value

    def describe(self) -> str:
        """Where this model's calls go, in words (shown before the first call)."""
        return self.identity()

    def variant(self, **params) -> "Backend":
        """A copy with other settings (such as a generator's ``stop`` or ``max_new_tokens``) that shares
        this backend's loaded model and cache, and whose calls a meter watching this one pays and limits.

        Examples
        --------
        >>> from datashunt.backends.generate.llama_cpp import LlamaCppGenerator
        >>> LlamaCppGenerator("smollm2-135m", stop=["\\n"]).variant(stop=None).stop is None
        True
        """
        twin = copy.copy(self).set_params(**params)
        twin._metered_as = getattr(self, "_metered_as", self)
        return twin

    def _validate_params(self):
        super()._validate_params()
        try:
            Price.coerce(getattr(self, "price", None))
        except ConfigError as exc:
            raise InvalidParameterError(f"The 'price' parameter is invalid: {exc}.") from None

    @abc.abstractmethod
    def identity(self) -> str:
        """What distinguishes this model's answers in the cache (backend and model name)."""

    def _inputs(self, inputs, modality):
        """The batch read as ``modality``, refused as a whole if this backend cannot answer about it."""
        batch = as_inputs(inputs, modality)
        self.check_modality(batch.modality.name)
        return batch

    def check_modality(self, name: str) -> None:
        """Refuse items of modality ``name`` if this backend cannot answer about them."""
        if name not in self.modalities:
            raise ConfigError(
                f"{type(self).__name__} answers about {', '.join(self.modalities)}, not "
                f"{name} items; choose a backend that takes them"
            )

    def fit(self, X, y):
        """Learn from the labelled training items what this backend may; most need nothing.

        A shunt or cascade calls it on its own copy with the items it trains on (not the ones it
        calibrates on); a few-shot backend draws its examples here.
        """
        return self

    def fitted_state(self) -> dict | None:
        """What :meth:`fit` learnt, as named numpy arrays for a saved model (None: nothing)."""
        return None

    def set_fitted_state(self, state: dict) -> "Backend":
        """Restore :meth:`fitted_state`'s arrays, checking them (a saved file is data)."""
        raise NotImplementedError(f"{type(self).__name__} keeps no fitted state")

    def _examples(self, items, problems) -> list:
        """The solved examples shown with each item (None: none); see :class:`RetrievedShots`."""
        return [None] * len(items)

    def _cache(self) -> CallCache | None:
        cache = getattr(self, "cache", True)
        if cache is False or cache is None:
            return None
        if getattr(self, "_cache_obj", None) is None or self._cache_spec != cache:
            path = default_cache_dir() / "calls.sqlite" if cache is True else cache
            self._cache_obj, self._cache_spec = CallCache(path), cache
        return self._cache_obj

    def _dispatch(self, pending: dict, ask_many, accept, on_answer, errors: list, progress: bool) -> None:
        """Ask once per distinct prompt, share each answer among the requests that make it, and cache it.

        Parameters
        ----------
        pending : dict
            Cache key -> the requests (each with ``index`` and ``key``) that make that prompt; the first is sent.
        ask_many : callable
            ``ask_many(todo, progress)`` yields ``(request, answer | LargeModelError)``; an answer has
            ``prompt_tokens`` and ``completion_tokens``. It is asked within the limit of the meter watching this
            backend (:func:`metering`).
        accept : callable
            ``accept(request, answer)`` returns the cache entry of a usable answer, or raises LargeModelError
            (nothing is cached then).
        on_answer : callable
            ``on_answer(request, entry, cached, cost)`` for each request: the copies count as cached and cost 0.
        errors : list
            The per-row messages, set at the ``index`` of each request whose prompt failed or was not asked.
        progress : bool
            Show a progress bar.
        """
        cache, price = self._cache(), Price.coerce(getattr(self, "price", None))
        for request, answer in self._metered([copies[0] for copies in pending.values()], ask_many, progress):
            copies = pending[request.key]
            if not isinstance(answer, LargeModelError):
                try:
                    entry = accept(request, answer)
                except LargeModelError as exc:
                    answer = exc
            if isinstance(answer, LargeModelError):
                for copy in copies:
                    errors[copy.index] = str(answer)
                continue
            cost = price.cost(answer.prompt_tokens, answer.completion_tokens)
            for copy in copies:
                on_answer(copy, entry, copy is not request, cost if copy is request else 0.0)
            if cache is not None:
                cache.put(request.key, entry)

    def _metered(self, todo: list, ask_many, progress: bool):
        """``ask_many(todo, progress)``'s ``(request, answer | LargeModelError)`` pairs, within the meter's limit.

        Without a meter watching this backend it is ``ask_many`` itself. With one, the requests go out in the
        groups it allows, each answer is paid as it arrives, and those it refuses come back as :data:`NOT_ASKED`.
        """
        meter = self._meter()
        if meter is None:
            yield from ask_many(todo, progress)
            return
        model, price = self.identity(), Price.coerce(getattr(self, "price", None))
        done = 0
        for start, done in self._groups(meter, len(todo), price.cost(0, 0)):
            for request, answer in ask_many(todo[start:done], progress):
                if not isinstance(answer, LargeModelError):
                    meter.pay(model, price.cost(answer.prompt_tokens, answer.completion_tokens))
                yield request, answer
        for request in todo[done:]:
            yield request, LargeModelError(NOT_ASKED)

    def _meter(self):
        """The meter watching this backend's calls in this context (:func:`metering`), or None."""
        me = getattr(self, "_metered_as", self)  # a variant is metered as the backend it was made from
        return next((meter for backend, meter in reversed(_METERS.get()) if backend is me), None)

    def _groups(self, meter, n: int, floor: float):
        """Yield ``(start, stop)`` of the groups of ``n`` calls (each costing at least ``floor``) that ``meter`` lets
        go out in turn, each asked for once the one before is paid; the calls after the last group are refused."""
        start = 0
        while start < n:
            stop = start + meter.allowed(self.identity(), floor, n - start)
            if stop <= start:
                return
            yield start, stop
            start = stop


class RetrievedShots:
    """For a backend with a ``shots`` parameter: each text item is shown the ``shots`` training
    pairs most like it (:class:`~datashunt.collab.memory.ExampleMemory`; 0 for none), task
    knowledge in the prompt with no training. :meth:`fit` keeps the pairs; a saved model keeps
    them as two string arrays.
    """

    def fit(self, X, y):
        """Keep the training pairs to show as examples (``shots > 0``); otherwise nothing to learn.

        ``y`` holds each item's answer: a label word, a reference text, or several references
        (the first is shown).
        """
        if self.shots:
            self.memory_ = ExampleMemory().fit(X, [a if isinstance(a, str) else next(iter(a), "") for a in y])
        return self

    def _examples(self, items, problems) -> list:
        """For each item, its ``shots`` nearest training pairs, the most similar last (nearest the
        item); None for an item with a problem or that is not text."""
        if not self.shots:
            return [None] * len(items)
        memory = getattr(self, "memory_", None)
        if memory is None:
            raise ConfigError(f"shots={self.shots} needs the training pairs: call fit(X, y) first")
        rows = [i for i, p in enumerate(problems) if p is None and isinstance(items[i], str)]
        out = [None] * len(items)
        for i, pairs in zip(rows, memory.nearest([items[i] for i in rows], self.shots) if rows else []):
            out[i] = pairs[::-1]
        return out

    def fitted_state(self) -> dict | None:
        memory = getattr(self, "memory_", None)
        return None if memory is None else {"example_texts": memory.texts_, "example_answers": memory.answers_}

    def set_fitted_state(self, state: dict):
        texts, answers = state.get("example_texts"), state.get("example_answers")
        if not saved_pairs(texts, answers):
            raise ConfigError("the saved example memory must be two string arrays of equal length")
        self.memory_ = ExampleMemory().fit(texts, answers)
        return self


class LargeModel(Backend):
    """Base of the large-model backends: the contract every backend fulfils.

    A backend implements :meth:`identity` and :meth:`_score` (or, for several calls at once,
    :meth:`_score_many`); everything else (prompts, cache, cost meter, flags, renormalisation) is
    shared here. Register it by name with :func:`datashunt.backends.register_backend`.

    Parameters shared by every backend: ``prompt`` (a :class:`~datashunt.backends.prompt.Prompt` or
    an instruction string), ``price`` (a :class:`~datashunt.backends.pricing.Price` or mapping),
    ``cache`` (True for the default on-disk cache, False for none, or a path to a SQLite file)
    and ``min_label_mass`` (answers that put less probability than this on all labels together
    are flagged as off-label instead of being renormalised into a confident-looking guess).
    """

    def predict_proba(
        self, inputs, labels, hints=None, candidates=None, progress: bool = False, modality="auto"
    ) -> LargeResult:
        """Probabilities over ``labels`` for each input; failures are flagged per row, never raised.

        ``inputs`` are read as ``modality`` (see :func:`datashunt.modalities.as_inputs`); an item
        it finds wrong (a blank text, an undecodable image) is flagged and not sent.
        ``hints`` (one string or None per input) is placed in the prompt before the item (soft
        Prompt Pruning); ``candidates`` (one list of label indices or None per input) narrows the
        labels offered for that input (hard Prompt Pruning): the others get probability 0.
        Items that make the same prompt are asked once and share the answer (the copies cost
        nothing and count as cached).
        """
        check_params(self)
        labels = [str(label) for label in labels]
        if len(labels) < 1 or len(set(labels)) != len(labels):
            raise ConfigError(f"labels must be distinct and non-empty, got {labels!r}")
        n, k = len(inputs), len(labels)
        result = LargeResult(
            proba=np.full((n, k), np.nan),
            cost=np.zeros(n),
            prompt_tokens=np.zeros(n, dtype=int),
            cached=np.zeros(n, dtype=bool),
            error=[None] * n,
            call_seconds=np.full(n, np.nan),
        )
        if n == 0:
            return result
        batch = self._inputs(inputs, modality)
        kind = batch.modality
        hints = [None] * n if hints is None else list(hints)
        candidates = [None] * n if candidates is None else list(candidates)
        problems = batch.problems or [None] * n
        examples = self._examples(batch.items, problems)
        prompt = self._prompt()
        cache = self._cache()
        identity = self.identity()
        max_chars = getattr(self, "max_chars", None)
        pending: dict[str, list[Call]] = {}  # one request per distinct prompt, its answer fanned out
        for i, (item, problem, hint, keep, shown) in enumerate(zip(batch.items, problems, hints, candidates, examples)):
            if problem is not None:
                result.error[i] = f"{problem}; not sent"
                continue
            stand_in = kind.prompt_key(item)
            if max_chars is not None and isinstance(stand_in, str) and len(stand_in) > max_chars:
                result.error[i] = (
                    f"text of {len(stand_in):,} characters is longer than this backend takes "
                    f"(max_chars={max_chars:,}); not sent"
                )
                continue
            keep = list(range(k)) if keep is None else list(keep)
            offered = [labels[j] for j in keep]
            told = "\n".join(filter(None, [examples_hint(shown), hint])) or None
            messages = prompt.messages(stand_in, offered, told, kind.noun)
            key = call_key(identity, messages, offered)
            hit = _usable(cache.get(key), len(keep)) if cache is not None else None
            if hit is not None:
                _put(result, i, keep, hit, cached=True)
                continue
            if key not in pending and not isinstance(stand_in, str):  # the real content, only for calls made
                messages = prompt.messages(kind.content(item), offered, told, kind.noun)
            pending.setdefault(key, []).append(Call(i, key, messages, offered, keep, item, hint))
        self._dispatch(
            pending,
            self._score_many,
            self._entry,
            lambda call, entry, cached, cost: _put(result, call.index, call.keep, entry, cached, cost),
            result.error,
            progress,
        )
        return result

    def price_of(self, prompt_tokens: np.ndarray) -> np.ndarray:
        """Uncached price of calls that used these prompt tokens (one output token each)."""
        price = Price.coerce(getattr(self, "price", None))
        return np.array([price.cost(int(t), 1) for t in prompt_tokens], dtype=float)

    # -- what a backend provides -------------------------------------------------------------
    def _score(self, messages: list[dict], labels: list[str]) -> Scored:
        """Log-probability mass of each label as the model's next answer (for the default :meth:`_score_many`)."""
        raise NotImplementedError(f"{type(self).__name__} implements neither _score nor _score_many")

    def _score_many(self, todo: list["Call"], progress: bool):
        """Yield ``(call, Scored | LargeModelError)`` for each call; override for concurrency."""
        for call in track(todo, "large model", enabled=progress):
            start = time.perf_counter()
            try:
                scored = self._score(call.messages, call.labels)
            except LargeModelError as exc:
                yield call, exc
                continue
            scored.seconds = time.perf_counter() - start
            yield call, scored

    # -- shared helpers -----------------------------------------------------------------------
    def _entry(self, call: Call, scored: Scored) -> dict:
        """The cache entry of a usable answer: its probabilities over the labels offered (:meth:`_normalise`)."""
        proba = self._normalise(scored.label_logprob, call.labels)
        return {"proba": proba.tolist(), "prompt_tokens": scored.prompt_tokens, "seconds": scored.seconds}

    def _prompt(self) -> Prompt:
        prompt = getattr(self, "prompt", None)
        if prompt is None:
            return Prompt()
        if isinstance(prompt, str):
            return Prompt(instruction=prompt)
        if isinstance(prompt, Prompt):
            return prompt
        raise ConfigError(f"prompt must be a Prompt or an instruction string, got {type(prompt).__name__}")

    def _normalise(self, label_logprob: np.ndarray, labels: list[str]) -> np.ndarray:
        logp = np.asarray(label_logprob, dtype=float)
        if logp.shape != (len(labels),) or np.isnan(logp).any() or (logp > LOGPROB_SLACK).any():
            raise LargeModelError(
                f"impossible log-probabilities {np.round(logp, 4).tolist()} for the labels "
                f"{labels} (NaN, or a probability above 1); the answer was not used or cached"
            )
        mass = float(np.exp(logsumexp(logp))) if np.isfinite(logp).any() else 0.0
        floor = getattr(self, "min_label_mass", 0.0)
        if mass <= 0.0 or mass < floor:
            raise LargeModelError(
                f"off-label answer: only {mass:.2%} of the next-token probability fell on the labels "
                f"{labels} (minimum {floor:.2%})"
            )
        return np.exp(logp - logsumexp(logp))
