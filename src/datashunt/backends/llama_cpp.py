"""A local GGUF model through the llama.cpp bindings (llama-cpp-python), scored from next-token logits."""

import hashlib
import os
from numbers import Integral
from pathlib import Path, PurePath

import numpy as np
from scipy.special import log_softmax, logsumexp
from sklearn.utils._param_validation import Interval, StrOptions

from ..exceptions import ConfigError, LargeModelError, ModelFileError, require
from .base import SHARED_CONSTRAINTS, LargeModel, Scored
from .prompt import surface_forms
from .weights import DEFAULT_MODEL, MODELS, is_installed, model_path

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def gguf_path(model) -> Path:
    """The GGUF file of a known model name (installed by ``datashunt setup``) or a path, checked."""
    if str(model) in MODELS:
        if not is_installed(model):
            raise ModelFileError(f"model {model!r} is not installed; run: datashunt setup --model {model}")
        return model_path(model)
    path = Path(model).expanduser()
    if not path.is_file():
        raise ModelFileError(f"no GGUF file at {path}; give a known model name {sorted(MODELS)} or a .gguf path")
    with open(path, "rb") as fh:
        if fh.read(4) != b"GGUF":
            raise ModelFileError(f"{path} is not a GGUF file (bad magic bytes); is it corrupt or another format?")
    return path


def model_identity(model) -> str:
    """A known model's name, or a GGUF file's name, with a fingerprint of the file (name and size)."""
    path = gguf_path(model)
    fingerprint = hashlib.sha256(f"{path.name}:{path.stat().st_size}".encode()).hexdigest()[:16]
    return f"{model if str(model) in MODELS else path.name}:{fingerprint}"


def load(path: Path, n_ctx: int, n_threads=None):
    """A llama.cpp model from a GGUF file and the chat formatter its metadata asks for."""
    llama_cpp = require("llama_cpp", "llama")
    try:
        llm = llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, n_threads=n_threads or os.cpu_count(),
                              logits_all=False, verbose=False)
    except (ValueError, RuntimeError) as exc:
        raise ModelFileError(f"llama.cpp could not load {path}: {exc}. The file may be truncated or "
                             "corrupt; delete it and run datashunt setup again") from None
    template = llm.metadata.get("tokenizer.chat_template") or CHATML
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    def token_text(key):
        tid = int(llm.metadata.get(key, -1))
        return llm.detokenize([tid], special=True).decode("utf-8", "ignore") if tid >= 0 else ""

    formatter = Jinja2ChatFormatter(template, eos_token=token_text("tokenizer.ggml.eos_token_id"),
                                    bos_token=token_text("tokenizer.ggml.bos_token_id"))
    return llm, formatter


def eval_prompt(llm, tokens: list[int], reuse_prefix: bool) -> np.ndarray:
    """Evaluate ``tokens`` (keeping the KV cache of the longest prefix shared with the last
    prompt when ``reuse_prefix``) and return the next token's log-probabilities."""
    keep = 0
    if reuse_prefix:
        cached = llm.input_ids[: llm.n_tokens]
        limit = min(len(cached), len(tokens) - 1)
        same = np.flatnonzero(np.asarray(cached[:limit]) != np.asarray(tokens[:limit]))
        keep = int(same[0]) if len(same) else limit
    llm.n_tokens = keep
    try:
        llm.eval(tokens[keep:])
    except RuntimeError as exc:
        llm.reset()
        raise LargeModelError(f"llama.cpp failed to evaluate the prompt: {exc}") from None
    return next_logprob(llm)


def next_logprob(llm) -> np.ndarray:
    """Log-probabilities of the token after what ``llm`` has evaluated."""
    logits = np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(llm.n_vocab(),))
    return log_softmax(logits.astype(np.float64))


class LlamaCppModel(LargeModel):
    """A GGUF chat model run in-process; a label's probability is the summed next-token
    probability of the first tokens of its surface forms (``positive``, `` Positive``, ...),
    renormalised over the label set.

    Parameters
    ----------
    model : str
        A known model name (``qwen2.5-coder-1.5b``, the default; ``qwen2.5-coder-0.5b``;
        ``smollm2-135m``), installed by ``datashunt setup``, or the path to any ``.gguf`` file.
    n_ctx : int
        Context length in tokens.
    n_threads : int, optional
        CPU threads; all cores by default.
    reuse_prefix : bool
        Keep the evaluated prompt in the KV cache and only evaluate what differs from the next
        prompt (the instruction and label list are shared by every item).
    label_scoring : {"first_token", "whole"}
        ``first_token`` (default, one evaluation per item) sums the next-token probability of each
        label's surface forms' first tokens, and refuses labels that share one; ``whole`` scores
        every surface form token by token (one more evaluation per extra token), so labels such as
        ``very good`` and ``very bad`` can be told apart.
    prompt, price, cache, min_label_mass
        See :class:`~datashunt.backends.base.LargeModel`.
    """

    location_params = ("model",)
    _parameter_constraints = {
        "model": [str, PurePath],
        "n_ctx": [Interval(Integral, 16, 1 << 20, closed="both")],
        "n_threads": [Interval(Integral, 1, 1024, closed="both"), None],
        "reuse_prefix": ["boolean"],
        "label_scoring": [StrOptions({"first_token", "whole"})],
        **SHARED_CONSTRAINTS,
    }

    def __init__(self, model=DEFAULT_MODEL, *, n_ctx=2048, n_threads=None, reuse_prefix=True,
                 label_scoring="first_token", prompt=None, price=None, cache=True, min_label_mass=0.05):
        self.model = model
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.reuse_prefix = reuse_prefix
        self.label_scoring = label_scoring
        self.prompt = prompt
        self.price = price
        self.cache = cache
        self.min_label_mass = min_label_mass

    # -- loading -------------------------------------------------------------------------------
    def _path(self) -> Path:
        return gguf_path(self.model)

    @classmethod
    def is_default_location(cls, name, value) -> bool:
        """A model installed by ``datashunt setup`` is named, not located: any known name is safe to load."""
        return name == "model" and str(value) in MODELS

    def describe(self) -> str:
        return f"local llama.cpp model {self.model} (in this process, no network)"

    def identity(self) -> str:
        whole = ":whole" if self.label_scoring == "whole" else ""  # answers scored otherwise are cached apart
        return f"llama_cpp:{model_identity(self.model)}{whole}"

    def _llm(self):
        if getattr(self, "_loaded", None) is None:
            self._loaded, self._formatter = load(self._path(), self.n_ctx, self.n_threads)
            self._label_ids = {}
        return self._loaded

    def _first_tokens(self, labels: list[str]) -> list[list[int]]:
        """Distinct first-token ids per label; a token shared by two labels counts for neither."""
        key = tuple(labels)
        if key not in self._label_ids:
            llm = self._loaded
            ids = [{llm.tokenize(form.encode(), add_bos=False, special=False)[0] for form in surface_forms(label)}
                   for label in labels]
            shared = {t for i, a in enumerate(ids) for b in ids[i + 1:] for t in a & b}
            ids = [sorted(a - shared) for a in ids]
            empty = [label for label, a in zip(labels, ids) if not a]
            if empty:
                raise ConfigError(f"labels {empty} start with the same token as another label, so the model's "
                                  "first answer token cannot tell them apart; rename them (label_names) or "
                                  "score whole labels (label_scoring='whole')")
            self._label_ids[key] = ids
        return self._label_ids[key]

    def _label_sequences(self, labels: list[str]) -> list[list[tuple]]:
        """The distinct token sequences of each label's surface forms."""
        key = ("whole",) + tuple(labels)
        if key not in self._label_ids:
            llm = self._loaded
            self._label_ids[key] = [sorted({tuple(llm.tokenize(form.encode(), add_bos=False, special=False))
                                            for form in surface_forms(label)}) for label in labels]
        return self._label_ids[key]

    def _whole_labels(self, llm, n_prompt: int, logp, labels) -> np.ndarray:
        """Log-probability of each label as a whole: summed over its surface forms, each the product
        of its tokens' probabilities, read one token at a time after the prompt, then rewound."""
        out = []
        for forms in self._label_sequences(labels):
            per_form = []
            for seq in forms:
                total = logp[seq[0]]
                for previous, token in zip(seq[:-1], seq[1:]):
                    llm.eval([previous])
                    total += next_logprob(llm)[token]
                llm.n_tokens = n_prompt  # back to the prompt for the next form (its KV cache is kept)
                per_form.append(total)
            out.append(logsumexp(per_form))
        return np.array(out)

    # -- scoring -------------------------------------------------------------------------------
    def _score(self, messages, labels) -> Scored:
        llm = self._llm()
        label_ids = self._first_tokens(labels) if self.label_scoring == "first_token" else None
        text = self._formatter(messages=messages).prompt
        tokens = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        if len(tokens) >= self.n_ctx:
            raise LargeModelError(f"prompt of {len(tokens)} tokens does not fit the context of {self.n_ctx}; "
                                  "shorten the text or raise n_ctx")
        logp = eval_prompt(llm, tokens, self.reuse_prefix)
        if label_ids is None:
            try:
                label_logp = self._whole_labels(llm, len(tokens), logp, labels)
            except RuntimeError as exc:
                llm.reset()
                raise LargeModelError(f"llama.cpp failed to evaluate a label: {exc}") from None
        else:
            label_logp = np.array([logsumexp(logp[ids]) for ids in label_ids])
        return Scored(label_logp, prompt_tokens=len(tokens), completion_tokens=1)

    def __getstate__(self):
        state = self.__dict__.copy()
        for runtime in ("_loaded", "_formatter", "_label_ids", "_cache_obj", "_cache_spec"):
            state.pop(runtime, None)
        return state
