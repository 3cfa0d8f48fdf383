"""Images: numpy arrays, PIL images or image files, each checked and held as an H×W×C uint8 array.

Every image becomes the same form before any model sees it: ``uint8`` pixels, shape ``(H, W, 1)``
for grey or ``(H, W, 3)`` for colour (an alpha channel is dropped; float pixels in [0, 1] are
scaled to 0–255). A missing file, an undecodable one, an unsupported mode or a malformed array is
a per-item problem, never an error for the whole batch. Files are decoded when the batch is
checked, so a batch holds its pixels in memory: feed very large collections in chunks.
"""

import base64
import hashlib
import io
from pathlib import Path, PurePath

import numpy as np
import pandas as pd

from ..exceptions import DataError, require
from .base import Modality, object_column

#: PIL modes converted to RGB (palette, alpha, print and video colour spaces, 1-bit).
TO_RGB = {"RGBA", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "RGBX", "RGBa", "1", "LA", "La"}


class Image(Modality):
    """Images in the forms people hold them: a 3-D (N, H, W) or 4-D (N, H, W, C) array, or a list of
    arrays, PIL images and file paths.

    Examples
    --------
    >>> items, problems = Image().check([np.zeros((2, 2)), "no/such.png", np.full((2, 2, 3), 2.0)])
    >>> items[0].shape, items[0].dtype.name
    ((2, 2, 1), 'uint8')
    >>> problems
    [None, 'no such image file: no/such.png', 'float pixels must lie in [0, 1], got 2.0 to 2.0']
    >>> Image().key(items[0]) == Image().key(np.zeros((2, 2, 1), np.uint8))  # by content
    True
    """

    name = "image"
    noun = "Image"

    @classmethod
    def recognises(cls, X) -> bool:
        if isinstance(X, np.ndarray) and X.dtype != object:
            return X.ndim in (3, 4) and X.dtype.kind in "biuf"
        if isinstance(X, pd.DataFrame) or isinstance(X, str):
            return False
        values = X if isinstance(X, (list, tuple, pd.Series, np.ndarray)) else []
        first = next((v for v in values if v is not None), None)
        return (
            _is_pil(first)
            or isinstance(first, PurePath)
            or (isinstance(first, np.ndarray) and first.ndim in (2, 3) and first.dtype.kind in "biuf")
        )

    def check(self, X):
        if isinstance(X, (str, PurePath)) or _is_pil(X):
            raise DataError("expected a batch of images, got a single one; wrap it in a list")
        if isinstance(X, np.ndarray) and X.dtype != object:
            if X.ndim not in (3, 4):
                raise DataError(f"an array of images has shape (N, H, W) or (N, H, W, C), got {X.shape}")
            X = list(X)
        elif isinstance(X, pd.DataFrame):
            if X.shape[1] != 1:
                raise DataError(f"images come as one column, got a table of {X.shape[1]} columns")
            X = X.iloc[:, 0]
        values = list(X)
        if not values:
            raise DataError("no inputs: the batch of images is empty")
        loaded = [_load(v) for v in values]
        return object_column([item for item, _ in loaded]), [problem for _, problem in loaded]

    def key(self, item) -> str:
        digest = hashlib.sha256(f"{item.shape}|{item.dtype.str}|".encode())
        digest.update(np.ascontiguousarray(item).tobytes())
        return "sha256:" + digest.hexdigest()

    def content(self, item) -> dict:
        """A chat ``image_url`` part holding the image as a PNG data URL (needs Pillow)."""
        pil = require("PIL.Image", "image")
        buffer = io.BytesIO()
        pil.fromarray(item[:, :, 0] if item.shape[2] == 1 else item).save(buffer, format="PNG")
        url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
        return {"type": "image_url", "image_url": {"url": url}}

    def prompt_key(self, item) -> dict:
        return {"type": "image", "key": self.key(item)}


def _is_pil(value) -> bool:
    return any(c.__module__.startswith("PIL.") and c.__name__ == "Image" for c in type(value).__mro__)


def _load(value):
    """``(H×W×C uint8 array, None)`` or ``(None, problem)``."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None, "missing image (None/NaN)"
    if isinstance(value, (str, PurePath)):
        return _from_file(value)
    if _is_pil(value):
        return _from_pil(value)
    if isinstance(value, np.ndarray):
        return _from_array(value)
    return None, f"not an image ({type(value).__name__}); give an array, a PIL image or a file path"


def _from_file(path):
    pil = require("PIL.Image", "image")
    path = Path(path)
    if not path.is_file():
        return None, f"no such image file: {path}"
    try:
        with pil.open(path) as image:
            image.load()
            return _from_pil(image)
    except (OSError, ValueError, pil.DecompressionBombError, SyntaxError) as exc:
        return None, f"cannot decode image file {path}: {exc}"


def _from_pil(image):
    mode = image.mode
    if mode in TO_RGB:
        image, mode = image.convert("RGB"), "RGB"
    if mode not in ("L", "RGB"):
        return None, f"unsupported image mode {mode!r} (16- or 32-bit pixels); convert it to 'L' or 'RGB' first"
    return _from_array(np.asarray(image))


def _from_array(array):
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        return None, f"an image array has shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {array.shape}"
    if array.shape[0] == 0 or array.shape[1] == 0:
        return None, f"empty image (shape {array.shape})"
    array = array[:, :, :3]
    kind = array.dtype.kind
    if kind == "b":
        return (array * 255).astype(np.uint8), None
    if kind not in "iuf":
        return None, f"image pixels must be numbers, got dtype {array.dtype}"
    low, high = float(np.min(array)), float(np.max(array))
    if kind == "f":
        if not np.isfinite(array).all() or low < 0 or high > 1:
            return None, f"float pixels must lie in [0, 1], got {low} to {high}"
        return np.rint(array * 255).astype(np.uint8), None
    if low < 0 or high > 255:
        return None, f"integer pixels must lie in 0..255, got {int(low)} to {int(high)}"
    return array.astype(np.uint8, copy=False), None
