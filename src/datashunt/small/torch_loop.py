"""The torch training loop every small torch classifier shares, whatever its inputs.

:class:`TorchClassifier` holds ``fit`` (cross-entropy, optionally re-weighted by class),
``distill`` (KL divergence toward soft targets, for 2CD), batched ``predict_proba``, Adam with
clipped gradients, seeding that leaves the caller's random state alone, and a pickle/skops state
of plain arrays. A subclass says what an item is and how a batch of them enters the network:
:class:`~datashunt.small.torch_text.TorchTextClassifier` for texts,
:class:`~datashunt.small.torch_image.TorchImageClassifier` for images.
torch is imported only when a model is fitted, used or restored.
"""

import contextlib
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, check_random_state, column_or_1d

from ..core.params import check_params
from ..exceptions import DataError, require
from ..progress import track


class TorchClassifier(ClassifierMixin, BaseEstimator):
    """Base of the small torch classifiers; not used directly.

    Subclasses set, in ``__init__``, at least ``epochs``, ``batch_size``, ``lr``, ``random_state``,
    ``device``, ``n_threads`` and ``progress`` (a bar over the training batches), optionally
    ``class_weight``, and implement ``_check``, ``_prepare``, ``_encode``, ``_batches``,
    ``_tensors`` and ``_new_module``.
    """

    _clip_norm = 5.0  # gradients are clipped to this norm
    _transient = ("module_",)  # attributes rebuilt by __setstate__, never stored
    _fitted_attributes = ("classes_", "module_state_")  # what a saved state may hold beside the parameters
    #: Constraints shared by every torch classifier; a subclass adds its own (see datashunt.core.params).
    _shared_constraints = {
        "epochs": [Interval(Integral, 1, 10_000, closed="both")],
        "batch_size": [Interval(Integral, 1, 1 << 16, closed="both")],
        "lr": [Interval(Real, 0, 10, closed="right")],
        "random_state": ["random_state"],
        "device": [StrOptions({"cpu", "cuda", "mps"} | {f"cuda:{i}" for i in range(16)})],
        "n_threads": [Interval(Integral, 1, 1024, closed="both"), None],
        "progress": ["boolean"],
    }

    # -- what a subclass provides -------------------------------------------------------------------

    def _check(self, X):
        """The items of ``X``, checked; raise :class:`~datashunt.exceptions.DataError` naming bad ones."""
        raise NotImplementedError

    def _prepare(self, items) -> None:
        """Learn what turns items into network inputs (a vocabulary, pixel statistics), in ``fit``."""

    def _restore(self) -> None:
        """Rebuild, after unpickling, what ``_prepare`` made and ``__getstate__`` left out."""

    def _encode(self, items):
        """The items as the network's raw inputs, indexable by row (a list of id arrays, an image array)."""
        raise NotImplementedError

    def _batches(self, encoded, rng) -> list[np.ndarray]:
        """Row indices of one epoch's training mini-batches, in a random order."""
        order = rng.permutation(len(encoded))
        return [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]

    def _predict_order(self, encoded) -> np.ndarray:
        """The order rows are predicted in (batches of similar items pad less)."""
        return np.arange(len(encoded))

    def _tensors(self, torch, rows, train: bool = False) -> tuple:
        """The module's arguments for these encoded rows (``train``: augment where the subclass does)."""
        raise NotImplementedError

    def _new_module(self, torch, pretrained: bool = True):
        """The torch module mapping a batch from :meth:`_tensors` to logits ``(n, len(classes_))``.

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
        """Build the network, then train it on ``X, y`` with cross-entropy (re-weighted by ``class_weight``).

        Parameters
        ----------
        X : texts or images, as the subclass takes them
            Each must be valid (a non-blank string, a decodable image).
        y : array-like of shape (n,)
            The labels, of any type; at least two different ones.

        Returns
        -------
        self
        """
        check_params(self)
        items = self._check(X)
        y = column_or_1d(y, warn=True)
        if len(y) != len(items):
            raise DataError(f"X has {len(items)} items but y has {len(y)} labels")
        check_classification_targets(y)
        self.classes_, targets = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise DataError(f"need at least two classes to fit, got {self.classes_.tolist()}")
        with self._torch() as torch:
            seed = check_random_state(self.random_state).randint(np.iinfo(np.int32).max)
            with self._seeded(torch, seed):
                self._prepare(items)
                self.module_ = self._new_module(torch).to(self.device)
                self._train(torch, self._encode(items), targets, self.epochs, np.random.default_rng(seed))
        return self

    def distill(self, X, target_proba, epochs: int | None = None):
        """Train on from the current weights, moving the predicted distribution toward ``target_proba``.

        The loss is the KL divergence ``KL(target || model)`` (batch mean), as in knowledge distillation.

        Parameters
        ----------
        X : texts or images, as the subclass takes them
            The items.
        target_proba : array of shape (n, len(classes_))
            Soft targets, columns in the order of ``classes_``; rows are normalised to sum to 1.
        epochs : int, optional
            Passes over ``X``; ``self.epochs`` when None.

        Returns
        -------
        self
        """
        check_is_fitted(self, "module_")
        items = self._check(X)
        target = np.asarray(target_proba, dtype=np.float64)
        if target.shape != (len(items), len(self.classes_)):
            raise DataError(f"target_proba must have shape {(len(items), len(self.classes_))}, got {target.shape}")
        sums = target.sum(axis=1, keepdims=True)
        if not np.isfinite(target).all() or (target < 0).any() or (sums <= 0).any():
            raise DataError("target_proba must be finite, non-negative, with rows of positive sum")
        with self._torch() as torch:
            seed = check_random_state(self.random_state).randint(np.iinfo(np.int32).max) + 1
            with self._seeded(torch, seed):
                self._train(
                    torch,
                    self._encode(items),
                    target / sums,
                    self.epochs if epochs is None else epochs,
                    np.random.default_rng(seed),
                )
        return self

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities (softmax of the logits), shape ``(n, len(classes_))``, in batches."""
        check_is_fitted(self, "module_")
        encoded = self._encode(self._check(X))
        order = self._predict_order(encoded)
        proba = np.empty((len(encoded), len(self.classes_)))
        with self._torch() as torch, torch.no_grad():
            self.module_.eval()
            for start in range(0, len(encoded), self.batch_size):
                rows = order[start : start + self.batch_size]
                logits = self.module_(*self._tensors(torch, [encoded[i] for i in rows]))
                proba[rows] = torch.softmax(logits.double(), dim=1).cpu().numpy()
        return proba

    def predict(self, X) -> np.ndarray:
        """The most probable label of each item, from ``classes_``."""
        return self.classes_[self.predict_proba(X).argmax(axis=1)]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.random_state is None
        return tags

    # -- the loop -----------------------------------------------------------------------------------

    def _train(self, torch, encoded, targets, epochs: int, rng) -> None:
        """Mini-batch training; integer ``targets``: cross-entropy, soft (n, k) ``targets``: KL divergence."""
        F = torch.nn.functional
        soft = np.ndim(targets) == 2
        n_batches = -(-len(encoded) // self.batch_size)
        params = [p for p in self.module_.parameters() if p.requires_grad]
        optimizer, scheduler = self._optimizer(torch, params, max(epochs * n_batches, 1))
        weight = None if soft else self._class_weight(torch, targets)
        self.module_.train()
        batches = [rows for _ in range(epochs) for rows in self._batches(encoded, rng)]
        for rows in track(batches, f"training {type(self).__name__}", enabled=self.progress):
            logits = self.module_(*self._tensors(torch, [encoded[i] for i in rows], train=True))
            if soft:
                target = torch.as_tensor(targets[rows], dtype=logits.dtype, device=logits.device)
                loss = F.kl_div(F.log_softmax(logits, dim=1), target, reduction="batchmean")
            else:
                loss = F.cross_entropy(logits, torch.as_tensor(targets[rows], device=logits.device), weight=weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, self._clip_norm)
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
        self.module_.eval()

    def _class_weight(self, torch, targets):
        """Per-class loss weights from ``class_weight`` (None: the plain loss)."""
        choice = getattr(self, "class_weight", None)
        if choice is None:
            return None
        weight = compute_class_weight(choice, classes=np.arange(len(self.classes_)), y=targets)
        return torch.as_tensor(weight, dtype=torch.float32, device=self.device)

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
            state["module_state_"] = {k: v.detach().cpu().numpy().copy() for k, v in self.module_.state_dict().items()}
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
        if weights is not None and not (
            isinstance(weights, dict)
            and all(isinstance(k, str) and isinstance(v, np.ndarray) for k, v in weights.items())
        ):
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
