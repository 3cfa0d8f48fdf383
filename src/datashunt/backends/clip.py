"""Zero-shot image classification with a CLIP or SigLIP model through transformers, from local files.

Each label becomes sentences (``"a photo of a {label}."`` and other templates); their text
embeddings, L2-normalised and averaged over the templates (prompt ensembling, as in the CLIP
paper), are compared with the image's embedding. A label's score is the model's own
``logits_per_image``: ``exp(logit_scale) · cosine (+ logit_bias for SigLIP)``, so its softmax over
the labels offered is the model's probability among them.
"""

import hashlib
import json
import string
from numbers import Integral
from pathlib import Path, PurePath

import numpy as np
from sklearn.utils._param_validation import Interval, InvalidParameterError

from ..exceptions import ConfigError, LargeModelError, require
from .base import SHARED_CONSTRAINTS
from .vision import ImageLabelModel

#: The prompt ensemble used by default (a few of the CLIP paper's ImageNet templates).
DEFAULT_TEMPLATES = (
    "a photo of a {label}.",
    "a blurry photo of a {label}.",
    "a close-up photo of a {label}.",
    "a black and white photo of a {label}.",
    "a low resolution photo of a {label}.",
)

_RUNTIME = ("_model", "_processor", "_torch_device", "_loaded_spec", "_text", "_text_spec", "_cache_obj", "_cache_spec")


def check_templates(templates) -> tuple:
    """The templates as a tuple, each with one ``{label}`` field and no other; a string is one template.

    Examples
    --------
    >>> check_templates("a photo of a {label}.")
    ('a photo of a {label}.',)
    >>> check_templates(["{label}", "a {kind} of a {label}"])
    Traceback (most recent call last):
    ...
    datashunt.exceptions.ConfigError: template 'a {kind} of a {label}' may hold no field but {label}; found {kind} ...
    """
    if isinstance(templates, str):
        templates = (templates,)
    if isinstance(templates, (list, tuple)) and not templates:
        raise ConfigError("templates must hold at least one template such as 'a photo of a {label}.'")
    if not isinstance(templates, (list, tuple)) or not all(isinstance(t, str) for t in templates):
        raise ConfigError(f"templates must be a string or a list of strings, got {templates!r}")
    for template in templates:
        try:
            fields = [
                (name, spec, conversion)
                for _, name, spec, conversion in string.Formatter().parse(template)
                if name is not None
            ]
        except ValueError as exc:
            raise ConfigError(
                f"template {template!r} is not a valid format string: {exc} (write a literal brace as {{{{ or }}}})"
            ) from None
        other = [name for name, _, _ in fields if name != "label"]
        if other:
            shown = ", ".join("{" + name + "}" for name in other)
            raise ConfigError(
                f"template {template!r} may hold no field but {{label}}; found {shown} "
                "(write a literal brace as {{ or }})"
            )
        if len(fields) != 1 or fields[0][1] or fields[0][2]:
            raise ConfigError(
                f"template {template!r} must contain {{label}} exactly once (plain, without a "
                f"format spec or conversion), e.g. 'a photo of a {{label}}.'"
            )
    return tuple(templates)


class ClipModel(ImageLabelModel):
    """Zero-shot CLIP or SigLIP: the label whose sentences' embedding lies nearest the image's.

    The model is loaded with ``transformers.AutoModel`` and ``AutoProcessor`` on first use (needs
    ``pip install 'datashunt[clip]'``); text embeddings are computed once per label and kept in
    this instance.

    Parameters
    ----------
    model : str or path
        A folder written by ``save_pretrained`` (model and processor files) or a Hugging Face hub id.
    templates : str or sequence of str
        Sentences holding ``{label}`` exactly once; their normalised text embeddings are averaged
        (prompt ensembling). A string is one template.
    batch_size : int, default=32
        Images per forward pass.
    device : str, default="cpu"
        A torch device (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``) or ``"auto"`` (CUDA when present).
    local_files_only : bool, default=True
        Read the weights from disk only. With False a hub id not yet in the local Hugging Face cache
        is downloaded on first use.
    prompt, price, cache, min_label_mass
        See :class:`~datashunt.backends.base.LargeModel`. The model does not read the prompt's
        instruction; soft Prompt Pruning acts through the hint's prior
        (:mod:`datashunt.backends.vision`).
    """

    location_params = ("model", "local_files_only")  # a saved folder may not switch downloads on
    _parameter_constraints = {
        "model": [str, PurePath],
        "templates": [str, list, tuple],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "device": [str],
        "local_files_only": ["boolean"],
        **SHARED_CONSTRAINTS,
    }

    def __init__(
        self,
        *,
        model,
        templates=DEFAULT_TEMPLATES,
        batch_size=32,
        device="cpu",
        local_files_only=True,
        prompt=None,
        price=None,
        cache=True,
        min_label_mass=0.0,
    ):
        self.model = model
        self.templates = templates
        self.batch_size = batch_size
        self.device = device
        self.local_files_only = local_files_only
        self.prompt = prompt
        self.price = price
        self.cache = cache
        self.min_label_mass = min_label_mass

    def _validate_params(self):
        super()._validate_params()
        try:
            check_templates(self.templates)
        except ConfigError as exc:
            raise InvalidParameterError(f"The 'templates' parameter is invalid: {exc}.") from None

    def describe(self) -> str:
        source = "local files only" if self.local_files_only else "may download from the Hugging Face Hub"
        return (
            f"zero-shot CLIP/SigLIP model {str(self.model)!r} (transformers, in this process on {self.device}; "
            f"{source})"
        )

    def identity(self) -> str:
        templates = check_templates(self.templates)
        digest = hashlib.sha256(json.dumps(templates).encode()).hexdigest()[:12]
        return f"clip:{self.model}:{digest}"

    # -- loading -------------------------------------------------------------------------------
    def _load(self):
        """The model, processor and torch device, loaded once per (model, device, local_files_only)."""
        spec = (str(self.model), str(self.device), bool(self.local_files_only))
        if getattr(self, "_loaded_spec", None) == spec:
            return self._model, self._processor, self._torch_device
        torch = require("torch", "clip")
        transformers = require("transformers", "clip")
        require("PIL.Image", "clip")
        device = self._resolve_device(torch)
        where = Path(str(self.model)).expanduser()
        name = str(where) if where.is_dir() else str(self.model)
        # float32 on the CPU (half precision there is slow or unsupported); as saved on an accelerator
        dtype = torch.float32 if device.type == "cpu" else "auto"
        try:
            model = transformers.AutoModel.from_pretrained(
                name, local_files_only=bool(self.local_files_only), dtype=dtype
            )
            processor = transformers.AutoProcessor.from_pretrained(name, local_files_only=bool(self.local_files_only))
        except Exception as exc:  # noqa: BLE001 - any failure to read the files is a configuration problem
            raise ConfigError(
                f"cannot load a CLIP/SigLIP model from {name!r}: {type(exc).__name__}: {exc}. Give a folder written "
                "by save_pretrained (config, weights and processor files) or a hub id whose files are already on "
                "disk in the Hugging Face cache; with local_files_only=True nothing is downloaded"
            ) from None
        needed = ("get_image_features", "get_text_features", "logit_scale")
        if (
            not all(hasattr(model, attr) for attr in needed)
            or not hasattr(processor, "image_processor")
            or not hasattr(processor, "tokenizer")
        ):
            raise ConfigError(
                f"{name!r} is not a CLIP-like image-text model with a processor "
                f"({type(model).__name__}, {type(processor).__name__}); ClipModel takes CLIP or SigLIP"
            )
        try:
            model = model.to(device).eval()
        except (RuntimeError, ValueError) as exc:
            raise ConfigError(f"cannot move the model to device {self.device!r}: {exc}") from None
        self._model, self._processor, self._torch_device = model, processor, device
        self._text, self._text_spec = {}, None
        self._loaded_spec = spec
        return model, processor, device

    def _resolve_device(self, torch):
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        try:
            return torch.device(self.device)
        except (RuntimeError, ValueError) as exc:
            raise ConfigError(
                f"device {self.device!r} is not a torch device ('cpu', 'cuda', 'mps' or 'auto'): {exc}"
            ) from None

    # -- scoring -------------------------------------------------------------------------------
    def _label_logits(self, images, labels):
        torch = require("torch", "clip")
        model = self._load()[0]
        try:
            with torch.no_grad():
                text = self._text_embeddings(labels)
                image = self._image_embeddings(images)
                scale = model.logit_scale.exp().reshape(-1)[0]
                logits = scale * image @ text.T
                bias = getattr(model, "logit_bias", None)
                if bias is not None:
                    logits = logits + bias.reshape(-1)[0]
            return logits.double().cpu().numpy()
        except (RuntimeError, ValueError, TypeError, IndexError, KeyError) as exc:
            raise LargeModelError(
                f"{type(self).__name__} failed to score {len(images)} image(s): {type(exc).__name__}: {exc}"
            ) from None

    def _image_embeddings(self, images):
        """L2-normalised embeddings of H×W×C uint8 images, as a tensor on the model's device."""
        pil = require("PIL.Image", "clip")
        model, processor, device = self._model, self._processor, self._torch_device
        rgb = [pil.fromarray(np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a) for a in images]
        inputs = processor.image_processor(images=rgb, return_tensors="pt")
        inputs = {k: _to(v, device, model.dtype) for k, v in inputs.items()}
        features = _features(model.get_image_features(**inputs))
        return features / features.norm(dim=-1, keepdim=True)

    def _text_embeddings(self, labels):
        """One ensembled, L2-normalised text embedding per label (a tensor, labels × dimensions)."""
        torch = require("torch", "clip")
        templates = check_templates(self.templates)
        if self._text_spec != templates:
            self._text, self._text_spec = {}, templates
        missing = [label for label in labels if label not in self._text]
        per_call = int(self.batch_size)  # labels per forward pass, each with all its templates
        for start in range(0, len(missing), per_call):
            chunk = missing[start : start + per_call]
            sentences = [template.format(label=label) for label in chunk for template in templates]
            features = self._encode_text(sentences)
            features = features / features.norm(dim=-1, keepdim=True)
            mean = features.reshape(len(chunk), len(templates), -1).mean(dim=1)
            for label, vector in zip(chunk, mean / mean.norm(dim=-1, keepdim=True)):
                self._text[label] = vector
        return torch.stack([self._text[label] for label in labels])

    def _encode_text(self, sentences):
        model, processor, device = self._model, self._processor, self._torch_device
        siglip = str(getattr(model.config, "model_type", "")).startswith("siglip")
        # SigLIP was trained on texts padded to the full length; CLIP pools at the end token either way
        inputs = processor.tokenizer(
            sentences, padding="max_length" if siglip else True, truncation=True, return_tensors="pt"
        )
        inputs = {k: v.to(device) for k, v in inputs.items() if k in ("input_ids", "attention_mask", "position_ids")}
        return _features(model.get_text_features(**inputs))

    def __getstate__(self):
        state = dict(super().__getstate__())
        for runtime in _RUNTIME:
            state.pop(runtime, None)
        return state


def _to(value, device, dtype):
    """A processor output on ``device``, its floating-point pixels in the model's ``dtype``."""
    if not hasattr(value, "to"):
        return value
    return value.to(device, dtype=dtype) if value.is_floating_point() else value.to(device)


def _features(output):
    """The projected embeddings from ``get_*_features``: a tensor in older transformers, an output
    object holding them as ``pooler_output`` (or ``*_embeds``) in newer ones."""
    if hasattr(output, "norm"):  # a tensor
        return output
    for name in ("image_embeds", "text_embeds", "pooler_output"):
        value = getattr(output, name, None)
        if value is not None:
            return value
    if isinstance(output, tuple) and len(output) > 1:
        return output[1]
    raise TypeError(f"get_*_features returned {type(output).__name__}, which holds no embeddings")
