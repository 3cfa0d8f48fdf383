"""Confidence of a probability vector: how sure a model is of its own top answer.

Every measure maps an (n, k) probability array to n scores where higher means surer, so the
shunt's rule is always ``confidence >= threshold`` -> small model.
"""

from collections.abc import Callable

import numpy as np

from ..exceptions import ConfigError


def max_proba(proba: np.ndarray) -> np.ndarray:
    """Largest class probability (the paper's C_s, eq. 1).

    Examples
    --------
    >>> max_proba(np.array([[0.9, 0.1], [0.4, 0.6]])).tolist()
    [0.9, 0.6]
    """
    return np.asarray(proba, dtype=float).max(axis=1)


def margin(proba: np.ndarray) -> np.ndarray:
    """Top probability minus the runner-up.

    Examples
    --------
    >>> margin(np.array([[0.7, 0.2, 0.1]])).round(3).tolist()
    [0.5]
    """
    p = np.sort(np.asarray(proba, dtype=float), axis=1)
    return p[:, -1] - (p[:, -2] if p.shape[1] > 1 else 0.0)


def entropy(proba: np.ndarray) -> np.ndarray:
    """One minus the normalised Shannon entropy: 1 for a one-hot vector, 0 for a uniform one.

    Examples
    --------
    >>> entropy(np.array([[1.0, 0.0], [0.5, 0.5]])).round(3).tolist()
    [1.0, 0.0]
    """
    p = np.clip(np.asarray(proba, dtype=float), 1e-12, 1.0)
    k = p.shape[1]
    if k < 2:
        return np.ones(len(p))
    h = -(p * np.log(p)).sum(axis=1) / np.log(k)
    return np.clip(1.0 - h, 0.0, 1.0)


MEASURES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "max_proba": max_proba,
    "margin": margin,
    "entropy": entropy,
}


def get_measure(name_or_func) -> Callable[[np.ndarray], np.ndarray]:
    """Resolve a measure by name (``max_proba``, ``margin``, ``entropy``) or pass a callable through."""
    if callable(name_or_func):
        return name_or_func
    try:
        return MEASURES[name_or_func]
    except KeyError:
        raise ConfigError(
            f"unknown confidence measure {name_or_func!r}; choose one of {sorted(MEASURES)} or pass a callable"
        ) from None
