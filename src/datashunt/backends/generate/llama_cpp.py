"""A local GGUF chat model generating greedily through llama.cpp, keeping each chosen token's log-probability."""

from numbers import Integral
from pathlib import PurePath

import numpy as np
from sklearn.utils._param_validation import Interval

from ...exceptions import LargeModelError
from ..llama_cpp import eval_prompt, gguf_path, load, model_identity, next_logprob
from ..weights import DEFAULT_MODEL, MODELS
from .base import GENERATOR_CONSTRAINTS, Generated, Generator, cut_at_stop

STOP_TEXTS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<end_of_turn>", "</s>")


class LlamaCppGenerator(Generator):
    """Greedy decoding of a GGUF chat model in this process; each token's log-probability is read
    from the full next-token distribution, so the sequence confidence needs nothing from the server.

    Parameters
    ----------
    model : str
        A known model name (``qwen2.5-coder-1.5b``, ``qwen2.5-coder-0.5b``, ``smollm2-135m``)
        installed by ``datashunt setup``, or the path to any ``.gguf`` file.
    instruction, template, max_new_tokens, stop, shots, price, cache
        See :class:`~datashunt.backends.generate.base.Generator`.
    n_ctx, n_threads, reuse_prefix
        As for :class:`~datashunt.backends.llama_cpp.LlamaCppModel`. A prompt that leaves fewer
        than ``max_new_tokens`` of the context free is refused with a flag, never cut silently.

    Examples
    --------
    >>> LlamaCppGenerator("qwen2.5-coder-0.5b", instruction="Translate into German.").max_new_tokens
    48
    """

    location_params = ("model",)
    _parameter_constraints = {
        "model": [str, PurePath],
        "n_ctx": [Interval(Integral, 16, 1 << 20, closed="both")],
        "n_threads": [Interval(Integral, 1, 1024, closed="both"), None],
        "reuse_prefix": ["boolean"],
        **GENERATOR_CONSTRAINTS,
    }

    def __init__(
        self,
        model=DEFAULT_MODEL,
        *,
        instruction="",
        template=None,
        max_new_tokens=48,
        stop=None,
        shots=0,
        n_ctx=2048,
        n_threads=None,
        reuse_prefix=True,
        price=None,
        cache=True,
    ):
        self.model = model
        self.instruction = instruction
        self.template = template
        self.max_new_tokens = max_new_tokens
        self.stop = stop
        self.shots = shots
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.reuse_prefix = reuse_prefix
        self.price = price
        self.cache = cache

    @classmethod
    def is_default_location(cls, name, value) -> bool:
        """A model installed by ``datashunt setup`` is named, not located: any known name is safe to load."""
        return name == "model" and str(value) in MODELS

    def describe(self) -> str:
        return f"local llama.cpp model {self.model}, generating (in this process, no network)"

    def identity(self) -> str:
        return f"llama_cpp_generate:{model_identity(self.model)}"

    def _llm(self):
        if getattr(self, "_loaded", None) is None:
            llm, self._formatter = load(gguf_path(self.model), self.n_ctx, self.n_threads)
            stops = {llm.token_eos()}
            for text in STOP_TEXTS:
                ids = llm.tokenize(text.encode(), add_bos=False, special=True)
                if len(ids) == 1:
                    stops.add(ids[0])
            self._stops = stops
            self._loaded = llm
        return self._loaded

    def _generate(self, messages, item) -> Generated:
        llm = self._llm()
        prompt = self._formatter(messages=messages).prompt
        tokens = llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
        if len(tokens) + self.max_new_tokens > self.n_ctx:
            raise LargeModelError(
                f"prompt of {len(tokens)} tokens leaves less than max_new_tokens="
                f"{self.max_new_tokens} of the context n_ctx={self.n_ctx}; not sent "
                "(shorten the text or raise n_ctx)"
            )
        logp = eval_prompt(llm, tokens, self.reuse_prefix)
        chosen, logprobs = [], []
        try:
            for _ in range(self.max_new_tokens):
                token = int(np.argmax(logp))
                if token in self._stops:
                    break
                chosen.append(token)
                logprobs.append(float(logp[token]))
                if self.stop and cut_at_stop(llm.detokenize(chosen).decode("utf-8", "ignore"), self.stop)[1]:
                    break
                llm.eval([token])
                logp = next_logprob(llm)
        except RuntimeError as exc:
            llm.reset()
            raise LargeModelError(f"llama.cpp failed while generating: {exc}") from None
        text, stopped = cut_at_stop(llm.detokenize(chosen).decode("utf-8", "replace"), self.stop)
        if stopped:  # the token that held the stop string is not part of the answer
            logprobs = logprobs[:-1] or logprobs
        return Generated(text.strip(), logprobs, prompt_tokens=len(tokens), completion_tokens=len(chosen))

    def __getstate__(self):
        state = self.__dict__.copy()
        for runtime in ("_loaded", "_formatter", "_stops", "_cache_obj", "_cache_spec"):
            state.pop(runtime, None)
        return state
