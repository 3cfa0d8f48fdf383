"""Large-model backends behind one interface (:class:`~datashunt.large.base.LargeModel`), built by name."""

import importlib

from ..exceptions import ConfigError

REGISTRY = {
    "llama_cpp": ("datashunt.large.llama_cpp", "LlamaCppModel"),
    "openai": ("datashunt.large.openai_chat", "OpenAIChatModel"),
    "replay": ("datashunt.large.replay", "ReplayModel"),
}


def backend_class(name: str):
    """The class registered under ``name`` (``llama_cpp``, ``openai``, ``replay``)."""
    try:
        module, attr = REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown large backend {name!r}; choose one of {sorted(REGISTRY)}") from None
    return getattr(importlib.import_module(module), attr)


def backend_name(model) -> str:
    """The registry name of a backend instance (the inverse of :func:`backend_class`)."""
    for name, (module, attr) in REGISTRY.items():
        if type(model).__module__ == module and type(model).__name__ == attr:
            return name
    raise ConfigError(f"{type(model).__name__} is not a registered large backend")


def make_large(backend: str, **params):
    """Build a backend from plain configuration values.

    ``instruction`` (a string) becomes the prompt; every other key must be a constructor argument.

    Examples
    --------
    >>> make_large("openai", model="gpt-4o-mini", instruction="Is this review positive?").prompt.instruction
    'Is this review positive?'
    """
    from ..prompting import Prompt

    cls = backend_class(backend)
    if "instruction" in params:
        params["prompt"] = Prompt(instruction=params.pop("instruction"))
    allowed = set(cls._get_param_names())
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ConfigError(f"unknown option(s) {unknown} for large backend {backend!r}; allowed: {sorted(allowed)}")
    try:
        return cls(**params)
    except TypeError as exc:
        raise ConfigError(f"bad options for large backend {backend!r}: {exc}") from None
