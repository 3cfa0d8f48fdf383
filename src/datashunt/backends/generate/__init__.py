"""Generating backends behind one interface (:class:`~datashunt.backends.generate.base.Generator`), built by name.

The names match the label backends where the service is the same (``llama_cpp``, ``openai``);
``transformers`` runs any decoder, encoder-decoder or image-to-text model, and ``captioner`` is
the trainable small CNN-LSTM (:class:`~datashunt.small.captioner.CaptionerGenerator`) and ``memory``
a translation memory (:class:`~datashunt.small.memory.MemoryGenerator`).
"""

import importlib

from ...exceptions import ConfigError

GENERATORS = {
    "llama_cpp": ("datashunt.backends.generate.llama_cpp", "LlamaCppGenerator"),
    "openai": ("datashunt.backends.generate.openai_chat", "OpenAIChatGenerator"),
    "transformers": ("datashunt.backends.generate.transformers", "TransformersGenerator"),
    "captioner": ("datashunt.small.captioner", "CaptionerGenerator"),
    "memory": ("datashunt.small.memory", "MemoryGenerator"),
}


def generator_class(name: str):
    """The generator class registered under ``name``."""
    try:
        module, attr = GENERATORS[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown generator backend {name!r}; choose one of {sorted(GENERATORS)}") from None
    return getattr(importlib.import_module(module), attr)


def generator_name(model) -> str:
    """The registry name of a generator instance (the inverse of :func:`generator_class`)."""
    for name, (module, attr) in GENERATORS.items():
        if type(model).__module__ == module and type(model).__qualname__ == attr:
            return name
    raise ConfigError(f"{type(model).__name__} is not a registered generator")


def make_generator(backend: str, **params):
    """Build a generator from plain configuration values; every key must be a constructor argument.

    Examples
    --------
    >>> make_generator("openai", model="gpt-4o-mini", instruction="Summarise.").max_new_tokens
    256
    """
    cls = generator_class(backend)
    allowed = set(cls._get_param_names())
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ConfigError(f"unknown option(s) {unknown} for generator {backend!r}; allowed: {sorted(allowed)}")
    try:
        return cls(**params)
    except TypeError as exc:
        raise ConfigError(f"bad options for generator {backend!r}: {exc}") from None
