"""Fashion-MNIST (Xiao et al. 2017, MIT licence), made long-tailed the way CIFAR-100-LT is.

The images come from Debian's ``dataset-fashion-mnist`` package (IDX files under
``/usr/share/datasets/fashion-mnist/``; ``apt-get install dataset-fashion-mnist``), read without
any download. :func:`long_tailed` keeps an exponential profile of training images per class, from
``head`` images for the first class down to ``head / ratio`` for the last (Cao et al. 2019's
recipe for CIFAR-100-LT), drawn with a fixed seed; the 10,000 test images stay balanced.
"""

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...exceptions import DataError

DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path) -> np.ndarray:
    """An IDX file (the MNIST format, optionally gzipped) as an array.

    Examples
    --------
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "x-idx1-ubyte"
    >>> _ = path.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 8, 9]))
    >>> read_idx(path).tolist()
    [7, 8, 9]
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_TYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number {raw[:4].hex()})")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(IDX_TYPES[raw[2]])
    body = raw[4 + 4 * ndim :]
    if len(body) != int(np.prod(shape)) * dtype.itemsize:
        raise DataError(f"{path} is truncated or corrupt: header says {shape}, the file holds {len(body)} bytes")
    return np.frombuffer(body, dtype=dtype).reshape(shape)


def load_fashion_mnist(split: str = "train", folder=None) -> tuple[np.ndarray, np.ndarray]:
    """``(images, labels)``: uint8 images of shape (n, 28, 28) and class indices (see :data:`CLASSES`).

    ``folder`` defaults to ``$DATASHUNT_FASHION_MNIST`` or Debian's package folder.
    """
    if split not in FILES:
        raise DataError(f"split must be one of {list(FILES)}, got {split!r}")
    folder = Path(folder or os.environ.get("DATASHUNT_FASHION_MNIST") or DEFAULT_DIR)
    paths = []
    for stem in FILES[split]:
        found = [folder / name for name in (stem, stem + ".gz") if (folder / name).is_file()]
        if not found:
            raise DataError(
                f"Fashion-MNIST {split} file {stem}[.gz] not found in {folder}; install it with "
                "'apt-get install dataset-fashion-mnist' or set DATASHUNT_FASHION_MNIST"
            )
        paths.append(found[0])
    images, labels = read_idx(paths[0]), read_idx(paths[1])
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(f"Fashion-MNIST {split}: images {images.shape} and labels {labels.shape} do not match")
    return images, labels.astype(int)


def profile(n_classes: int, head: int = 500, ratio: float = 100.0) -> np.ndarray:
    """Training images per class: ``head * ratio ** (-i / (n_classes - 1))`` for class i (CIFAR-LT's profile).

    Examples
    --------
    >>> profile(10, 500, 100).tolist()
    [500, 299, 179, 107, 64, 38, 23, 13, 8, 5]
    """
    if n_classes < 2 or head < 1 or ratio < 1:
        raise DataError(
            f"a long-tailed profile needs >= 2 classes, head >= 1 and ratio >= 1; got {n_classes}, {head}, {ratio}"
        )
    return np.array([int(head * ratio ** (-i / (n_classes - 1))) for i in range(n_classes)])


@dataclass(frozen=True)
class LongTailed:
    """A long-tailed training set: the images, their labels, the indices into the full training
    set they came from, the count per class and each class's group (head / medium / tail)."""

    images: np.ndarray
    labels: np.ndarray
    source_index: np.ndarray
    counts: np.ndarray
    groups: dict


def long_tailed(
    images, labels, *, head: int = 500, ratio: float = 100.0, groups=(3, 4, 3), random_state=0
) -> LongTailed:
    """Draw a long-tailed training set from a balanced one: class i keeps ``profile(...)[i]`` images.

    ``groups`` splits the classes, ordered from most to fewest images, into head / medium / tail.

    Examples
    --------
    >>> images, labels = np.zeros((1000, 2, 2), np.uint8), np.repeat(np.arange(10), 100)
    >>> lt = long_tailed(images, labels, head=100, ratio=10)
    >>> lt.counts.tolist(), lt.groups["tail"]
    ([100, 77, 59, 46, 35, 27, 21, 16, 12, 10], [7, 8, 9])
    """
    labels = np.asarray(labels)
    classes = np.unique(labels)
    if sum(groups) != len(classes):
        raise DataError(f"groups {groups} must add up to the {len(classes)} classes")
    counts = profile(len(classes), head, ratio)
    rng = np.random.default_rng(random_state)
    chosen = []
    for c, count in zip(classes, counts):
        pool = np.flatnonzero(labels == c)
        if len(pool) < count:
            raise DataError(f"class {c} has {len(pool)} images; the profile asks for {count}")
        chosen.append(np.sort(rng.choice(pool, size=count, replace=False)))
    index = np.concatenate(chosen)
    bounds = np.cumsum((0,) + tuple(groups))
    named = {
        name: [int(c) for c in classes[bounds[g] : bounds[g + 1]]] for g, name in enumerate(("head", "medium", "tail"))
    }
    return LongTailed(images[index], labels[index], index, counts, named)


@dataclass(frozen=True)
class LongTailedTask:
    """Fashion-MNIST-LT as a task: long-tailed training images, a balanced validation set drawn from
    the training images the long tail left out, the balanced test images, labels as class names,
    and each class's group (head / medium / tail)."""

    train: LongTailed
    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    group_of: dict
    X_pool: np.ndarray  # training images in neither set, drawn at random: unlabelled traffic for 2CD

    @property
    def counts(self) -> dict:
        return dict(zip(CLASSES, self.train.counts.tolist()))


def long_tailed_task(
    ratio: float = 100.0, *, head: int = 500, n_validation: int = 100, n_pool: int = 0, random_state=0, folder=None
) -> LongTailedTask:
    """Fashion-MNIST-LT at ``ratio`` with ``n_validation`` validation images per class and ``n_pool``
    unlabelled ones (seed-fixed)."""
    images, labels = load_fashion_mnist("train", folder)
    X_test, y_test = load_fashion_mnist("test", folder)
    lt = long_tailed(images, labels, head=head, ratio=ratio, random_state=random_state)
    rng = np.random.default_rng(random_state)
    free = np.setdiff1d(np.arange(len(labels)), lt.source_index)
    val = np.concatenate([rng.choice(free[labels[free] == c], n_validation, replace=False) for c in np.unique(labels)])
    names = np.array(CLASSES, dtype=object)
    return LongTailedTask(
        lt,
        lt.images,
        names[lt.labels],
        images[val],
        names[labels[val]],
        X_test,
        names[y_test],
        {CLASSES[c]: g for g, members in lt.groups.items() for c in members},
        images[rng.permutation(np.setdiff1d(free, val))[:n_pool]],
    )
