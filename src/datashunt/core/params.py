"""Parameter checks for everything datashunt builds from configuration: estimators and backends.

Each class declares a ``_parameter_constraints`` table in scikit-learn's vocabulary
(:mod:`sklearn.utils._param_validation`); :func:`check_params` applies it and turns a violation
into a :class:`~datashunt.exceptions.ConfigError` that names the parameter, the value and what
is allowed. A scikit-learn :class:`~sklearn.pipeline.Pipeline` is checked step by step, so a bad
``C`` of a logistic regression is refused before any training starts.
"""

import re

from sklearn.pipeline import Pipeline
from sklearn.utils._param_validation import Interval, InvalidParameterError, StrOptions  # noqa: F401

from ..exceptions import ConfigError

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def check_params(estimator, what: str | None = None) -> None:
    """Validate ``estimator``'s parameters against its constraints (and a pipeline's steps).

    Booleans are refused where a number is expected (``threshold = true`` is not δ = 1).

    Examples
    --------
    >>> from sklearn.linear_model import LogisticRegression
    >>> check_params(LogisticRegression(C=-1.0), "small model")
    Traceback (most recent call last):
    ...
    datashunt.exceptions.ConfigError: small model: The 'C' parameter of LogisticRegression must be a float ...
    """
    label = what or type(estimator).__name__
    if isinstance(estimator, Pipeline):
        for name, step in estimator.steps:
            if step not in (None, "passthrough"):
                check_params(step, f"{label} step {name!r}")
        return
    constraints = getattr(estimator, "_parameter_constraints", None)
    if not constraints or not hasattr(estimator, "_validate_params"):
        return
    params = estimator.get_params(deep=False)
    for name, value in params.items():
        if isinstance(value, bool) and _numeric_only(constraints.get(name, [])):
            raise ConfigError(f"{label}: the {name!r} parameter must be a number, got the boolean {value!r}")
    try:
        estimator._validate_params()
    except InvalidParameterError as exc:
        raise ConfigError(f"{label}: {exc}") from None


def env_name(value) -> bool:
    """Whether ``value`` can name an environment variable (letters, digits, underscores)."""
    return isinstance(value, str) and bool(ENV_NAME.match(value))


def _numeric_only(options) -> bool:
    """True when a constraint list admits numbers (an Interval) but not booleans."""
    return any(isinstance(c, Interval) for c in options) and "boolean" not in options and bool not in options
