"""What the torch text classifiers share: input checks, word vocabulary, batching, training, state.

:class:`TorchTextClassifier` holds the training loop (Adam, shuffled mini-batches of similar length,
cross-entropy for ``fit`` and KL divergence for ``distill``), batched ``predict_proba`` and the
pickle/skops state. A subclass says how texts become token ids (``_prepare``, ``_encode``) and which
module maps a padded batch ``(ids, mask)`` to logits (``_new_module``).
:class:`WordSequenceClassifier` adds the regex tokenizer and the vocabulary built in ``fit``.
torch is imported only when a model is fitted, used or restored.
"""

import contextlib
import re
from collections import Counter
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, check_random_state, column_or_1d

from ..core.inputs import require_valid
from ..core.params import check_params
from ..exceptions import DataError, require
from ..modalities import as_inputs, get_modality
from ..progress import track

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
        kept = kept[:max(max_vocab - 2, 0)]
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
        out[i, :len(row)] = row
        mask[i, :len(row)] = 1
    return out, mask


def length_batches(lengths, batch_size: int, rng, pool: int = 50) -> list[np.ndarray]:
    """Shuffled mini-batches of rows of similar length: less padding, still a random order.

    Rows are shuffled, cut into pools of ``pool`` batches, sorted by length inside each pool,
    batched, and the batches shuffled.
    """
    order = rng.permutation(len(lengths))
    batches = []
    for start in range(0, len(order), batch_size * pool):
        chunk = order[start:start + batch_size * pool]
        chunk = chunk[np.argsort(np.asarray(lengths)[chunk], kind="stable")]
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


class TorchTextClassifier(ClassifierMixin, BaseEstimator):
    """Base of the torch text classifiers; not used directly.

    Subclasses set, in ``__init__``, at least ``epochs``, ``batch_size``, ``lr``, ``max_len``,
    ``random_state``, ``device``, ``n_threads`` and ``progress`` (a bar over the training batches),
    and implement ``_prepare``, ``_encode`` and ``_new_module``.
    """

    _min_len = 1  # shortest padded batch the module accepts (a convolution's width)
    _clip_norm = 5.0  # gradients are clipped to this norm
    _transient = ("module_",)  # attributes rebuilt by __setstate__, never stored
    _fitted_attributes = ("classes_", "module_state_")  # what a saved state may hold beside the parameters
    #: Constraints shared by every torch text classifier; a subclass adds its own (see datashunt.core.params).
    _shared_constraints = {
        "epochs": [Interval(Integral, 1, 10_000, closed="both")],
        "batch_size": [Interval(Integral, 1, 1 << 16, closed="both")],
        "lr": [Interval(Real, 0, 10, closed="right")],
        "max_len": [Interval(Integral, 1, 1 << 16, closed="both")],
        "random_state": ["random_state"],
        "device": [StrOptions({"cpu", "cuda", "mps"} | {f"cuda:{i}" for i in range(16)})],
        "n_threads": [Interval(Integral, 1, 1024, closed="both"), None],
        "progress": ["boolean"],
    }

    # -- what a subclass provides -------------------------------------------------------------------

    def _prepare(self, texts) -> None:
        """Learn or load what turns texts into ids (a vocabulary, a tokenizer), in ``fit``."""
        raise NotImplementedError

    def _restore(self) -> None:
        """Rebuild, after unpickling, what ``_prepare`` made and ``__getstate__`` left out."""

    def _encode(self, texts) -> list[np.ndarray]:
        """Token ids of each text, at most ``max_len``, as a list of int64 arrays."""
        raise NotImplementedError

    def _new_module(self, torch, pretrained: bool = True):
        """The torch module mapping ``(ids, mask)`` to logits ``(n, len(classes_))``.

        ``pretrained`` is False when unpickling: the weights are loaded next, so none need reading.
        """
        raise NotImplementedError

    def _optimizer(self, torch, params, n_steps: int):
        """The optimizer and a per-step learning-rate scheduler (or None)."""
        return torch.optim.Adam(params, lr=self.lr, **self._fused(torch)), None

    def _fused(self, torch) -> dict:
        """Adam's fused kernel where torch has one (CPU, CUDA): the same updates, many times faster on CPU."""
        return {"fused": True} if torch.device(self.device).type in ("cpu", "cuda") else {}

    # -- scikit-learn API ---------------------------------------------------------------------------

    def fit(self, X, y):
        """Build the vocabulary and the network, then train it on ``X, y`` with cross-entropy.

        Parameters
        ----------
        X : list, array or Series of str
            The texts; each must be a non-blank string.
        y : array-like of shape (n,)
            The labels, of any type; at least two different ones.

        Returns
        -------
        self
        """
        check_params(self)
        texts = check_texts(X)
        y = column_or_1d(y, warn=True)
        if len(y) != len(texts):
            raise DataError(f"X has {len(texts)} texts but y has {len(y)} labels")
        check_classification_targets(y)
        self.classes_, targets = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise DataError(f"need at least two classes to fit, got {self.classes_.tolist()}")
        with self._torch() as torch:
            seed = check_random_state(self.random_state).randint(np.iinfo(np.int32).max)
            with self._seeded(torch, seed):
                self._prepare(texts)
                self.module_ = self._new_module(torch).to(self.device)
                self._train(torch, self._encode(texts), targets, self.epochs, np.random.default_rng(seed))
        return self

    def distill(self, X, target_proba, epochs: int | None = None):
        """Train on from the current weights, moving the predicted distribution toward ``target_proba``.

        The loss is the KL divergence ``KL(target || model)`` (batch mean), as in knowledge distillation.

        Parameters
        ----------
        X : list, array or Series of str
            The texts.
        target_proba : array of shape (n, len(classes_))
            Soft targets, columns in the order of ``classes_``; rows are normalised to sum to 1.
        epochs : int, optional
            Passes over ``X``; ``self.epochs`` when None.

        Returns
        -------
        self
        """
        check_is_fitted(self, "module_")
        texts = check_texts(X)
        target = np.asarray(target_proba, dtype=np.float64)
        if target.shape != (len(texts), len(self.classes_)):
            raise DataError(f"target_proba must have shape {(len(texts), len(self.classes_))}, got {target.shape}")
        sums = target.sum(axis=1, keepdims=True)
        if not np.isfinite(target).all() or (target < 0).any() or (sums <= 0).any():
            raise DataError("target_proba must be finite, non-negative, with rows of positive sum")
        with self._torch() as torch:
            seed = check_random_state(self.random_state).randint(np.iinfo(np.int32).max) + 1
            with self._seeded(torch, seed):
                self._train(torch, self._encode(texts), target / sums, self.epochs if epochs is None else epochs,
                            np.random.default_rng(seed))
        return self

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities (softmax of the logits), shape ``(n, len(classes_))``, in batches."""
        check_is_fitted(self, "module_")
        ids = self._encode(check_texts(X))
        order = np.argsort([len(row) for row in ids], kind="stable")  # similar lengths: less padding
        proba = np.empty((len(ids), len(self.classes_)))
        with self._torch() as torch, torch.no_grad():
            self.module_.eval()
            for start in range(0, len(ids), self.batch_size):
                rows = order[start:start + self.batch_size]
                logits = self.module_(*self._tensors(torch, [ids[i] for i in rows]))
                proba[rows] = torch.softmax(logits.double(), dim=1).cpu().numpy()
        return proba

    def predict(self, X) -> np.ndarray:
        """The most probable label of each text, from ``classes_``."""
        return self.classes_[self.predict_proba(X).argmax(axis=1)]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        tags.non_deterministic = self.random_state is None
        return tags

    # -- the loop -----------------------------------------------------------------------------------

    def _train(self, torch, ids, targets, epochs: int, rng) -> None:
        """Mini-batch training; integer ``targets``: cross-entropy, soft (n, k) ``targets``: KL divergence."""
        F = torch.nn.functional
        soft = np.ndim(targets) == 2
        lengths = [len(row) for row in ids]
        n_batches = -(-len(ids) // self.batch_size)
        params = [p for p in self.module_.parameters() if p.requires_grad]
        optimizer, scheduler = self._optimizer(torch, params, max(epochs * n_batches, 1))
        self.module_.train()
        batches = [rows for _ in range(epochs) for rows in length_batches(lengths, self.batch_size, rng)]
        for rows in track(batches, f"training {type(self).__name__}", enabled=self.progress):
            logits = self.module_(*self._tensors(torch, [ids[i] for i in rows]))
            if soft:
                target = torch.as_tensor(targets[rows], dtype=logits.dtype, device=logits.device)
                loss = F.kl_div(F.log_softmax(logits, dim=1), target, reduction="batchmean")
            else:
                loss = F.cross_entropy(logits, torch.as_tensor(targets[rows], device=logits.device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, self._clip_norm)
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
        self.module_.eval()

    def _tensors(self, torch, ids):
        ids, mask = pad_batch(ids, self._min_len)
        return torch.from_numpy(ids).to(self.device), torch.from_numpy(mask).to(self.device)

    @contextlib.contextmanager
    def _torch(self):
        """Import torch (or say which extra to install); use ``n_threads`` threads meanwhile if given."""
        torch = require("torch", "torch")
        if self.n_threads is None:
            yield torch
            return
        before = torch.get_num_threads()
        torch.set_num_threads(int(self.n_threads))
        try:
            yield torch
        finally:
            torch.set_num_threads(before)

    @contextlib.contextmanager
    def _seeded(self, torch, seed: int):
        """Seed torch (weights, dropout) without changing the caller's global random state."""
        device = torch.device(self.device)
        if device.type == "cpu":  # fork_rng's device_type=None is refused before torch 2.12: fork by hand
            state = torch.random.get_rng_state()
            try:
                torch.manual_seed(seed)
                yield
            finally:
                torch.random.set_rng_state(state)
            return
        with torch.random.fork_rng(devices=[device], device_type=device.type):
            torch.manual_seed(seed)
            yield

    # -- state: plain Python and numpy only ---------------------------------------------------------

    def __getstate__(self):
        state = {k: v for k, v in self.__dict__.items() if k not in self._transient}
        if "module_" in self.__dict__:
            state["module_state_"] = {k: v.detach().cpu().numpy().copy()
                                      for k, v in self.module_.state_dict().items()}
        return state

    def __setstate__(self, state):
        """Restore from plain data only: the parameters (checked) and the known fitted attributes.

        A saved file is data: an unknown key, a parameter out of its range or weights that are not
        arrays are refused (``ValueError``) before torch builds anything.
        """
        state = dict(state)
        unknown = sorted(set(state) - set(self._get_param_names()) - set(self._fitted_attributes))
        if unknown:
            raise ValueError(f"{type(self).__name__} state has unexpected attribute(s) {unknown}")
        weights = state.pop("module_state_", None)
        if weights is not None and not (isinstance(weights, dict) and all(
                isinstance(k, str) and isinstance(v, np.ndarray) for k, v in weights.items())):
            raise ValueError(f"{type(self).__name__} weights must be named arrays")
        self.__dict__.update(state)
        check_params(self)
        if weights is None:
            return
        with self._torch() as torch, self._seeded(torch, 0):  # initial weights are overwritten: spare the RNG
            self._restore()
            module = self._new_module(torch, pretrained=False)
            module.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in weights.items()})
            self.module_ = module.to(self.device).eval()


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
        return [np.array([vocab.get(tok, unk) for tok in tokenize(t)[:self.max_len]], dtype=np.int64)
                for t in texts]
