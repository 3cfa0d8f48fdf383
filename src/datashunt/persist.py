"""Saving and loading a fitted shunt without unpickling anything untrusted.

A saved shunt is a folder: ``shunt.json`` (threshold, classes, calibration, the large backend's
name and options: never an API key), ``sweep.csv`` and ``small.skops`` (the small model in
skops' format, which loads only the types it is told to trust).
"""

import json
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import skops.io as sio

from . import __version__
from .exceptions import ConfigError, ModelFileError
from .prompting import Prompt

FORMAT = 1
TRUSTED_PREFIXES = ("sklearn.", "numpy.", "scipy.", "datashunt.", "builtins.", "collections.")


def save(shunt, folder) -> Path:
    """Write a fitted shunt to ``folder`` (created if needed)."""
    from sklearn.utils.validation import check_is_fitted

    from .large import backend_name

    check_is_fitted(shunt, "threshold_")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    params = {k: v for k, v in shunt.get_params(deep=False).items() if k not in ("small", "large")}
    if callable(params["confidence"]):
        raise ConfigError("a shunt with a custom confidence function cannot be saved; use a named measure")
    meta = {
        "format": FORMAT,
        "datashunt_version": __version__,
        "params": params,
        "classes": shunt.classes_.tolist(),
        "threshold": shunt.threshold_,
        "calibration": shunt.calibration_,
        "class_report": shunt.class_report_.to_dict("list"),
        "distillation": getattr(shunt, "distillation_", None),
        "large": {"backend": backend_name(shunt.large_), "options": _large_options(shunt.large_)},
    }
    try:
        text = json.dumps(meta, indent=2, default=_plain)
    except TypeError as exc:
        raise ConfigError(f"cannot save this shunt's settings as JSON: {exc}") from None
    sio.dump(shunt.small_, folder / "small.skops")
    learnable = getattr(shunt, "learnable_", None)
    if learnable is not None:
        sio.dump(learnable, folder / "learnable.skops")
    elif (folder / "learnable.skops").exists():
        (folder / "learnable.skops").unlink()
    (folder / "shunt.json").write_text(text)
    if shunt.sweep_ is not None:
        shunt.sweep_.to_csv(folder / "sweep.csv", index=False)
    return folder


def load(folder, trusted: list[str] | None = None):
    """Load a shunt saved by :func:`save`.

    Only types from scikit-learn, NumPy, SciPy and datashunt are trusted in the small model;
    pass ``trusted`` to allow others after checking them.
    """
    from .large import make_large
    from .shunt import ShuntClassifier

    folder = Path(folder)
    meta_path, small_path = folder / "shunt.json", folder / "small.skops"
    if not meta_path.is_file() or not small_path.is_file():
        raise ModelFileError(f"{folder} is not a saved shunt (needs shunt.json and small.skops)")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{meta_path} is corrupt: {exc}") from None
    if meta.get("format") != FORMAT:
        raise ModelFileError(f"{meta_path}: unsupported format {meta.get('format')!r} (this version reads {FORMAT})")
    small = _load_skops(small_path, trusted)
    learnable_path = folder / "learnable.skops"
    learnable = _load_skops(learnable_path, trusted) if learnable_path.is_file() else None
    options = dict(meta["large"]["options"])
    if isinstance(options.get("prompt"), dict):
        options["prompt"] = Prompt(**options["prompt"])
    large = make_large(meta["large"]["backend"], **options)
    shunt = ShuntClassifier(small, large, **meta["params"])
    shunt.small_, shunt.large_ = small, large
    if learnable is not None:
        shunt.learnable_, shunt.distillation_ = learnable, meta.get("distillation")
    shunt.classes_ = np.asarray(meta["classes"])
    shunt.labels_ = shunt._labels()
    shunt.threshold_ = float(meta["threshold"])
    shunt.calibration_ = meta["calibration"]
    shunt.class_report_ = pd.DataFrame(meta["class_report"])
    shunt._fit_pruning_from_report()
    shunt.sweep_ = pd.read_csv(folder / "sweep.csv") if (folder / "sweep.csv").is_file() else None
    if hasattr(small, "n_features_in_"):
        shunt.n_features_in_ = small.n_features_in_
    return shunt


def _load_skops(path, trusted):
    try:
        untrusted = sio.get_untrusted_types(file=path)
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
        raise ModelFileError(f"{path} is corrupt: {exc}") from None
    refused = [t for t in untrusted if not t.startswith(TRUSTED_PREFIXES) and t not in (trusted or [])]
    if refused:
        raise ModelFileError(f"{path} contains types that are not trusted: {refused}; "
                             "if you trust the file, pass them in trusted=[...]")
    return sio.load(path, trusted=untrusted)


def _large_options(large) -> dict:
    options = large.get_params(deep=False)
    prompt = options.get("prompt")
    if isinstance(prompt, Prompt):
        options["prompt"] = {"instruction": prompt.instruction, "template": prompt.template, "system": prompt.system}
    if isinstance(options.get("table"), pd.DataFrame):
        raise ConfigError("a replay model built from an in-memory table cannot be saved; build it from a file path")
    price = options.get("price")
    if price is not None and not isinstance(price, dict):
        options["price"] = {k: getattr(price, k) for k in ("per_call", "per_million_input", "per_million_output")}
    if isinstance(options.get("cache"), Path):
        options["cache"] = str(options["cache"])
    return options


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")
