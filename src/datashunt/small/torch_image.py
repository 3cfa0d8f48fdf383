"""What the torch image classifiers share: checked images in, normalised ``(n, C, H, W)`` batches out.

:class:`TorchImageClassifier` puts images (see :mod:`datashunt.modalities.image`) on the shared
loop (:mod:`datashunt.small.torch_loop`): every image is brought to the training images' size and
channels, pixels are standardised with per-channel statistics from ``fit``, and training batches
get random shifts (zero padding of an eighth of the side, then a random crop) and horizontal flips
when ``augment`` is on. ``class_weight="balanced"`` re-weights the loss by inverse class frequency
(off by default: a plain model, as the paper's). Subclasses give the network (``_new_module``).
"""

from collections import Counter
from numbers import Integral

import numpy as np
from sklearn.utils._param_validation import Interval, StrOptions

from ..core.inputs import require_valid
from ..exceptions import require
from ..modalities import as_inputs
from .torch_loop import TorchClassifier


def conform(image: np.ndarray, height: int, width: int, channels: int) -> np.ndarray:
    """An H×W×C uint8 image resized (bilinear, Pillow) and converted to ``channels`` (1: grey, 3: RGB).

    Examples
    --------
    >>> conform(np.zeros((4, 4, 1), np.uint8), 4, 4, 3).shape
    (4, 4, 3)
    >>> conform(np.full((2, 2, 3), 90, np.uint8), 4, 4, 1)[..., 0].tolist()[0]
    [90, 90, 90, 90]
    """
    if image.shape[2] != channels:
        image = (
            np.repeat(image, 3, axis=2)
            if channels == 3
            else np.rint(image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32))[:, :, None].astype(
                np.uint8
            )
        )
    if image.shape[:2] != (height, width):
        pil = require("PIL.Image", "image")
        squeezed = image[:, :, 0] if channels == 1 else image
        image = np.asarray(pil.fromarray(squeezed).resize((width, height), pil.BILINEAR)).reshape(height, width, -1)
    return image


class TorchImageClassifier(TorchClassifier):
    """Base of the torch image classifiers; not used directly.

    Subclasses set, besides the loop's parameters, ``image_size`` (None: the training images'
    most common size), ``augment`` and ``class_weight`` in ``__init__``, and implement
    ``_new_module``, whose input is ``(n, C, H, W)`` floats.
    """

    _shared_constraints = {
        **TorchClassifier._shared_constraints,
        "image_size": [Interval(Integral, 8, 4096, closed="both"), None],
        "augment": ["boolean"],
        "class_weight": [StrOptions({"balanced"}), None],
    }
    _fitted_attributes = TorchClassifier._fitted_attributes + ("input_shape_", "pixel_mean_", "pixel_std_")

    def _check(self, X):
        batch = as_inputs(X, "image")
        require_valid(
            batch.problems, what="images", hint="Give each row a decodable image (array, PIL image or file path)."
        )
        return batch.items

    def _prepare(self, images) -> None:
        if self.image_size is None:
            (height, width), _ = Counter(image.shape[:2] for image in images).most_common(1)[0]
        else:
            height = width = int(self.image_size)
        channels = 3 if any(image.shape[2] == 3 for image in images) else 1
        self.input_shape_ = (int(height), int(width), channels)
        pixels = self._encode(images).reshape(-1, channels).astype(np.float64) / 255.0
        self.pixel_mean_ = pixels.mean(axis=0).tolist()
        self.pixel_std_ = np.maximum(pixels.std(axis=0), 1e-3).tolist()

    def _encode(self, images) -> np.ndarray:
        height, width, channels = self.input_shape_
        return np.stack([conform(image, height, width, channels) for image in images])

    def _tensors(self, torch, rows, train=False):
        x = torch.from_numpy(np.stack(rows)).to(self.device).permute(0, 3, 1, 2).float().div_(255.0)
        mean = torch.tensor(self.pixel_mean_, dtype=x.dtype, device=x.device)[None, :, None, None]
        std = torch.tensor(self.pixel_std_, dtype=x.dtype, device=x.device)[None, :, None, None]
        x = (x - mean) / std
        if train and self.augment:
            x = _shift_and_flip(torch, x)
        return (x,)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.three_d_array = True
        return tags


def _shift_and_flip(torch, x):
    """Random shifts by up to an eighth of the side (zero padding, then a crop) and horizontal flips."""
    n, _, height, width = x.shape
    pad = max(1, min(height, width) // 8)
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,)).tolist()
    dx = torch.randint(0, 2 * pad + 1, (n,)).tolist()
    flip = (torch.rand(n) < 0.5).tolist()
    out = torch.empty_like(x)
    for i in range(n):
        crop = padded[i, :, dy[i] : dy[i] + height, dx[i] : dx[i] + width]
        out[i] = crop.flip(-1) if flip[i] else crop
    return out
