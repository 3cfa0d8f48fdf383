"""The large-model interface: probabilities over a label set, from the model's own log-probabilities.

A backend implements :meth:`LargeModel._score`, which returns one log-probability mass per
label for a chat prompt. Everything else lives here once: the prompt, the persistent cache,
the cost meter, the per-row error flags and the renormalisation over the label set (eq. 5).
"""

from dataclasses import dataclass, field

import numpy as np
from scipy.special import logsumexp
from sklearn.base import BaseEstimator

from ..exceptions import ConfigError, LargeModelError
from ..prompting import Prompt
from .cache import CallCache, call_key, default_cache_dir
from .pricing import Price


@dataclass
class Scored:
    """What a backend returns for one prompt: log-mass per label and the tokens it used."""

    label_logprob: np.ndarray
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True)
class Call:
    """One prompt to send: the item's row, its cache key, the messages and the labels offered."""

    index: int
    key: str
    messages: list
    labels: list
    keep: list


@dataclass
class LargeResult:
    """Answers of the large model for a batch of inputs.

    ``proba`` is (n, k) over the labels asked for; a row of NaN marks an item whose call failed,
    and ``error`` says why. ``cost`` is what this batch paid (zero for answers from the cache).
    """

    proba: np.ndarray
    cost: np.ndarray
    prompt_tokens: np.ndarray
    cached: np.ndarray
    error: list = field(default_factory=list)

    @property
    def ok(self) -> np.ndarray:
        return ~np.isnan(self.proba).any(axis=1)


class LargeModel(BaseEstimator):
    """Base of the large-model backends.

    Parameters shared by every backend: ``prompt`` (a :class:`~datashunt.prompting.Prompt` or
    an instruction string), ``price`` (a :class:`~datashunt.large.pricing.Price` or mapping),
    ``cache`` (True for the default on-disk cache, False for none, or a path to a SQLite file)
    and ``min_label_mass`` (answers that put less probability than this on all labels together
    are flagged as off-label instead of being renormalised into a confident-looking guess).
    """

    def predict_proba(self, inputs, labels, hints=None, candidates=None, progress: bool = False) -> LargeResult:
        """Probabilities over ``labels`` for each input; failures are flagged per row, never raised.

        ``hints`` (one string or None per input) is placed in the prompt before the text (soft
        Prompt Pruning); ``candidates`` (one list of label indices or None per input) narrows the
        labels offered for that input (hard Prompt Pruning): the others get probability 0.
        """
        labels = [str(label) for label in labels]
        if len(labels) < 1 or len(set(labels)) != len(labels):
            raise ConfigError(f"labels must be distinct and non-empty, got {labels!r}")
        n, k = len(inputs), len(labels)
        hints = [None] * n if hints is None else list(hints)
        candidates = [None] * n if candidates is None else list(candidates)
        result = LargeResult(
            proba=np.full((n, k), np.nan),
            cost=np.zeros(n),
            prompt_tokens=np.zeros(n, dtype=int),
            cached=np.zeros(n, dtype=bool),
            error=[None] * n,
        )
        prompt = self._prompt()
        cache = self._cache()
        identity = self.identity()
        todo = []
        for i, (text, hint, keep) in enumerate(zip(inputs, hints, candidates)):
            keep = list(range(k)) if keep is None else list(keep)
            offered = [labels[j] for j in keep]
            messages = prompt.messages(str(text), offered, hint)
            call = Call(i, call_key(identity, messages, offered), messages, offered, keep)
            hit = cache.get(call.key) if cache is not None else None
            if hit is not None:
                result.proba[i] = 0.0
                result.proba[i, keep] = hit["proba"]
                result.prompt_tokens[i] = hit["prompt_tokens"]
                result.cached[i] = True
            else:
                todo.append(call)
        price = Price.coerce(getattr(self, "price", None))
        for call, scored in self._score_many(todo, progress):
            i = call.index
            if isinstance(scored, LargeModelError):
                result.error[i] = str(scored)
                continue
            try:
                proba = self._normalise(scored.label_logprob, call.labels)
            except LargeModelError as exc:
                result.error[i] = str(exc)
                continue
            result.proba[i] = 0.0
            result.proba[i, call.keep] = proba
            result.prompt_tokens[i] = scored.prompt_tokens
            result.cost[i] = price.cost(scored.prompt_tokens, scored.completion_tokens)
            if cache is not None:
                cache.put(call.key, {"proba": proba.tolist(), "prompt_tokens": scored.prompt_tokens})
        return result

    def price_of(self, prompt_tokens: np.ndarray) -> np.ndarray:
        """Uncached price of calls that used these prompt tokens (one output token each)."""
        price = Price.coerce(getattr(self, "price", None))
        return np.array([price.cost(int(t), 1) for t in prompt_tokens], dtype=float)

    # -- what a backend provides -------------------------------------------------------------
    def identity(self) -> str:
        """What distinguishes this model's answers in the cache (backend and model name)."""
        raise NotImplementedError

    def _score(self, messages: list[dict], labels: list[str]) -> Scored:
        """Log-probability mass of each label as the model's next answer."""
        raise NotImplementedError

    def _score_many(self, todo: list["Call"], progress: bool):
        """Yield ``(call, Scored | LargeModelError)`` for each call; override for concurrency."""
        from ..progress import track

        for call in track(todo, "large model", enabled=progress):
            try:
                yield call, self._score(call.messages, call.labels)
            except LargeModelError as exc:
                yield call, exc

    # -- shared helpers -----------------------------------------------------------------------
    def _prompt(self) -> Prompt:
        prompt = getattr(self, "prompt", None)
        if prompt is None:
            return Prompt()
        if isinstance(prompt, str):
            return Prompt(instruction=prompt)
        if isinstance(prompt, Prompt):
            return prompt
        raise ConfigError(f"prompt must be a Prompt or an instruction string, got {type(prompt).__name__}")

    def _cache(self) -> CallCache | None:
        cache = getattr(self, "cache", True)
        if cache is False or cache is None:
            return None
        if getattr(self, "_cache_obj", None) is None or self._cache_spec != cache:
            path = default_cache_dir() / "calls.sqlite" if cache is True else cache
            self._cache_obj, self._cache_spec = CallCache(path), cache
        return self._cache_obj

    def _normalise(self, label_logprob: np.ndarray, labels: list[str]) -> np.ndarray:
        logp = np.asarray(label_logprob, dtype=float)
        mass = float(np.exp(logsumexp(logp))) if np.isfinite(logp).any() else 0.0
        floor = getattr(self, "min_label_mass", 0.0)
        if mass <= 0.0 or mass < floor:
            raise LargeModelError(
                f"off-label answer: only {mass:.2%} of the next-token probability fell on the labels "
                f"{labels} (minimum {floor:.2%})"
            )
        return np.exp(logp - logsumexp(logp))
