"""A local GGUF model through the llama.cpp bindings (llama-cpp-python), scored from next-token logits."""

import hashlib
import os
import time
from numbers import Integral
from pathlib import Path, PurePath

import numpy as np
from scipy.special import log_softmax, logsumexp
from sklearn.utils._param_validation import Interval, StrOptions

from ..exceptions import ConfigError, LargeModelError, ModelFileError, require
from ..progress import track
from .base import SHARED_CONSTRAINTS, Call, LargeModel, RetrievedShots, Scored
from .prompt import surface_forms
from .weights import DEFAULT_MODEL, MODELS, is_installed, model_path

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


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
        llm = llama_cpp.Llama(
            model_path=str(path), n_ctx=n_ctx, n_threads=n_threads or os.cpu_count(), logits_all=False, verbose=False
        )
    except (ValueError, RuntimeError) as exc:
        raise ModelFileError(
            f"llama.cpp could not load {path}: {exc}. The file may be truncated or "
            "corrupt; delete it and run datashunt setup again"
        ) from None
    template = llm.metadata.get("tokenizer.chat_template") or CHATML
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter  # noqa: PLC0415 (llama_cpp: optional extra)

    def token_text(key):
        tid = int(llm.metadata.get(key, -1))
        return llm.detokenize([tid], special=True).decode("utf-8", "ignore") if tid >= 0 else ""

    formatter = Jinja2ChatFormatter(
        template,
        eos_token=token_text("tokenizer.ggml.eos_token_id"),
        bos_token=token_text("tokenizer.ggml.bos_token_id"),
    )
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


class Batched:
    """Prompts evaluated several at a time in one llama.cpp decode, one KV-cache sequence each,
    every sequence a copy of their shared prefix (evaluated once and kept while it stays the same).

    Runs in a second llama.cpp context on the same weights (the first has room for one sequence).
    """

    def __init__(self, llm, size: int):
        llama_cpp = require("llama_cpp", "llama")
        from llama_cpp import _internals  # noqa: PLC0415 (llama_cpp: optional extra)

        params = llama_cpp.llama_context_params.from_buffer_copy(llm.context_params)
        params.n_seq_max, params.kv_unified = size + 1, True  # sequence 0 holds the shared prefix
        self._lib, self.size, self.n_vocab = llama_cpp, size, llm.n_vocab()
        self.n_ctx, self.n_batch = int(params.n_ctx), int(params.n_batch)
        self._ctx = _internals.LlamaContext(model=llm._model, params=params, verbose=False)
        self._batch = _internals.LlamaBatch(n_tokens=self.n_batch, embd=0, n_seq_max=1, verbose=False)
        self.prefix: list[int] = []

    def fits(self, prompts: list[list[int]]) -> bool:
        """Whether these prompts can go in one decode (their suffixes within a batch, all within the context)."""
        start = self._start(prompts)
        tails = sum(len(p) - start for p in prompts)
        return len(prompts) <= self.size and tails <= self.n_batch and start + tails <= self.n_ctx

    def _start(self, prompts) -> int:
        """Where the prompts' own tokens begin: after the kept prefix when they all share it, else
        after their common prefix (which then replaces it)."""
        common = _common_prefix(prompts)
        kept = len(self.prefix)
        return kept if kept and common[:kept] == self.prefix else len(common)

    def logprobs(self, prompts: list[list[int]]) -> list[np.ndarray]:
        """The next token's log-probabilities after each prompt (at most ``size``, fitting together)."""
        lib, memory = self._lib, self._ctx.memory
        start = self._start(prompts)
        try:
            if prompts[0][:start] != self.prefix:
                lib.llama_memory_clear(memory, True)
                self.prefix = []
                for at in range(0, start, self.n_batch):
                    self._decode([(prompts[0][at : min(start, at + self.n_batch)], 0, at)])
                self.prefix = prompts[0][:start]
            for seq in range(1, self.size + 1):  # every earlier batch's sequences go, so the cells are free
                lib.llama_memory_seq_rm(memory, seq, -1, -1)
            for seq in range(1, len(prompts) + 1):
                lib.llama_memory_seq_cp(memory, 0, seq, -1, -1)
            rows = self._decode([(p[start:], seq, start) for seq, p in enumerate(prompts, start=1)])
        except RuntimeError as exc:
            lib.llama_memory_clear(memory, True)
            self.prefix = []
            raise LargeModelError(f"llama.cpp failed to evaluate a batch of prompts: {exc}") from None
        return [
            log_softmax(
                np.ctypeslib.as_array(lib.llama_get_logits_ith(self._ctx.ctx, row), shape=(self.n_vocab,)).astype(
                    np.float64
                )
            )
            for row in rows
        ]

    def _decode(self, parts) -> list[int]:
        """One decode of ``(tokens, sequence, first position)`` parts; the batch row of each part's last token."""
        batch, rows = self._batch.batch, []
        batch.n_tokens = 0
        for tokens, seq, position in parts:
            for offset, token in enumerate(tokens):
                row = batch.n_tokens
                batch.token[row], batch.pos[row], batch.n_seq_id[row] = token, position + offset, 1
                batch.seq_id[row][0], batch.logits[row] = seq, False
                batch.n_tokens += 1
            batch.logits[batch.n_tokens - 1] = True
            rows.append(batch.n_tokens - 1)
        code = self._lib.llama_decode(self._ctx.ctx, batch)
        if code != 0:
            raise RuntimeError(f"llama_decode returned {code}")
        return rows


def _common_prefix(prompts: list[list[int]]) -> list[int]:
    """The tokens every prompt starts with, leaving at least one token of each to evaluate."""
    shortest = min(len(p) for p in prompts) - 1
    first = np.asarray(prompts[0][:shortest])
    end = shortest
    for p in prompts[1:]:
        differ = np.flatnonzero(np.asarray(p[:end]) != first[:end])
        end = int(differ[0]) if len(differ) else end
    return list(prompts[0][:end])


def next_logprob(llm) -> np.ndarray:
    """Log-probabilities of the token after what ``llm`` has evaluated."""
    logits = np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(llm.n_vocab(),))
    return log_softmax(logits.astype(np.float64))


class LlamaCppModel(RetrievedShots, LargeModel):
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
    batch_size : int
        Prompts evaluated together in one llama.cpp decode (``first_token`` scoring only): each
        in its own KV-cache sequence copied from their shared prefix, which takes a second context
        on the same weights. 1 evaluates them one at a time. On 2 CPU cores 4 answered about 1.2
        times as many prompts per second (benchmarks/README.md, "Large calls in batches");
        probabilities differ from one at a time only by the arithmetic's rounding.
    label_scoring : {"first_token", "whole"}
        ``first_token`` (default, one evaluation per item) sums the next-token probability of each
        label's surface forms' first tokens, and refuses labels that share one; ``whole`` scores
        every surface form token by token (one more evaluation per extra token), so labels such as
        ``very good`` and ``very bad`` can be told apart.
    shots : int, default=0
        Solved training examples most like each text shown in its prompt
        (:class:`~datashunt.backends.base.RetrievedShots`; a shunt gives them when it fits).
    prompt, price, cache, min_label_mass
        See :class:`~datashunt.backends.base.LargeModel`.
    """

    location_params = ("model",)
    _parameter_constraints = {
        "model": [str, PurePath],
        "n_ctx": [Interval(Integral, 16, 1 << 20, closed="both")],
        "n_threads": [Interval(Integral, 1, 1024, closed="both"), None],
        "reuse_prefix": ["boolean"],
        "batch_size": [Interval(Integral, 1, 64, closed="both")],
        "label_scoring": [StrOptions({"first_token", "whole"})],
        "shots": [Interval(Integral, 0, 64, closed="both")],
        **SHARED_CONSTRAINTS,
    }

    def __init__(
        self,
        model=DEFAULT_MODEL,
        *,
        n_ctx=2048,
        n_threads=None,
        reuse_prefix=True,
        batch_size=4,
        label_scoring="first_token",
        shots=0,
        prompt=None,
        price=None,
        cache=True,
        min_label_mass=0.05,
    ):
        self.model = model
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.reuse_prefix = reuse_prefix
        self.batch_size = batch_size
        self.label_scoring = label_scoring
        self.shots = shots
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
            ids = [
                {llm.tokenize(form.encode(), add_bos=False, special=False)[0] for form in surface_forms(label)}
                for label in labels
            ]
            shared = {t for i, a in enumerate(ids) for b in ids[i + 1 :] for t in a & b}
            ids = [sorted(a - shared) for a in ids]
            empty = [label for label, a in zip(labels, ids) if not a]
            if empty:
                raise ConfigError(
                    f"labels {empty} start with the same token as another label, so the model's "
                    "first answer token cannot tell them apart; rename them (label_names) or "
                    "score whole labels (label_scoring='whole')"
                )
            self._label_ids[key] = ids
        return self._label_ids[key]

    def _label_sequences(self, labels: list[str]) -> list[list[tuple]]:
        """The distinct token sequences of each label's surface forms."""
        key = ("whole",) + tuple(labels)
        if key not in self._label_ids:
            llm = self._loaded
            self._label_ids[key] = [
                sorted(
                    {tuple(llm.tokenize(form.encode(), add_bos=False, special=False)) for form in surface_forms(label)}
                )
                for label in labels
            ]
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
    def _tokens(self, messages) -> list[int]:
        """The chat prompt's tokens, refused when they do not fit the context."""
        llm = self._llm()
        tokens = llm.tokenize(self._formatter(messages=messages).prompt.encode("utf-8"), add_bos=False, special=True)
        if len(tokens) >= self.n_ctx:
            raise LargeModelError(
                f"prompt of {len(tokens)} tokens does not fit the context of {self.n_ctx}; "
                "shorten the text or raise n_ctx"
            )
        return tokens

    def _score(self, messages, labels) -> Scored:
        llm = self._llm()
        tokens = self._tokens(messages)
        logp = eval_prompt(llm, tokens, self.reuse_prefix)
        if self.label_scoring == "first_token":
            return self._first_token_scored(logp, labels, len(tokens))
        try:
            label_logp = self._whole_labels(llm, len(tokens), logp, labels)
        except RuntimeError as exc:
            llm.reset()
            raise LargeModelError(f"llama.cpp failed to evaluate a label: {exc}") from None
        return Scored(label_logp, prompt_tokens=len(tokens), completion_tokens=1)

    def _first_token_scored(self, logp, labels, n_tokens: int) -> Scored:
        label_logp = np.array([logsumexp(logp[ids]) for ids in self._first_tokens(labels)])
        return Scored(label_logp, prompt_tokens=n_tokens, completion_tokens=1)

    def _score_many(self, todo: list[Call], progress: bool):
        """One call at a time, or ``batch_size`` at a time in one decode (:class:`Batched`)."""
        if self.batch_size == 1 or self.label_scoring != "first_token":
            yield from super()._score_many(todo, progress)
            return
        group = []
        for call in track(todo, "large model", enabled=progress):
            try:
                group.append((call, self._tokens(call.messages)))
            except LargeModelError as exc:
                yield call, exc
            if len(group) == self.batch_size:
                yield from self._score_group(group)
                group = []
        yield from self._score_group(group)

    def _score_group(self, group):
        """Yield ``(call, Scored | LargeModelError)`` for calls scored together where they fit."""
        if not group:
            return
        if getattr(self, "_batched", None) is None:
            self._batched = Batched(self._llm(), self.batch_size)
        prompts = [tokens for _, tokens in group]
        if len(group) > 1 and not self._batched.fits(prompts):  # too long together: halve (one alone always fits)
            yield from self._score_group(group[: len(group) // 2])
            yield from self._score_group(group[len(group) // 2 :])
            return
        start = time.perf_counter()
        try:
            logps = self._batched.logprobs(prompts)
        except LargeModelError as exc:
            for call, _ in group:
                yield call, exc
            return
        seconds = (time.perf_counter() - start) / len(group)
        for (call, tokens), logp in zip(group, logps):
            scored = self._first_token_scored(logp, call.labels, len(tokens))
            scored.seconds = seconds
            yield call, scored

    def __getstate__(self):
        state = self.__dict__.copy()
        for runtime in ("_loaded", "_formatter", "_label_ids", "_batched", "_cache_obj", "_cache_spec"):
            state.pop(runtime, None)
        return state
