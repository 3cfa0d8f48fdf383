"""One exception root and the warnings datashunt raises."""

import importlib


class DatashuntError(Exception):
    """Root of every error datashunt raises on purpose."""


class ConfigError(DatashuntError, ValueError):
    """A configuration file or constructor argument is missing, unknown or invalid."""


class DataError(DatashuntError, ValueError):
    """Input data is empty, of the wrong type, badly encoded or has unknown labels."""


class ModelFileError(DatashuntError, OSError):
    """A model file is missing, incomplete or corrupt."""


class CacheError(DatashuntError, OSError):
    """The on-disk call cache cannot be opened, read or written (a corrupt file, a folder in its place)."""


class LargeModelError(DatashuntError, RuntimeError):
    """A large model call failed (network error, time-out, an answer outside the label set)."""


class MissingExtraError(DatashuntError, ImportError):
    """An optional dependency is not installed."""


class DatashuntWarning(UserWarning):
    """Base of datashunt's warnings."""


class CalibrationWarning(DatashuntWarning):
    """The threshold policy could not meet its goal on the validation data."""


class DriftWarning(DatashuntWarning):
    """Live traffic differs from the data δ was calibrated on beyond chance."""


def require(module: str, extra: str):
    """Import ``module`` or say which extra installs it.

    Examples
    --------
    >>> require("json", "none").__name__
    'json'
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(
            f"{module!r} is not installed; install it with: pip install 'datashunt[{extra}]'"
        ) from exc
