"""How an estimator asks one stage about a batch: a large-model backend by label names, a
classifier directly; either way the answers come back as :class:`~datashunt.core.answers.Answers`."""

import numpy as np

from ..backends.base import LargeModel
from ..core.answers import Answers


def answer(model, inputs, classes, labels, measure, progress=False, modality="auto", **prompt_args) -> Answers:
    """Ask one stage about ``inputs``: a large-model backend by label names, reading the items as
    ``modality`` (``prompt_args``: Prompt Pruning's hints or candidates), a classifier directly."""
    n = len(inputs)
    if isinstance(model, LargeModel):
        result = model.predict_proba(inputs, labels, progress=progress, modality=modality, **prompt_args)
        got = Answers(
            result.proba,
            np.full(n, np.nan),
            result.cost,
            model.price_of(result.prompt_tokens),
            result.cached,
            result.prompt_tokens,
            list(result.error),
        )
    else:
        raw = model.predict_proba(inputs)
        proba = np.zeros((n, len(classes)))
        own = list(np.asarray(model.classes_).tolist())
        for j, c in enumerate(classes.tolist()):
            if c in own:
                proba[:, j] = raw[:, own.index(c)]
        got = Answers.empty(n, len(classes))
        got.proba = proba
    ok = got.ok
    if ok.any():
        got.confidence[ok] = np.asarray(measure(got.proba[ok]), dtype=float)
    return got
