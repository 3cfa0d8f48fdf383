"""What a saved model folder may hold: the checks :mod:`datashunt.io.persist` makes before anything
from a folder is used.

A folder is untrusted data. Every file is bounded by size before it is read; every object reachable
from a loaded small model (its parameters and its fitted attributes, recursively) is data or a
model, never code or a setting that reaches outside the process; thresholds and drift references
are what ``fit`` writes; label names agree with the classes; and a large model's resource
settings stay within what any machine can give unless the caller chose them.
"""

import functools
import inspect
import itertools
import math
import os
import stat
import types
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from ..backends.prompt import label_words
from ..core.params import check_params
from ..exceptions import ConfigError, ModelFileError

#: JSON metadata and CSV sweeps: far above what any saved model writes (a sweep of a million rows
#: is about 50 MiB); a larger file is refused before it is read.
MAX_META_BYTES = 64 << 20
#: A skops or npz file, on disk and unpacked: far above any small model; guards against zip bombs.
MAX_MODEL_BYTES = 4 << 30
#: Estimators within estimators, containers within containers: no real model nests this deep.
MAX_NESTING = 32
#: Counts in a drift reference: validation sizes, exact in a float.
MAX_COUNT = 1 << 53
#: How far above 1 a confidence may lie by rounding (a softmax, the exponent of a log-probability a
#: server rounded): thresholds and deciles of confidences may exceed 1 by this much.
ROUNDING = 1e-6
TOKEN_PATTERN = r"(?u)\b\w\w+\b"  # scikit-learn's, the one datashunt's TF-IDF uses
#: The largest context a folder may give a local model (the longest of the models datashunt
#: installs); a larger one must come from the caller.
MAX_N_CTX = 32_768
#: The most requests in flight, or items in one batch, a folder may ask for.
MAX_CONCURRENCY = 64
MAX_BATCH_SIZE = 1024
#: Settings that decide how much of the loading machine a large model takes: a folder's value is
#: used within these bounds only (a larger one, or another device, must come from the caller).
RESOURCE_LIMITS = {
    "n_ctx": (lambda v: v <= MAX_N_CTX, f"at most {MAX_N_CTX:,} tokens"),
    "n_threads": (
        lambda v: v is None or v <= (os.cpu_count() or 1),
        f"at most this machine's {os.cpu_count() or 1} CPU cores",
    ),
    "device": (lambda v: v == "cpu", "'cpu' (another device is yours to choose)"),
    "batch_size": (lambda v: v <= MAX_BATCH_SIZE, f"at most {MAX_BATCH_SIZE:,}"),
    "max_concurrency": (lambda v: v <= MAX_CONCURRENCY, f"at most {MAX_CONCURRENCY}"),
}


# -- files --------------------------------------------------------------------------------------
def read_bounded(path: Path, limit: int = MAX_META_BYTES) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes; anything else is refused unread.

    The size is taken from the open file (a FIFO or a device is refused without waiting on it),
    and no more than ``limit`` bytes are ever read, even from a file that grows meanwhile.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as f:
            info = os.fstat(f.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise ModelFileError(f"{path} is not a regular file; refused unread")
            _bounded_size(path, info.st_size, limit)
            data = f.read(limit + 1)
    except OSError as exc:
        if isinstance(exc, ModelFileError):
            raise
        raise ModelFileError(f"{path} cannot be read: {exc}") from None
    _bounded_size(path, len(data), limit)
    return data


def _bounded_size(path, size: int, limit: int) -> None:
    if size > limit:
        raise ModelFileError(
            f"{path} is {size:,} bytes, more than the {limit:,} a saved model's file of this kind "
            "may hold; refused unread (it was not written by datashunt, or it was changed)"
        )


def check_archive(path: Path) -> None:
    """Refuse a zip file (skops, npz) that is too large on disk or unpacked, or compressed beyond any real model."""
    try:
        _bounded_size(path, path.stat().st_size, MAX_MODEL_BYTES)
        with zipfile.ZipFile(path) as zf:
            members = zf.infolist()
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        if isinstance(exc, ModelFileError):
            raise
        raise ModelFileError(f"{path} is corrupt: {exc}") from None
    size = sum(m.file_size for m in members)
    if size > MAX_MODEL_BYTES or any(m.file_size > (1 << 20) and m.file_size > 100 * m.compress_size for m in members):
        raise ModelFileError(
            f"{path} unpacks to {size:,} bytes or is compressed beyond any real model; refused (a zip bomb?)"
        )


# -- the small model -----------------------------------------------------------------------------
def check_small(model, path, generator: bool = False, trusted=()) -> None:
    """Refuse a small model that could read files, cache texts on disk, run a callable or hang.

    The types are trusted; this checks their values, in every estimator reachable from ``model``:
    through its parameters and its fitted attributes (lists, tuples, dicts, object arrays and
    other objects' attributes, down to :data:`MAX_NESTING` levels). Each estimator's parameters
    must meet its constraints; no parameter is a function or a class (NumPy scalar types aside)
    and no fitted attribute holds a function, unless ``trusted`` names it (``"numpy.log1p"``); no
    ``memory`` cache folder, texts read as content (not as file names), and the default token
    pattern (a crafted one can take hours).
    """
    if generator and not (hasattr(model, "generate") and _fitted(model)):
        raise ModelFileError(f"{path} does not hold a fitted generator")
    if not generator and (not hasattr(model, "predict_proba") or not hasattr(model, "classes_")):
        raise ModelFileError(f"{path} does not hold a fitted classifier with predict_proba")
    _Walk(path, trusted).visit(model, "", "", 0)


def _fitted(model) -> bool:
    try:
        check_is_fitted(model)
    except (NotFittedError, TypeError):
        return False
    return True


def _is_model(value) -> bool:
    """An estimator (or a kernel): an object whose parameters say what it is."""
    return not isinstance(value, type) and callable(getattr(value, "get_params", None))


def _code_name(value) -> str:
    """A function's qualified name (``numpy.log1p``), as ``trusted`` names it; else its type's."""
    module, name = getattr(value, "__module__", None), getattr(value, "__qualname__", None)
    if isinstance(module, str) and isinstance(name, str):
        return f"{module}.{name}"
    return f"{type(value).__module__}.{type(value).__qualname__}"


def _is_code(value) -> bool:
    """A function, a ufunc, a partial call, a module or a class (NumPy scalar types aside)."""
    return (
        inspect.isroutine(value)
        or isinstance(value, (np.ufunc, functools.partial, types.CodeType, types.ModuleType))
        or (isinstance(value, type) and not issubclass(value, np.generic))
    )


_PLAIN = (str, bytes, int, float, complex, bool, type(None), np.generic, np.dtype, slice, range)


class _Walk:
    """One pass over everything reachable from a loaded model, refusing what :func:`check_small` refuses."""

    def __init__(self, path, trusted=()):
        self.path, self.trusted, self.seen = path, set(trusted or ()), set()

    def code(self, name, value) -> None:
        """Refuse a function (or class) unless the caller trusts it by name."""
        if _code_name(value) not in self.trusted:
            self.refuse(
                name,
                value,
                f"a saved model holds data, not functions; if you know {_code_name(value)} and "
                f"trust the file, pass trusted=[{_code_name(value)!r}]",
            )

    def refuse(self, name, value, why="it could read files, write texts to disk, run code or hang"):
        raise ModelFileError(
            f"{self.path}: the small model's setting {name}={short(value)} is not allowed in a loaded model ({why})"
        )

    def visit(self, value, name: str, owner: str, depth: int) -> None:
        """Check ``value``, shown as ``name``; ``owner`` is the name of the estimator holding it."""
        if isinstance(value, _PLAIN):
            return
        if depth > MAX_NESTING:
            raise ModelFileError(
                f"{self.path}: the small model nests objects more than {MAX_NESTING} levels deep "
                f"(at {name}); no saved model does, it was changed"
            )
        if id(value) in self.seen:
            return
        self.seen.add(id(value))
        if _is_code(value):
            self.code(name, value)
        if isinstance(value, type) or inspect.isroutine(value):  # a NumPy scalar type, or a trusted function
            return
        if isinstance(value, np.ndarray):
            if value.dtype.hasobject:
                for i, item in enumerate(value.ravel()):
                    self.visit(item, f"{name}[{i}]", owner, depth + 1)
        elif _is_model(value):
            self.model(value, name, depth)
        elif isinstance(value, dict):
            for key, item in value.items():
                self.visit(key, f"{name}[{key!r}]", owner, depth + 1)
                self.visit(item, f"{name}[{key!r}]", owner, depth + 1)
        elif isinstance(value, (list, tuple, set, frozenset)):
            for i, item in enumerate(value):
                if isinstance(item, tuple) and len(item) >= 2 and isinstance(item[0], str) and _is_model(item[1]):
                    # a named step (steps, estimators, transformers): named as scikit-learn names its parameters
                    self.visit(item[1], _join(owner, item[0]), owner, depth + 1)
                    for j, rest in enumerate(item[2:], 2):
                        self.visit(rest, f"{name}[{i}][{j}]", owner, depth + 1)
                else:
                    self.visit(item, f"{name}[{i}]", owner, depth + 1)
        elif hasattr(value, "__dict__"):
            for key, item in vars(value).items():
                self.visit(item, f"{name}.{key}", owner, depth + 1)

    def model(self, model, name: str, depth: int) -> None:
        """An estimator: its constraints, then each parameter and fitted attribute."""
        try:
            params = model.get_params(deep=False)
            check_params(model, f"small model{f' part {name!r}' if name else ''}")
        except ConfigError as exc:
            raise ModelFileError(f"{self.path}: {exc}") from None
        except AttributeError as exc:  # a setting missing from the file
            raise ModelFileError(
                f"{self.path}: the small model{f' part {name!r}' if name else ''} is incomplete "
                f"({exc}); it was not written by datashunt, or it was changed"
            ) from None
        transient = set(getattr(type(model), "_transient", ()))  # rebuilt by the trusted type, never read from a file
        attributes = {k: v for k, v in vars(model).items() if k not in transient} if hasattr(model, "__dict__") else {}
        for key, value in {**attributes, **params}.items():
            full = _join(name, key)
            if (
                key in params
                and callable(value)
                and not _is_model(value)
                and not (isinstance(value, type) and issubclass(value, np.generic))
            ):
                self.code(full, value)
            if (
                (key == "memory" and value is not None)
                or (key == "input" and value != "content")
                or (key == "token_pattern" and value != TOKEN_PATTERN)
            ):
                self.refuse(full, value)
            self.visit(value, full, name, depth + 1)


def _join(owner: str, name: str) -> str:
    return f"{owner}__{name}" if owner else name


# -- metadata ------------------------------------------------------------------------------------
def threshold_ok(value) -> bool:
    """Whether ``value`` is a δ that ``fit`` writes: within [0, 1] (what every confidence measure
    gives, up to :data:`ROUNDING`), or -inf (nothing sent on) or +inf (everything sent on)."""
    return type(value) in (int, float) and (value in (-math.inf, math.inf) or 0 <= value <= 1 + ROUNDING)


def saved_threshold(value) -> float:
    """The δ to save for ``value``: the one that sends on exactly the same items, within what
    :func:`threshold_ok` accepts (every confidence lies in [0, 1], so δ < 0 keeps what -inf keeps,
    and δ > 1 or NaN keeps what +inf keeps)."""
    value = float(value)
    if math.isnan(value) or value > 1 + ROUNDING:
        return math.inf
    return -math.inf if value < 0 else value


def check_thresholds(thresholds, n: int, n_classes: int | None, fail) -> None:
    """Refuse anything but ``n`` thresholds that :func:`threshold_ok` accepts (each may be a list of
    one per class when ``n_classes`` is given)."""

    def ok(t):
        return threshold_ok(t) or (
            n_classes is not None and isinstance(t, list) and len(t) == n_classes and all(threshold_ok(v) for v in t)
        )

    if not isinstance(thresholds, list) or len(thresholds) != n or not all(ok(t) for t in thresholds):
        per_class = f" or per-class lists of {n_classes}" if n_classes is not None else ""
        fail(
            f"thresholds must be {n} numbers{per_class}, each within [0, 1] (the range of the confidence) or "
            f"±Infinity, got {short(thresholds)}"
        )


def check_calibration(calibration: dict, n_classes: int | None, fail) -> None:
    """Refuse a drift reference (``calibration.drift_reference``) unlike what
    :func:`datashunt.core.drift.reference` writes: counts, at most nine increasing deciles within
    [0, 1], one count more than deciles, summing to the validation size."""
    ref = calibration.get("drift_reference")
    if ref is None:
        return

    def count(v):
        return type(v) is int and 0 <= v <= MAX_COUNT

    keys = {"n", "sent_on", "edges", "counts"}
    good = isinstance(ref, dict) and keys <= set(ref) <= keys | {"threshold"}
    if good:
        edges, counts, n = ref["edges"], ref["counts"], ref["n"]
        good = (
            count(n)
            and count(ref["sent_on"])
            and ref["sent_on"] <= n
            and isinstance(edges, list)
            and len(edges) <= 9
            and all(type(e) in (int, float) and 0 <= e <= 1 + ROUNDING for e in edges)
            and all(a < b for a, b in itertools.pairwise(edges))
            and isinstance(counts, list)
            and len(counts) == len(edges) + 1
            and all(count(c) for c in counts)
            and sum(counts) == n
        )
        if good and "threshold" in ref:
            t = ref["threshold"]
            good = threshold_ok(t) or (
                n_classes is not None
                and isinstance(t, list)
                and len(t) == n_classes
                and all(threshold_ok(v) for v in t)
            )
    if not good:
        fail(
            f"calibration.drift_reference is not a drift reference (validation size n, sent_on, at most nine "
            f"increasing deciles within [0, 1] and their counts, the threshold), got {short(ref)}"
        )


def check_label_names(names, classes: list, fail) -> None:
    """Refuse label names that do not match the classes: a name for a class that is not one, two
    names for one class, names that are not distinct strings, or a class given the word that names
    another class (the large model's answers would be read as the wrong class)."""
    if names is None:
        return
    text = {str(c): c for c in classes}
    if len(text) != len(classes):
        fail(f"classes {classes} are not distinct as text, so label_names cannot name them")
    named = Counter(str(k) for k in names)
    unknown = sorted(k for k in named if k not in text)
    twice = sorted(k for k, times in named.items() if times > 1)
    if unknown or twice:
        fail(
            f"label_names does not match the classes {classes}: "
            + "; ".join(filter(None, [unknown and f"{unknown} are not classes", twice and f"{twice} named twice"]))
        )
    try:
        words = label_words(classes, names)
    except ConfigError as exc:
        fail(str(exc))
    by_word = {str(c).strip().lower(): c for c in classes}
    for c, word in zip(classes, words):
        other = by_word.get(word.strip().lower(), c)
        if other != c:
            fail(
                f"label_names gives class {c!r} the word {word!r}, the name of class {other!r}: the large model's "
                "answers would be read as the wrong class"
            )


def check_resources(large, saved: dict, given: dict, path, stage: str | None = None) -> None:
    """Refuse a large model's resource settings (:data:`RESOURCE_LIMITS`) taken from the folder
    beyond what any machine can give; the caller's own settings (``given``) are not bounded.
    ``stage`` names the stage of a cascade or generator whose options these are."""
    beyond = {
        name: f"{name}={getattr(large, name)!r} ({limit})"
        for name, (ok, limit) in RESOURCE_LIMITS.items()
        if name in saved and name not in given and hasattr(large, name) and not ok(getattr(large, name))
    }
    if beyond:
        options = {name: getattr(large, name) for name in beyond}
        mine = f"large_options={{{stage!r}: {options}}}" if stage else f"large_options={options}"
        raise ModelFileError(
            f"{path}{f' (stage {stage!r})' if stage else ''} asks for {', '.join(beyond.values())}: a loaded model "
            f"takes what it may spend of this machine within these bounds only. If you want it, pass {mine} "
            "(CLI: set them in your config)"
        )


def short(value) -> str:
    """``repr(value)``, cut to 200 characters (a message quotes what it refuses, not a whole file)."""
    shown = repr(value)
    return shown if len(shown) <= 200 else shown[:200] + "..."
