"""Greedy generation with a transformers model (causal, sequence-to-sequence or image-to-text) from a
local folder or hub id, keeping each chosen token's log-probability.

Prompts are batched (left-padded for decoder-only models); each answer's log-probabilities are the
model's own: the log-softmax of its raw logits at every token it chose
(``compute_transition_scores(sequences, logits, normalize_logits=True)``), one value per token of
the answer's text. Tokens that are not part of the text (padding, the end-of-sequence token, a
forced start or language token: any special token) carry none.
"""

import hashlib
import re
import time
from dataclasses import dataclass
from numbers import Integral
from pathlib import Path, PurePath

import numpy as np
from sklearn.utils._param_validation import Interval, StrOptions

from ...exceptions import ConfigError, LargeModelError, ModelFileError, require
from ...progress import track
from .base import GENERATOR_CONSTRAINTS, Generated, Generator, Request, cut_at_stop

KINDS = ("auto", "causal", "seq2seq", "image-to-text")

#: Model types read as image-to-text when the installed transformers lists none (it normally does).
IMAGE_TO_TEXT_TYPES = frozenset({"vision-encoder-decoder", "blip", "blip-2", "git", "instructblip", "pix2struct"})

#: Model types whose ``generate`` continues a text prefix after the image (BLIP conditional captioning).
PREFIX_CAPTIONERS = frozenset({"blip", "blip-2", "git"})

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_POSITION_ATTRS = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length", "max_sequence_length")
_SMALL_FILE = 1 << 20  # files up to this size are fingerprinted by their whole content, larger ones sampled
_SAMPLES, _CHUNK = 16, 1 << 16
_RUNTIME = (
    "_model",
    "_tokenizer",
    "_processor",
    "_image_processor",
    "_chat",
    "_torch_device",
    "_loaded_spec",
    "_kind_spec",
    "_limit",
    "_skip_ids",
    "_eos_ids",
    "_pad_id",
    "_cache_obj",
    "_cache_spec",
)


@dataclass
class _Prepared:
    """A request ready for the model: prompt token ids (text kinds) or the image and its text prompt."""

    request: Request
    ids: list
    image: object = None
    text: str | None = None


class TransformersGenerator(Generator):
    """Greedy decoding of a transformers model in this process: a causal LM (GPT-2, Llama, Qwen,
    SmolLM...), a sequence-to-sequence model (T5, BART, Marian...) or an image-to-text model
    (a ``VisionEncoderDecoderModel`` such as ViT-GPT2, BLIP, BLIP-2, GIT, a chat vision-language
    model) answering about H×W×C images.

    The model is loaded on first use (needs ``pip install 'datashunt[clip]'``: torch and
    transformers). A causal model with a chat template gets the chat (``apply_chat_template`` with
    the generation prompt); any other text model gets the messages' contents joined by newlines. An
    image-to-text model captions the image: plainly by default, or, for a model that continues a
    text prefix (BLIP, BLIP-2, GIT), after ``instruction`` when it is not empty (such as
    ``"a picture of"``; template and hints are not read there). A chat vision-language model (its
    processor has a chat template: LLaVA, Qwen2-VL, SmolVLM...) gets the chat, the image in the
    user's turn. The prompt is never repeated in the answer, and ``prompt_tokens`` counts the text
    prompt's tokens (with the image's placeholder tokens for a chat model; none for plain captions).
    The model's own generation settings (a repetition penalty, forced tokens) still shape which token
    is chosen; the log-probability kept is that of the unprocessed logits.

    Parameters
    ----------
    model : str or path
        A folder written by ``save_pretrained`` (model, tokenizer or processor files) or a Hugging
        Face hub id.
    kind : {"auto", "causal", "seq2seq", "image-to-text"}, default="auto"
        Which kind of model it is; ``"auto"`` reads the config: image-text models
        (``AutoModelForImageTextToText``) are image-to-text, other encoder-decoders seq2seq, the
        rest causal. The instance answers about images when it is image-to-text, texts otherwise.
    instruction, template, max_new_tokens, stop, shots, price, cache
        See :class:`~datashunt.backends.generate.base.Generator`. A prompt that leaves fewer than
        ``max_new_tokens`` of the model's positions free (for an encoder-decoder: longer than its
        encoder takes) is flagged and not sent, never cut silently.
    batch_size : int, default=8
        Prompts per ``generate`` call. A batch that fails is flagged row by row; the others go on.
    local_files_only : bool, default=True
        Read the files from disk only. With False a hub id not yet in the local Hugging Face cache is
        downloaded on first use.
    device : str, default="cpu"
        A torch device (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``) or ``"auto"`` (CUDA when present).

    Examples
    --------
    >>> gen = TransformersGenerator("google/flan-t5-small", instruction="Translate into German.", stop=["\\n"])
    >>> gen.max_new_tokens, gen.batch_size
    (48, 8)
    >>> answers = gen.generate(["free software"])  # doctest: +SKIP
    >>> answers.text, answers.token_logprob[0].sum() < 0  # doctest: +SKIP
    (['Freie Software'], True)
    """

    location_params = ("model", "local_files_only")  # a saved folder may not switch downloads on
    _parameter_constraints = {
        "model": [str, PurePath],
        "kind": [StrOptions(set(KINDS))],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "local_files_only": ["boolean"],
        "device": [str],
        **GENERATOR_CONSTRAINTS,
    }

    def __init__(
        self,
        model,
        *,
        kind="auto",
        instruction="",
        template=None,
        max_new_tokens=48,
        stop=None,
        shots=0,
        batch_size=8,
        local_files_only=True,
        device="cpu",
        price=None,
        cache=True,
    ):
        self.model = model
        self.kind = kind
        self.instruction = instruction
        self.template = template
        self.max_new_tokens = max_new_tokens
        self.stop = stop
        self.shots = shots
        self.batch_size = batch_size
        self.local_files_only = local_files_only
        self.device = device
        self.price = price
        self.cache = cache

    # -- what the instance is --------------------------------------------------------------------
    @property
    def modalities(self) -> tuple:
        """``("image",)`` for an image-to-text model, ``("text",)`` otherwise (``kind="auto"`` reads the config)."""
        return ("image",) if self._resolved_kind() == "image-to-text" else ("text",)

    def describe(self) -> str:
        source = "local files only" if self.local_files_only else "may download from the Hugging Face Hub"
        return f"transformers {self.kind} generator {str(self.model)!r} (in this process on {self.device}; {source})"

    def identity(self) -> str:
        kind = self._resolved_kind()
        source = self._source()
        if not Path(source).is_dir() and not self.local_files_only:
            self._load()  # the weights are downloaded first, so the fingerprint covers them
        folder = self._folder(source)
        name = Path(source).name if Path(source).is_dir() else source
        return f"transformers_generate:{name}:{kind}:{fingerprint(folder)}"

    def _source(self) -> str:
        """The folder (as a string) or the hub id to load; a path that names nothing is refused."""
        text = str(self.model)
        where = Path(text).expanduser()
        if where.is_dir():
            return str(where)
        if where.exists():
            raise ModelFileError(
                f"model {text!r} is a file; give the folder written by save_pretrained "
                "(config, weights and tokenizer files) or a hub id"
            )
        if isinstance(self.model, PurePath) or not _HUB_ID.match(text):
            raise ModelFileError(
                f"no model folder at {text!r}; give a folder written by save_pretrained or a "
                "Hugging Face hub id such as 'google/flan-t5-small'"
            )
        return text

    def _folder(self, source: str) -> Path:
        """The folder holding the model's files: ``source`` itself or its snapshot in the hub cache."""
        if Path(source).is_dir():
            return Path(source)
        transformers = require("transformers", "clip")
        try:
            config = transformers.utils.cached_file(source, "config.json", local_files_only=True)
        except Exception as exc:  # noqa: BLE001 - any failure to find the files is a configuration problem
            raise ConfigError(
                f"cannot find the files of {source!r} in the Hugging Face cache: {exc}. Give a folder "
                "written by save_pretrained, or set local_files_only=False to download"
            ) from None
        return Path(config).parent

    def _resolved_kind(self) -> str:
        if self.kind != "auto":
            return self.kind
        spec = (str(self.model), bool(self.local_files_only))
        cached = getattr(self, "_kind_spec", None)
        if cached is not None and cached[0] == spec:
            return cached[1]
        transformers = require("transformers", "clip")
        source = self._source()
        try:
            config = transformers.AutoConfig.from_pretrained(source, local_files_only=bool(self.local_files_only))
        except Exception as exc:  # noqa: BLE001
            raise ConfigError(f"cannot read the model config of {source!r}: {type(exc).__name__}: {exc}") from None
        kind = kind_of(config)
        self._kind_spec = (spec, kind)
        return kind

    # -- loading ---------------------------------------------------------------------------------
    def _load(self):
        """The model and its tokenizer (and processor), loaded once per (model, kind, device, local_files_only)."""
        kind = self._resolved_kind()
        spec = (str(self.model), kind, str(self.device), bool(self.local_files_only))
        if getattr(self, "_loaded_spec", None) == spec:
            return self._model
        torch = require("torch", "clip")
        transformers = require("transformers", "clip")
        source, local = self._source(), bool(self.local_files_only)
        device = self._resolve_device(torch)
        dtype = torch.float32 if device.type == "cpu" else "auto"  # half precision is slow or missing on a CPU
        processor = image_processor = None
        try:
            if kind == "image-to-text":
                require("PIL.Image", "clip")
                auto = (
                    getattr(transformers, "AutoModelForImageTextToText", None)
                    or getattr(transformers, "AutoModelForVision2Seq", None)
                    or transformers.VisionEncoderDecoderModel
                )
                model = auto.from_pretrained(source, local_files_only=local, dtype=dtype)
                processor = transformers.AutoProcessor.from_pretrained(source, local_files_only=local)
                image_processor = getattr(processor, "image_processor", None)
                tokenizer = getattr(processor, "tokenizer", None)
                if image_processor is None:  # a folder with an image processor and a tokenizer, no processor
                    processor = None
                    image_processor = transformers.AutoImageProcessor.from_pretrained(source, local_files_only=local)
                    tokenizer = transformers.AutoTokenizer.from_pretrained(source, local_files_only=local)
            else:
                auto = transformers.AutoModelForCausalLM if kind == "causal" else transformers.AutoModelForSeq2SeqLM
                model = auto.from_pretrained(source, local_files_only=local, dtype=dtype)
                tokenizer = transformers.AutoTokenizer.from_pretrained(source, local_files_only=local)
        except Exception as exc:  # noqa: BLE001 - any failure to read the files is a configuration problem
            raise ConfigError(
                f"cannot load a {kind} model from {source!r}: {type(exc).__name__}: {exc}. Give a folder written by "
                "save_pretrained (config, weights and tokenizer or processor files) or a hub id whose files are "
                "already in the Hugging Face cache (with local_files_only=True nothing is downloaded); check kind="
                f"{self.kind!r}"
            ) from None
        if tokenizer is None or not hasattr(model, "generate"):
            raise ConfigError(
                f"{source!r} holds no tokenizer or no generating model ({type(model).__name__}); "
                f"TransformersGenerator takes a {kind} model that can generate"
            )
        try:
            model = model.to(device).eval()
        except (RuntimeError, ValueError) as exc:
            raise ConfigError(f"cannot move the model to device {self.device!r}: {exc}") from None
        self._model, self._tokenizer, self._torch_device = model, tokenizer, device
        self._processor, self._image_processor = processor, image_processor
        self._chat = processor is not None and bool(getattr(processor, "chat_template", None))
        if self._chat:
            tokenizer.padding_side = "left"  # the prompts of a decoder-only batch end together
        self._limit = _max_positions(model.config, kind, tokenizer)
        settings = getattr(model, "generation_config", None)
        self._eos_ids = _ids(getattr(settings, "eos_token_id", None)) | _ids(tokenizer.eos_token_id)
        pads = _ids(getattr(settings, "pad_token_id", None))
        self._pad_id = min(_ids(tokenizer.pad_token_id) or pads or self._eos_ids or {0})
        self._skip_ids = self._eos_ids | pads | {self._pad_id} | set(getattr(tokenizer, "all_special_ids", ()))
        self._loaded_spec = spec
        return model

    def _resolve_device(self, torch):
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        try:
            return torch.device(self.device)
        except (RuntimeError, ValueError) as exc:
            raise ConfigError(
                f"device {self.device!r} is not a torch device ('cpu', 'cuda', 'mps' or 'auto'): {exc}"
            ) from None

    # -- generating ------------------------------------------------------------------------------
    def _generate_many(self, todo: list[Request], progress: bool):
        """Yield ``(request, Generated | LargeModelError)``: prompts checked one by one, then batched."""
        if not todo:
            return
        self._load()
        ready = []
        for request in todo:
            try:
                ready.append(self._prepare(request))
            except LargeModelError as exc:
                yield request, exc
            except Exception as exc:  # noqa: BLE001 - a prompt the tokenizer or template refuses is one row's flag
                yield request, LargeModelError(f"could not build the prompt: {type(exc).__name__}: {exc}")
        ready.sort(key=lambda p: len(p.ids))  # similar lengths together: less padding
        size = int(self.batch_size)
        batches = [ready[i : i + size] for i in range(0, len(ready), size)]
        for batch in track(batches, "generator", enabled=progress):
            start = time.perf_counter()
            try:
                answers = self._run(batch)
            except Exception as exc:  # noqa: BLE001 - one failed batch is flagged; the other batches go on
                for prepared in batch:
                    yield (
                        prepared.request,
                        LargeModelError(
                            f"{type(self).__name__} failed on a batch of {len(batch)}: {type(exc).__name__}: {exc}"
                        ),
                    )
                continue
            seconds = (time.perf_counter() - start) / len(batch)
            for prepared, got in zip(batch, answers):
                got.seconds = seconds
                yield prepared.request, got

    def _prepare(self, request: Request) -> _Prepared:
        """The prompt's token ids (or the image and its text prompt), refused when it does not fit the model."""
        tokenizer, kind = self._tokenizer, self._resolved_kind()
        if kind == "image-to-text":
            return self._prepare_image(request)
        if kind == "causal" and getattr(tokenizer, "chat_template", None):
            text = tokenizer.apply_chat_template(request.messages, add_generation_prompt=True, tokenize=False)
            ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        else:
            ids = list(tokenizer("\n".join(_text(m["content"]) for m in request.messages))["input_ids"])
        limit = self._limit
        if limit is not None and kind == "causal" and len(ids) + self.max_new_tokens > limit:
            raise LargeModelError(
                f"prompt of {len(ids)} tokens leaves less than max_new_tokens={self.max_new_tokens} "
                f"of the model's {limit} positions; not sent (shorten the text or lower "
                "max_new_tokens)"
            )
        if limit is not None and kind == "seq2seq" and len(ids) > limit:
            raise LargeModelError(
                f"prompt of {len(ids)} tokens is longer than the model's {limit} input positions; "
                "not sent (shorten the text)"
            )
        if not ids:
            raise LargeModelError("the prompt made no tokens; not sent")
        return _Prepared(request, ids)

    def _prepare_image(self, request: Request) -> _Prepared:
        pil = require("PIL.Image", "clip")
        item = np.asarray(request.item)
        if item.ndim != 3 or item.dtype != np.uint8 or item.shape[2] not in (1, 3):
            raise LargeModelError(f"expected an H×W×C uint8 image, got {item.dtype} of shape {item.shape}")
        image = pil.fromarray(np.repeat(item, 3, axis=2) if item.shape[2] == 1 else item)
        if self._chat:  # a chat vision-language model: the user's turn with the image in its place
            text = self._processor.apply_chat_template(
                [_with_image(m) for m in request.messages], add_generation_prompt=True, tokenize=False
            )
            ids = list(self._processor(images=[image], text=[text], return_tensors="np")["input_ids"][0])
        else:
            prefix = self.instruction.strip()
            takes_text = self._processor is not None and _model_type(self._model.config) in PREFIX_CAPTIONERS
            text = prefix if prefix and takes_text else None
            ids = [] if text is None else list(self._tokenizer(text, add_special_tokens=False)["input_ids"])
        if self._limit is not None and len(ids) + self.max_new_tokens > self._limit:
            raise LargeModelError(
                f"prompt of {len(ids)} tokens leaves less than max_new_tokens={self.max_new_tokens} "
                f"of the model's {self._limit} text positions; not sent (lower max_new_tokens or "
                "shorten the instruction)"
            )
        return _Prepared(request, ids, image, text)

    def _run(self, batch: list[_Prepared]) -> list[Generated]:
        """One ``generate`` call for the batch; each row's text and its tokens' log-probabilities."""
        torch = require("torch", "clip")
        model, device = self._model, self._torch_device
        options = dict(
            do_sample=False,
            num_beams=1,
            max_new_tokens=int(self.max_new_tokens),
            output_scores=True,
            output_logits=True,
            return_dict_in_generate=True,
        )
        if self._resolved_kind() == "image-to-text":
            images = [p.image for p in batch]
            texts = [p.text for p in batch]
            if self._processor is not None and texts[0] is not None:
                inputs = self._processor(images=images, text=texts, return_tensors="pt", padding=True)
            elif self._processor is not None:
                inputs = self._processor(images=images, return_tensors="pt")
            else:
                inputs = self._image_processor(images=images, return_tensors="pt")
            inputs = {k: _to(v, device, model.dtype) for k, v in inputs.items() if k != "token_type_ids"}
        else:
            left = self._resolved_kind() == "causal"
            width = max(len(p.ids) for p in batch)
            ids, mask = [], []
            for p in batch:
                pad = [self._pad_id] * (width - len(p.ids))
                ids.append(pad + p.ids if left else p.ids + pad)
                mask.append([0] * len(pad) + [1] * len(p.ids) if left else [1] * len(p.ids) + [0] * len(pad))
            inputs = {
                "input_ids": torch.tensor(ids, device=device),
                "attention_mask": torch.tensor(mask, device=device),
            }
            options["pad_token_id"] = self._pad_id
        with torch.inference_mode():
            out = model.generate(**inputs, **options)
            logits = out.logits if getattr(out, "logits", None) is not None else out.scores
            steps = len(logits)
            chosen = out.sequences[:, out.sequences.shape[1] - steps :]
            logprob = model.compute_transition_scores(out.sequences, logits, normalize_logits=True)
        chosen, logprob = chosen.cpu().tolist(), logprob.float().cpu().tolist()
        return [self._answer(tokens, values, len(p.ids)) for p, tokens, values in zip(batch, chosen, logprob)]

    def _answer(self, tokens: list, values: list, prompt_tokens: int) -> Generated:
        """The generated tokens' text (special tokens left out, stop strings applied) and their log-probabilities."""
        kept, logprobs = [], []
        for token, value in zip(tokens, values):
            if token in self._eos_ids:
                break
            if token not in self._skip_ids:
                kept.append(token)
                logprobs.append(float(value))
        decode = self._tokenizer.decode
        text, stopped = cut_at_stop(decode(kept, skip_special_tokens=True), self.stop)
        if stopped:  # keep the tokens whose text comes before the stop string
            n = next(
                k
                for k in range(1, len(kept) + 1)
                if cut_at_stop(decode(kept[:k], skip_special_tokens=True), self.stop)[1]
            )
            before = decode(kept[: n - 1], skip_special_tokens=True)
            logprobs = logprobs[:n] if len(text) > len(before) else logprobs[: n - 1]
        return Generated(text.strip(), logprobs, prompt_tokens=prompt_tokens, completion_tokens=len(kept))

    def __getstate__(self):
        state = dict(super().__getstate__())
        for runtime in _RUNTIME:
            state.pop(runtime, None)
        return state


def kind_of(config) -> str:
    """``"image-to-text"``, ``"seq2seq"`` or ``"causal"``, read from a transformers config."""
    try:
        from transformers.models.auto.modeling_auto import (  # noqa: PLC0415 (transformers: optional extra)
            MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES as listed,
        )
    except ImportError:
        listed = {}
    model_type = _model_type(config)
    if model_type in listed or model_type in IMAGE_TO_TEXT_TYPES:
        return "image-to-text"
    return "seq2seq" if getattr(config, "is_encoder_decoder", False) else "causal"


def fingerprint(folder: Path) -> str:
    """A digest of the model folder's files: small ones (configs, templates) by content, larger ones
    (weights, big tokenizer files) by name, size and 64 KiB read at 16 evenly spaced places, so that
    retrained weights saved over the same folder get a new identity (and a copied folder keeps it).
    Hidden files and ``*.md`` are left out."""
    digest = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.suffix == ".md" or not path.is_file():
            continue
        size = path.stat().st_size
        digest.update(f"{path.name}:{size}\n".encode())
        if size <= _SMALL_FILE:
            digest.update(path.read_bytes())
            continue
        with open(path, "rb") as fh:
            for k in range(_SAMPLES):
                fh.seek((size - _CHUNK) * k // (_SAMPLES - 1))
                digest.update(fh.read(_CHUNK))
    return digest.hexdigest()[:16]


def _model_type(config) -> str:
    return str(getattr(config, "model_type", "") or "")


def _max_positions(config, kind: str, tokenizer) -> int | None:
    """How many tokens the model reads (the decoder's text positions for an image-to-text model), or None."""
    limits = []
    try:
        text = config.get_text_config(decoder=True) if kind != "seq2seq" else config
    except (ValueError, AttributeError):
        text = config
    for attr in _POSITION_ATTRS:
        value = getattr(text, attr, None)
        if isinstance(value, int) and value > 0:
            limits.append(value)
            break
    declared = getattr(tokenizer, "model_max_length", None)
    if kind != "image-to-text" and isinstance(declared, int) and 0 < declared < 1_000_000:
        limits.append(declared)
    return min(limits) if limits else None


def _ids(value) -> set:
    """Token ids from a config value: None, one id or a list of them."""
    if value is None:
        return set()
    if isinstance(value, (list, tuple, set)):
        return {int(v) for v in value if v is not None}
    return {int(value)}


def _with_image(message: dict) -> dict:
    """A chat message for a vision-language processor: text parts kept, the image part as ``{"type": "image"}``."""
    content = message["content"]
    if isinstance(content, str):
        return {"role": message["role"], "content": [{"type": "text", "text": content}]}
    parts = [
        part if part.get("type") == "text" else {"type": "image"}
        for part in content
        if part.get("type") != "text" or part.get("text")
    ]
    return {"role": message["role"], "content": parts}


def _text(content) -> str:
    """A message's text: the string itself, or its text parts joined."""
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if isinstance(part, dict))


def _to(value, device, dtype):
    """A processor output on ``device``, its floating-point pixels in the model's ``dtype``."""
    if not hasattr(value, "to"):
        return value
    return value.to(device, dtype=dtype) if value.is_floating_point() else value.to(device)
