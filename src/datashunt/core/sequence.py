"""Confidence of a generated sequence, from the log-probability of each token the model chose.

Every measure maps a list of per-token log-probability arrays to one score per sequence in
[0, 1], higher meaning surer, so routing is ``confidence >= δ`` as for classes. A sequence
without log-probabilities (None) or without tokens gets NaN: its confidence is unknown and it is
routed on.
"""

from collections.abc import Callable

import numpy as np

from ..exceptions import ConfigError


def _each(token_logprobs, reduce) -> np.ndarray:
    out = np.full(len(token_logprobs), np.nan)
    for i, lp in enumerate(token_logprobs):
        if lp is not None and len(lp):
            out[i] = reduce(np.asarray(lp, dtype=float))
    return out


def mean_proba(token_logprobs) -> np.ndarray:
    """Mean probability of the chosen tokens: the paper's C for a caption (eq. 8).

    Examples
    --------
    >>> mean_proba([np.log([0.9, 0.5]), None]).round(3).tolist()
    [0.7, nan]
    """
    return _each(token_logprobs, lambda lp: np.exp(lp).mean())


def geometric_mean(token_logprobs) -> np.ndarray:
    """Geometric mean of the chosen tokens' probabilities (the exponent of their mean log-probability).

    Examples
    --------
    >>> geometric_mean([np.log([0.9, 0.4])]).round(3).tolist()
    [0.6]
    """
    return _each(token_logprobs, lambda lp: np.exp(lp.mean()))


def min_proba(token_logprobs) -> np.ndarray:
    """Probability of the least likely token: a sequence is as sure as its weakest word.

    Examples
    --------
    >>> min_proba([np.log([0.9, 0.4])]).round(3).tolist()
    [0.4]
    """
    return _each(token_logprobs, lambda lp: np.exp(lp.min()))


def length_normalised(token_logprobs, alpha: float = 0.6) -> np.ndarray:
    """The sequence's probability under GNMT's length penalty, ``exp(log p / ((5 + L) / 6) ** alpha)``:
    between the product of the probabilities (alpha 0) and roughly their geometric mean (alpha 1),
    so long answers are not punished for their length alone.

    Examples
    --------
    >>> length_normalised([np.log([0.9, 0.4])]).round(3).tolist()
    [0.394]
    """
    return _each(token_logprobs, lambda lp: np.exp(lp.sum() / ((5 + len(lp)) / 6) ** alpha))


SEQUENCE_MEASURES: dict[str, Callable] = {
    "mean_proba": mean_proba,
    "geometric_mean": geometric_mean,
    "min_proba": min_proba,
    "length_normalised": length_normalised,
}


def get_sequence_measure(name_or_func) -> Callable:
    """Resolve a sequence measure by name or pass a callable through."""
    if callable(name_or_func):
        return name_or_func
    try:
        return SEQUENCE_MEASURES[name_or_func]
    except KeyError:
        raise ConfigError(
            f"unknown sequence confidence {name_or_func!r}; choose one of "
            f"{sorted(SEQUENCE_MEASURES)} or pass a callable"
        ) from None
