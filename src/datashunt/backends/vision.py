"""Large models that look at the images themselves: a batch of images in, one score per label out.

:class:`ImageLabelModel` fits such models (zero-shot CLIP, a frozen network with a few-shot head)
into the :class:`~datashunt.backends.base.LargeModel` contract, so the cache (keyed on the
image's pixels), the cost meter, the per-row flags and Prompt Pruning work as for chat models.
A subclass gives :meth:`ImageLabelModel._label_logits`; here, calls are scored ``batch_size`` at
a time and Prompt Pruning is applied to the scores:

- hard: the labels offered to a call are its candidates, the softmax runs over them only;
- soft: the hint's probabilities (:class:`~datashunt.collab.pruning.Hint`) act as a prior:
  ``p(c) ∝ p_model(c) · q(c)`` with ``q(c)`` the small model's probability for the classes it
  excels in and the rest of its mass shared evenly by the others (a product of experts; numbers a
  vision model cannot read as words).
"""

import time

import numpy as np
from scipy.special import log_softmax

from ..exceptions import LargeModelError
from ..progress import track
from .base import LargeModel, Scored

PRIOR_FLOOR = 1e-3  # a stated probability of 0.00 still leaves the large model a say


def prior_log_weights(labels: list[str], prior: dict | None) -> np.ndarray:
    """Log of the soft Prompt Pruning prior over ``labels`` (zeros without one).

    Examples
    --------
    >>> np.exp(prior_log_weights(["cat", "dog", "fox"], {"cat": 0.6})).round(2).tolist()
    [0.6, 0.2, 0.2]
    """
    if not prior:
        return np.zeros(len(labels))
    stated = {label: float(p) for label, p in prior.items() if label in labels}
    rest = [label for label in labels if label not in stated]
    share = max(1.0 - sum(stated.values()), 0.0) / len(rest) if rest else 0.0
    q = np.array([stated.get(label, share) for label in labels])
    return np.log(np.maximum(q, PRIOR_FLOOR))


class ImageLabelModel(LargeModel):
    """Base of the backends that score images against label names; not used directly.

    Subclasses set ``batch_size`` in ``__init__`` and implement :meth:`identity` and
    :meth:`_label_logits`.
    """

    modalities = ("image",)

    def _label_logits(self, images: list[np.ndarray], labels: list[str]) -> np.ndarray:
        """Scores ``(len(images), len(labels))`` whose softmax over any subset of labels is the
        model's probability among them; raise :class:`~datashunt.exceptions.LargeModelError` on failure."""
        raise NotImplementedError

    def _score_many(self, todo, progress):
        size = int(self.batch_size)
        chunks = [todo[i : i + size] for i in range(0, len(todo), size)]
        for chunk in track(chunks, "large model", enabled=progress):
            names = list(dict.fromkeys(label for call in chunk for label in call.labels))
            start = time.perf_counter()
            try:
                logits = np.asarray(self._label_logits([call.item for call in chunk], names), dtype=float)
            except LargeModelError as exc:
                for call in chunk:
                    yield call, exc
                continue
            seconds = (time.perf_counter() - start) / len(chunk)
            column = {name: j for j, name in enumerate(names)}
            for row, call in zip(logits, chunk):
                scores = row[[column[label] for label in call.labels]]
                scores = scores + prior_log_weights(call.labels, getattr(call.hint, "prior", None))
                yield call, Scored(log_softmax(scores), seconds=seconds)
