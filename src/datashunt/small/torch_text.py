"""What the torch text classifiers share: input checks, word vocabulary, batches of similar length.

:class:`TorchTextClassifier` puts texts on the shared loop (:mod:`datashunt.small.torch_loop`):
token ids padded into ``(ids, mask)`` batches of similar length. :class:`WordSequenceClassifier`
adds the regex tokenizer and the vocabulary built in ``fit``.
"""

import re
from collections import Counter
from numbers import Integral, Real

import numpy as np
from sklearn.utils._param_validation import Interval

from ..core.inputs import require_valid
from ..exceptions import DataError
from ..modalities import as_inputs, get_modality
from .torch_loop import TorchClassifier

PAD, UNK = "<pad>", "<unk>"
TOKEN_RE = re.compile(r"\w+(?:'\w+)?|[^\w\s]")


def tokenize(text: str) -> list[str]:
    """Lower-cased words (with an apostrophe part: ``don't``) and single punctuation marks.

    Examples
    --------
    >>> tokenize("Don't miss it -- GREAT fun!")
    ["don't", 'miss', 'it', '-', '-', 'great', 'fun', '!']
    """
    return TOKEN_RE.findall(text.lower())


def build_vocabulary(token_lists, max_vocab: int | None = None, min_count: int = 1) -> dict[str, int]:
    """Map the most frequent tokens to ids 2, 3, ...; 0 is padding and 1 an unknown token.

    Ties in frequency are broken alphabetically, so the vocabulary does not depend on row order.

    Examples
    --------
    >>> build_vocabulary([["b", "a"], ["a", "c"]], max_vocab=4)
    {'<pad>': 0, '<unk>': 1, 'a': 2, 'b': 3}
    """
    counts = Counter(token for tokens in token_lists for token in tokens)
    kept = sorted((t for t, c in counts.items() if c >= min_count), key=lambda t: (-counts[t], t))
    if max_vocab is not None:
        kept = kept[: max(max_vocab - 2, 0)]
    return {PAD: 0, UNK: 1} | {token: i for i, token in enumerate(kept, start=2)}


def check_texts(X) -> np.ndarray:
    """Return X as an object array of texts; raise DataError naming the rows that are no non-blank string."""
    if get_modality("auto", X).name != "text":
        raise DataError(f"expected a 1-D list of texts, got an array of shape {np.shape(X)}")
    batch = as_inputs(X, "text")
    require_valid(batch.problems, what="texts", hint="Give each row a non-blank string.")
    return batch.items


def pad_batch(ids, min_len: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Stack id sequences into ``(ids, mask)`` arrays, padded with 0 to the longest (at least ``min_len``).

    Examples
    --------
    >>> ids, mask = pad_batch([np.array([5, 6]), np.array([7])])
    >>> ids.tolist(), mask.tolist()
    ([[5, 6], [7, 0]], [[1, 1], [1, 0]])
    """
    width = max(min_len, max(len(row) for row in ids))
    out = np.zeros((len(ids), width), dtype=np.int64)
    mask = np.zeros((len(ids), width), dtype=np.int64)
    for i, row in enumerate(ids):
        out[i, : len(row)] = row
        mask[i, : len(row)] = 1
    return out, mask


def length_batches(lengths, batch_size: int, rng, pool: int = 50) -> list[np.ndarray]:
    """Shuffled mini-batches of rows of similar length: less padding, still a random order.

    Rows are shuffled, cut into pools of ``pool`` batches, sorted by length inside each pool,
    batched, and the batches shuffled.
    """
    order = rng.permutation(len(lengths))
    batches = []
    for start in range(0, len(order), batch_size * pool):
        chunk = order[start : start + batch_size * pool]
        chunk = chunk[np.argsort(np.asarray(lengths)[chunk], kind="stable")]
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


class TorchTextClassifier(TorchClassifier):
    """Base of the torch text classifiers: texts in, token ids through ``(ids, mask)`` batches of similar length.

    A subclass implements ``_prepare`` (learn what turns texts into ids), ``_encode`` (token ids
    of each text, at most ``max_len``) and ``_new_module`` (``(ids, mask)`` to logits).
    """

    _min_len = 1  # shortest padded batch the module accepts (a convolution's width)
    _shared_constraints = {
        **TorchClassifier._shared_constraints,
        "max_len": [Interval(Integral, 1, 1 << 16, closed="both")],
    }

    def _check(self, X):
        return check_texts(X)

    def _batches(self, encoded, rng):
        return length_batches([len(row) for row in encoded], self.batch_size, rng)

    def _predict_order(self, encoded):
        return np.argsort([len(row) for row in encoded], kind="stable")  # similar lengths: less padding

    def _tensors(self, torch, rows, train=False):
        ids, mask = pad_batch(rows, self._min_len)
        return torch.from_numpy(ids).to(self.device), torch.from_numpy(mask).to(self.device)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        return tags


class WordSequenceClassifier(TorchTextClassifier):
    """A torch classifier over word ids: :func:`tokenize`, a vocabulary from ``fit``, ``max_len`` words.

    Subclasses set ``max_vocab`` and ``min_count`` in ``__init__``; ``vocabulary_`` maps token to id.
    """

    _fitted_attributes = TorchTextClassifier._fitted_attributes + ("vocabulary_",)
    _shared_constraints = {
        **TorchTextClassifier._shared_constraints,
        "embedding_dim": [Interval(Integral, 1, 4096, closed="both")],
        "dropout": [Interval(Real, 0, 1, closed="left")],
        "max_vocab": [Interval(Integral, 2, 10_000_000, closed="both"), None],
        "min_count": [Interval(Integral, 1, None, closed="left")],
    }

    def _prepare(self, texts) -> None:
        self.vocabulary_ = build_vocabulary((tokenize(t) for t in texts), self.max_vocab, self.min_count)

    def _encode(self, texts) -> list[np.ndarray]:
        unk, vocab = self.vocabulary_[UNK], self.vocabulary_
        return [np.array([vocab.get(tok, unk) for tok in tokenize(t)[: self.max_len]], dtype=np.int64) for t in texts]
