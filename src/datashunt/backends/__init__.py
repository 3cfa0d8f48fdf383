"""Large-model backends behind one interface (:class:`~datashunt.backends.base.LargeModel`), built by name."""

import importlib

from ..exceptions import ConfigError
from .base import LargeModel
from .prompt import Prompt

REGISTRY = {
    "llama_cpp": ("datashunt.backends.llama_cpp", "LlamaCppModel"),
    "openai": ("datashunt.backends.openai_chat", "OpenAIChatModel"),
    "replay": ("datashunt.backends.replay", "ReplayModel"),
    "fewshot": ("datashunt.backends.fewshot", "FewShotImageModel"),
    "clip": ("datashunt.backends.clip", "ClipModel"),
}
BUILT_IN = frozenset(REGISTRY)
_REGISTERED = {}  # classes registered by users, by name


def register_backend(name: str, cls) -> None:
    """Make a backend of your own available by ``name`` to configs, the CLI and saved models.

    ``cls`` subclasses :class:`~datashunt.backends.base.LargeModel`. Registration lives in your
    process only: a saved model names its backend, and loading it needs the same registration
    (a folder can never bring code of its own).

    Examples
    --------
    >>> from datashunt.backends.replay import ReplayModel
    >>> class MyService(ReplayModel):
    ...     pass
    >>> register_backend("my_service", MyService)
    >>> backend_class("my_service") is MyService
    True
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ConfigError(f"a backend name must be an identifier, got {name!r}")
    if not (isinstance(cls, type) and issubclass(cls, LargeModel)):
        raise ConfigError(f"a backend must be a subclass of LargeModel, got {cls!r}")
    known = REGISTRY.get(name)
    if known is not None and known != (cls.__module__, cls.__qualname__) and name in BUILT_IN:
        raise ConfigError(f"{name!r} is a built-in backend; register yours under another name")
    REGISTRY[name] = (cls.__module__, cls.__qualname__)
    _REGISTERED[name] = cls


def backend_class(name: str):
    """The class registered under ``name`` (``llama_cpp``, ``openai``, ``replay`` or one of yours)."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    try:
        module, attr = REGISTRY[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown large backend {name!r}; choose one of {sorted(REGISTRY)}") from None
    return getattr(importlib.import_module(module), attr)


def backend_name(model) -> str:
    """The registry name of a backend instance (the inverse of :func:`backend_class`)."""
    for name, (module, attr) in REGISTRY.items():
        if type(model).__module__ == module and type(model).__qualname__ == attr:
            return name
    raise ConfigError(f"{type(model).__name__} is not a registered large backend; see register_backend")


def make_large(backend: str, **params):
    """Build a backend from plain configuration values.

    ``instruction`` (a string) becomes the prompt; every other key must be a constructor argument.

    Examples
    --------
    >>> make_large("openai", model="gpt-4o-mini", instruction="Is this review positive?").prompt.instruction
    'Is this review positive?'
    """
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
