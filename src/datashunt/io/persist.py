"""Saving and loading a fitted shunt: a folder of data that is never run as code.

A saved shunt is a folder: ``shunt.json`` (threshold, classes, calibration, the large backend's
name and settings: never an API key, never the call cache), ``sweep.csv`` and ``small.skops``
(the small model in skops' format, which builds only the types it is told to trust). What
:func:`load` trusts, and where a loaded model's calls may go, is stated there.
"""

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import skops.io as sio
from sklearn.frozen import FrozenEstimator
from sklearn.utils.validation import check_is_fitted

from .. import __version__
from ..backends import backend_class, backend_name, make_large
from ..backends.base import Backend, LargeModel
from ..backends.generate import generator_class, generator_name, make_generator
from ..backends.prompt import Prompt, label_words
from ..core.params import check_params
from ..estimators.cascade import Cascade
from ..estimators.generator import ShuntGenerator
from ..estimators.shunt import ShuntClassifier
from ..exceptions import ConfigError, ModelFileError
from .checks import (
    check_archive,
    check_calibration,
    check_label_names,
    check_resources,
    check_small,
    check_thresholds,
    read_bounded,
    saved_threshold,
    short,
    threshold_ok,
)

FORMAT = 1
META_TYPES = {
    "format": int,
    "datashunt_version": str,
    "params": dict,
    "classes": list,
    "threshold": (int, float),
    "calibration": dict,
    "class_report": dict,
    "distillation": (dict, type(None)),
    "large": dict,
}
REPORT_COLUMNS = ("class", "precision", "recall", "support", "excels")
SWEEP_COLUMNS = ("threshold", "accuracy", "large_rate")
#: The exact types in datashunt's own small models that skops does not already trust (it trusts
#: scikit-learn, NumPy and SciPy types and plain containers). Reviewed: the torch models accept only
#: their parameters (checked against their constraints) and known fitted arrays; the MiniLM
#: architecture comes from the installed package, the file gives weights only.
TRUSTED_TYPES = frozenset(
    {
        "datashunt.small.tfidf.CompactTfidfVectorizer",
        "datashunt.small.textcnn.TextCNNClassifier",
        "datashunt.small.lstm.LSTMClassifier",
        "datashunt.small.minilm.MiniLMClassifier",
        "datashunt.small.resnet.ResNet32Classifier",
        "datashunt.small.cnn.SmallCNNClassifier",
        "datashunt.small.captioner.CaptionerGenerator",
    }
)


def save(shunt, folder) -> Path:
    """Write a fitted shunt (or :class:`~datashunt.Cascade`) to ``folder`` (created if needed)."""
    if isinstance(shunt, Cascade):
        return _save_cascade(shunt, Path(folder))
    if isinstance(shunt, ShuntGenerator):
        return _save_generator(shunt, Path(folder))
    check_is_fitted(shunt, "threshold_")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    params = {k: v for k, v in shunt.get_params(deep=False).items() if k not in ("small", "large")}
    params["modality"] = shunt.modality_  # what "auto" found, so a loaded model reads items the same way
    if callable(params["confidence"]):
        raise ConfigError("a shunt with a custom confidence function cannot be saved; use a named measure")
    check_label_names(params["label_names"], shunt.classes_.tolist(), _refuse_save)
    meta = {
        "format": FORMAT,
        "datashunt_version": __version__,
        "params": params,
        "classes": shunt.classes_.tolist(),
        "threshold": saved_threshold(shunt.threshold_),
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
    _save_state(shunt.large_, folder / "large_state.npz")
    if shunt.sweep_ is not None:
        shunt.sweep_.to_csv(folder / "sweep.csv", index=False)
    return folder


def load(
    folder, *, large_options: dict | None = None, trust_saved_locations: bool = False, trusted: list[str] | None = None
):
    """Load a shunt (or a :class:`~datashunt.Cascade`, a :class:`~datashunt.ShuntGenerator`) saved by :func:`save`.

    A folder is data: nothing in it runs, and nothing in it decides where texts or keys go. For a
    cascade or a generator, ``large_options`` maps each backend stage's name to its options.

    - ``small.skops`` and ``learnable.skops`` may hold only the exact types listed in
      :data:`TRUSTED_TYPES` (what datashunt's own small models are made of); any other type is
      refused unless you name it in ``trusted`` after checking it.
    - ``shunt.json`` is checked key by key: a missing or unknown key, a value of the wrong type, a
      class list that differs from the small model's, label names that do not match the classes,
      a threshold no confidence can reach or a drift reference unlike what ``fit`` writes is refused.
    - Every estimator reachable from a small model, through its parameters and its fitted
      attributes, is checked: no function, no file or cache folder, the default token pattern.
    - Every file is bounded by size before it is read (:data:`~datashunt.io.checks.MAX_META_BYTES`
      for JSON and CSV, :data:`~datashunt.io.checks.MAX_MODEL_BYTES` for skops and npz).
    - Where the large model's calls go (an endpoint ``base_url``, the environment variable holding
      the key ``api_key_env``, a replay ``table``, a GGUF file path) comes from ``large_options``;
      a saved location other than the backend's default is refused unless you pass
      ``trust_saved_locations=True``. The call cache is never taken from the folder.
    - What the large model may take of this machine (a context ``n_ctx``, ``n_threads``, a
      ``device``, ``batch_size``, ``max_concurrency``) comes from the folder only within
      :data:`~datashunt.io.checks.RESOURCE_LIMITS`; beyond them, or another device, only from
      ``large_options``.

    Parameters
    ----------
    folder : path
        The saved shunt.
    large_options : dict, optional
        Settings of the large backend that replace the saved ones: its locations, ``cache``,
        time-outs, concurrency. A ``backend`` key, if given, must name the saved backend.
    trust_saved_locations : bool
        Use the locations written in the folder; only for folders whose author you trust.
    trusted : list of str, optional
        Further types to trust in the skops files, and functions a small model may hold, by
        qualified name (``numpy.log1p``).

    Raises
    ------
    ModelFileError
        The folder is incomplete, corrupt or holds something it should not.
    ConfigError
        The folder names a location and you gave none (see above).
    """
    folder = Path(folder)
    if (folder / "cascade.json").is_file():
        return _load_cascade(folder, large_options, trust_saved_locations, trusted)
    if (folder / "generator.json").is_file():
        return _load_generator(folder, large_options, trust_saved_locations, trusted)
    meta_path, small_path = folder / "shunt.json", folder / "small.skops"
    if not meta_path.is_file() or not small_path.is_file():
        raise ModelFileError(f"{folder} is not a saved shunt (needs shunt.json and small.skops)")
    meta = _read_json(meta_path)
    _check_meta(meta, meta_path)
    small = _load_skops(small_path, trusted)
    learnable_path = folder / "learnable.skops"
    learnable = _load_skops(learnable_path, trusted) if learnable_path.is_file() else None
    for name, model in (("small", small), ("learnable", learnable)):
        found = getattr(model, "classes_", None)
        if model is not None and (found is None or np.asarray(found).tolist() != meta["classes"]):
            raise ModelFileError(
                f"{meta_path}: classes {meta['classes']} differ from the {name} model's "
                f"{None if found is None else np.asarray(found).tolist()}; the folder is inconsistent "
                "(a different order would swap labels)"
            )
    large = _large(meta["large"], large_options, trust_saved_locations, meta_path)
    _load_state(large, folder / "large_state.npz")
    shunt = ShuntClassifier(small, large, **meta["params"])
    try:
        check_params(shunt, "shunt")
        check_label_names(shunt.label_names, meta["classes"], _refuser(meta_path))
        shunt.small_, shunt.large_ = small, large
        shunt.classes_ = np.asarray(meta["classes"])
        shunt.labels_ = shunt._labels()
        shunt.modality_ = shunt.modality
    except ConfigError as exc:
        raise ModelFileError(f"{meta_path}: {exc}") from None
    if learnable is not None:
        shunt.learnable_, shunt.distillation_ = learnable, meta["distillation"]
    shunt.threshold_ = float(meta["threshold"])
    shunt.calibration_ = meta["calibration"]
    shunt.class_report_ = pd.DataFrame(meta["class_report"])
    shunt._fit_pruning_from_report()
    shunt.sweep_ = _read_sweep(folder / "sweep.csv", SWEEP_COLUMNS)
    if hasattr(small, "n_features_in_"):
        shunt.n_features_in_ = small.n_features_in_
    return shunt


def _check_meta(meta, path) -> None:
    """Refuse a shunt.json whose keys or value types are not exactly what :func:`save` writes."""
    fail = _refuser(path)
    if not isinstance(meta, dict):
        fail(f"expected a JSON object, got {type(meta).__name__}")
    if type(meta.get("format")) is not int or meta["format"] != FORMAT:
        raise ModelFileError(f"{path}: unsupported format {meta.get('format')!r} (this version reads {FORMAT})")
    _check_keys(meta, META_TYPES, "", fail)
    if not threshold_ok(meta["threshold"]):
        fail(
            f"threshold must be a number within [0, 1] (the range of the confidence) or ±Infinity, got "
            f"{short(meta['threshold'])}"
        )
    check_calibration(meta["calibration"], None, fail)
    _older_params(meta["params"], ShuntClassifier._get_param_names())
    _check_keys(
        meta["params"],
        dict.fromkeys(set(ShuntClassifier._get_param_names()) - {"small", "large"}, object),
        "params.",
        fail,
    )
    _check_keys(meta["large"], {"backend": str, "options": dict}, "large.", fail)
    classes = meta["classes"]
    if not classes or not all(isinstance(c, (str, int, float)) for c in classes) or len(set(classes)) != len(classes):
        fail(f"classes must be distinct strings or numbers, got {classes!r}")
    report = meta["class_report"]
    _check_keys(report, dict.fromkeys(REPORT_COLUMNS, list), "class_report.", fail)
    if any(len(column) != len(classes) for column in report.values()) or report["class"] != classes:
        fail("class_report does not describe the saved classes")
    numbers = report["precision"] + report["recall"]
    if (
        not all(type(v) is bool for v in report["excels"])
        or not all(type(v) in (int, float) and 0 <= v <= 1 for v in numbers)
        or not all(type(v) is int and v >= 0 for v in report["support"])
    ):
        fail(
            "class_report holds values of the wrong type (precision and recall in [0, 1], support counts, "
            "excels true or false)"
        )


def _older_params(params, names) -> None:
    """Fill in parameters added since format 1 was first written (folders saved before them hold
    none of these, and behave as they did then)."""
    added = {
        "modality": "auto",
        "confidence_level": None,
        "tolerance": 0.0,
        "cv": None,
        "max_calibration_calls": None,
        "certification": "paired",
    }
    if isinstance(params, dict):
        for name, value in added.items():
            if name in names:
                params.setdefault(name, value)


def _check_keys(record: dict, types: dict, prefix: str, fail) -> None:
    missing, extra = sorted(set(types) - set(record)), sorted(set(record) - set(types))
    if missing or extra:
        fail(f"missing key(s) {[prefix + k for k in missing]}, unknown key(s) {[prefix + k for k in extra]}")
    for key, kind in types.items():
        if not isinstance(record[key], kind):
            fail(f"{prefix}{key} has the wrong type ({type(record[key]).__name__})")


def _refuser(path):
    """The function that refuses ``path`` for a reason, as written by this version or changed."""

    def fail(why):
        raise ModelFileError(f"{path}: {why}; it was not written by this version of datashunt, or it was changed")

    return fail


def _refuse_save(why):
    raise ConfigError(f"cannot save this model: {why}")


def _read_json(path: Path):
    """The JSON in ``path``, read only when it is a regular file of at most
    :data:`~datashunt.io.checks.MAX_META_BYTES`."""
    try:
        return json.loads(read_bounded(path).decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # bad JSON or encoding, a 5000-digit number, deep nesting
        raise ModelFileError(f"{path} is corrupt: {exc}") from None


def _large(saved: dict, given: dict | None, trust: bool, path, generating: bool = False):
    """The large backend (a generator with ``generating``): settings from the folder, locations only
    from the caller (or a trusted folder)."""
    class_of, make = (generator_class, make_generator) if generating else (backend_class, make_large)
    cls = class_of(saved["backend"])
    options = {k: v for k, v in saved["options"].items() if k != "cache"}  # a cache belongs to a machine
    given = dict(given or {})
    given_backend = given.pop("backend", saved["backend"])
    if given_backend != saved["backend"]:
        raise ConfigError(
            f"{path}: the shunt was calibrated with the {saved['backend']!r} large backend, not "
            f"{given_backend!r}; refit it to change the large model"
        )
    foreign = [
        f"{name}={options[name]!r}"
        for name in cls.location_params
        if name in options and name not in given and not trust and not cls.is_default_location(name, options[name])
    ]
    if foreign:
        shown = ", ".join(foreign)
        raise ConfigError(
            f"{path} says its large model uses {shown}. A loaded model takes where its calls go only from you: "
            f"pass large_options with {', '.join(f.split('=')[0] for f in foreign)} (CLI: set them under [large] "
            "in your config), or trust_saved_locations=True (CLI: --trust-model-locations) if you trust whoever "
            "made this folder"
        )
    saved_options = dict(options)
    options.update(given)
    if isinstance(options.get("prompt"), dict):
        try:
            options["prompt"] = Prompt(**options["prompt"])
        except (TypeError, ConfigError) as exc:
            raise ModelFileError(f"{path}: large.options.prompt is invalid: {exc}") from None
    try:
        large = make(saved["backend"], **options)
        check_params(large, "large model")
    except ConfigError as exc:
        raise ModelFileError(f"{path}: {exc}") from None
    check_resources(large, saved_options, given, path, saved.get("name"))
    return large


def _save_state(large, path: Path) -> None:
    """What a large backend learnt in ``fit`` (a few-shot head), as plain arrays in ``path``."""
    state = large.fitted_state()
    if state is None:
        path.unlink(missing_ok=True)
    else:
        np.savez(path, **state)


def _load_state(large, path: Path) -> None:
    """Give a large backend its saved state: arrays only (no pickles), checked by the backend."""
    if type(large).fitted_state is Backend.fitted_state:
        return
    if not path.is_file():
        raise ModelFileError(f"{path} is missing: the {type(large).__name__} was fitted and saved its state there")
    check_archive(path)
    try:
        with np.load(path, allow_pickle=False) as arrays:
            large.set_fitted_state({name: arrays[name] for name in arrays.files})
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ModelFileError(f"{path} is corrupt or holds objects, not arrays: {exc}") from None
    except ConfigError as exc:
        raise ModelFileError(f"{path}: {exc}") from None


def _read_sweep(path, columns):
    if not path.exists():
        return None
    data = read_bounded(path)
    try:
        sweep = pd.read_csv(io.BytesIO(data))
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise ModelFileError(f"{path} is corrupt: {exc}") from None
    missing = sorted(set(columns) - set(sweep.columns))
    if missing or not all(pd.api.types.is_numeric_dtype(sweep[c]) for c in columns):
        raise ModelFileError(f"{path} is not a threshold sweep (needs numeric columns {list(columns)})")
    return sweep


def _save_cascade(cascade, folder: Path) -> Path:
    """A fitted Cascade as ``cascade.json``, one skops file per classifier stage and ``sweep.csv``."""
    check_is_fitted(cascade, "thresholds_")
    params = {k: v for k, v in cascade.get_params(deep=False).items() if k != "stages"}
    params["modality"] = cascade.modality_
    if callable(params["confidence"]):
        raise ConfigError("a cascade with a custom confidence function cannot be saved; use a named measure")
    folder.mkdir(parents=True, exist_ok=True)
    stages = []
    for i, (name, model) in enumerate(cascade.stages_):
        if isinstance(model, LargeModel):
            stages.append(
                {"name": name, "kind": "large", "backend": backend_name(model), "options": _large_options(model)}
            )
            _save_state(model, folder / f"stage_{i}_state.npz")
        else:
            sio.dump(model.estimator if isinstance(model, FrozenEstimator) else model, folder / f"stage_{i}.skops")
            stages.append({"name": name, "kind": "classifier"})
    check_label_names(params["label_names"], cascade.classes_.tolist(), _refuse_save)
    meta = {
        "format": FORMAT,
        "datashunt_version": __version__,
        "params": params,
        "classes": cascade.classes_.tolist(),
        "stages": stages,
        "calibration": cascade.calibration_,
        "thresholds": [np.vectorize(saved_threshold, otypes=[float])(t).tolist() for t in cascade.thresholds_],
    }
    try:
        (folder / "cascade.json").write_text(json.dumps(meta, indent=2, default=_plain))
    except TypeError as exc:
        raise ConfigError(f"cannot save this cascade's settings as JSON: {exc}") from None
    if cascade.sweep_ is not None:
        cascade.sweep_.to_csv(folder / "sweep.csv", index=False)
    return folder


def _read_meta(path: Path, keys: dict):
    """A multi-stage model's JSON, checked for its format and exactly ``keys``, and the function
    that refuses it (for the caller's further checks)."""
    meta, fail = _read_json(path), _refuser(path)
    if not isinstance(meta, dict) or type(meta.get("format")) is not int or meta["format"] != FORMAT:
        fail(f"unsupported format {meta.get('format') if isinstance(meta, dict) else meta!r}")
    _check_keys(meta, keys, "", fail)
    return meta, fail


def _load_cascade(folder: Path, large_options, trust: bool, trusted):
    """The Cascade in ``folder``, under the same rules as a shunt; ``large_options`` is keyed by stage name."""
    path = folder / "cascade.json"
    meta, fail = _read_meta(
        path,
        {
            "format": int,
            "datashunt_version": str,
            "params": dict,
            "classes": list,
            "stages": list,
            "calibration": dict,
            "thresholds": list,
        },
    )
    _older_params(meta["params"], Cascade._get_param_names())
    _check_keys(meta["params"], dict.fromkeys(set(Cascade._get_param_names()) - {"stages"}, object), "params.", fail)
    classes = meta["classes"]
    if not classes or not all(type(c) in (str, int, float) for c in classes) or len(set(classes)) != len(classes):
        fail(f"classes must be distinct strings or numbers, got {classes!r}")
    given = dict(large_options or {})
    stages = []
    for i, stage in enumerate(meta["stages"]):
        kind = stage.get("kind") if isinstance(stage, dict) else None
        if kind == "classifier":
            _check_keys(stage, {"name": str, "kind": str}, f"stages[{i}].", fail)
            model = _load_skops(folder / f"stage_{i}.skops", trusted)
            extra = set(np.asarray(model.classes_).tolist()) - set(classes)
            if extra:
                fail(f"stage {stage['name']!r} knows classes {sorted(extra, key=str)} the cascade does not")
        elif kind == "large":
            _check_keys(stage, {"name": str, "kind": str, "backend": str, "options": dict}, f"stages[{i}].", fail)
            model = _large(stage, given.pop(stage["name"], None), trust, path)
            _load_state(model, folder / f"stage_{i}_state.npz")
        else:
            fail(f"stages[{i}] must be a classifier or a large model, got kind {kind!r}")
        stages.append((stage["name"], model))
    if given:
        raise ConfigError(f"large_options names stages {sorted(given)} that this cascade has no large model for")
    thresholds = meta["thresholds"]
    check_thresholds(thresholds, len(stages) - 1, len(classes), fail)
    check_calibration(meta["calibration"], len(classes), fail)
    cascade = Cascade(stages, **meta["params"])
    try:
        cascade._check_stages()
        check_label_names(cascade.label_names, classes, fail)
        cascade.classes_ = np.asarray(classes)
        cascade.labels_ = label_words(classes, cascade.label_names)
        cascade.modality_ = cascade.modality
    except ConfigError as exc:
        raise ModelFileError(f"{path}: {exc}") from None
    cascade.stages_ = stages
    cascade.thresholds_ = [float(t) if not isinstance(t, list) else np.asarray(t, dtype=float) for t in thresholds]
    cascade.calibration_ = meta["calibration"]
    columns = [f"threshold_{s + 1}" for s in range(len(stages) - 1)] + ["accuracy", "cost", "last_rate"]
    cascade.sweep_ = _read_sweep(folder / "sweep.csv", columns)
    return cascade


def _load_skops(path, trusted, generator: bool = False):
    """A small model from a skops file: only trusted types, bounded size, settings that touch nothing outside."""
    check_archive(path)
    try:
        untrusted = sio.get_untrusted_types(file=path)
    except (zipfile.BadZipFile, KeyError, ValueError, TypeError, RecursionError, OSError) as exc:
        raise ModelFileError(f"{path} is corrupt: {exc}") from None
    allowed = TRUSTED_TYPES | set(trusted or ())
    refused = sorted(t for t in untrusted if t not in allowed)
    if refused:
        raise ModelFileError(
            f"{path} contains types that are not trusted: {refused}; nothing was loaded. "
            "If you know what they are and trust the file, pass them in trusted=[...]"
        )
    try:
        model = sio.load(path, trusted=untrusted)
    except Exception as exc:  # noqa: BLE001 - any failure to build a model from a file means the file is bad
        raise ModelFileError(f"{path} is corrupt: {type(exc).__name__}: {exc}") from None
    check_small(model, path, generator, trusted)
    return model


def _save_generator(shunt, folder: Path) -> Path:
    """A fitted ShuntGenerator as ``generator.json``, each backend stage's settings (and retrieved
    examples as arrays), each trainable stage in skops, and ``sweep.csv``."""
    check_is_fitted(shunt, "thresholds_")
    params = {k: v for k, v in shunt.get_params(deep=False).items() if k != "stages"}
    params["modality"] = shunt.modality_
    if callable(params["confidence"]) or not isinstance(params["metric"], str):
        raise ConfigError(
            "a generator shunt with a custom confidence function or metric cannot be saved; use named ones"
        )
    folder.mkdir(parents=True, exist_ok=True)
    stages = []
    for i, (name, model) in enumerate(shunt.stages_):
        if isinstance(model, Backend):
            stages.append(
                {"name": name, "kind": "backend", "backend": generator_name(model), "options": _large_options(model)}
            )
            _save_state(model, folder / f"stage_{i}_state.npz")
        else:
            sio.dump(model, folder / f"stage_{i}.skops")
            stages.append({"name": name, "kind": "trainable"})
    meta = {
        "format": FORMAT,
        "datashunt_version": __version__,
        "params": params,
        "stages": stages,
        "calibration": shunt.calibration_,
        "thresholds": [saved_threshold(t) for t in shunt.thresholds_],
    }
    try:
        (folder / "generator.json").write_text(json.dumps(meta, indent=2, default=_plain))
    except TypeError as exc:
        raise ConfigError(f"cannot save this generator shunt's settings as JSON: {exc}") from None
    if shunt.sweep_ is not None:
        shunt.sweep_.to_csv(folder / "sweep.csv", index=False)
    return folder


def _load_generator(folder: Path, stage_options, trust: bool, trusted):
    """The ShuntGenerator in ``folder``, under the same rules as a cascade."""
    path = folder / "generator.json"
    meta, fail = _read_meta(
        path,
        {
            "format": int,
            "datashunt_version": str,
            "params": dict,
            "stages": list,
            "calibration": dict,
            "thresholds": list,
        },
    )
    _check_keys(
        meta["params"], dict.fromkeys(set(ShuntGenerator._get_param_names()) - {"stages"}, object), "params.", fail
    )
    given = dict(stage_options or {})
    stages = []
    for i, stage in enumerate(meta["stages"]):
        kind = stage.get("kind") if isinstance(stage, dict) else None
        if kind == "trainable":
            _check_keys(stage, {"name": str, "kind": str}, f"stages[{i}].", fail)
            model = _load_skops(folder / f"stage_{i}.skops", trusted, generator=True)
        elif kind == "backend":
            _check_keys(stage, {"name": str, "kind": str, "backend": str, "options": dict}, f"stages[{i}].", fail)
            model = _large(stage, given.pop(stage["name"], None), trust, path, generating=True)
            if getattr(model, "shots", 0):  # retrieved examples: the training pairs, saved as arrays
                _load_state(model, folder / f"stage_{i}_state.npz")
        else:
            fail(f"stages[{i}] must be a backend or a trainable generator, got kind {kind!r}")
        stages.append((stage["name"], model))
    if given:
        raise ConfigError(f"stage options name stages {sorted(given)} that this generator has no backend for")
    thresholds = meta["thresholds"]
    check_thresholds(thresholds, len(stages) - 1, None, fail)
    check_calibration(meta["calibration"], None, fail)
    shunt = ShuntGenerator(stages, **meta["params"])
    try:
        shunt._check_stages()
    except ConfigError as exc:
        raise ModelFileError(f"{path}: {exc}") from None
    shunt.stages_, shunt.modality_ = stages, shunt.modality
    shunt.thresholds_ = [float(t) for t in thresholds]
    shunt.calibration_ = meta["calibration"]
    shunt.sweep_ = _read_sweep(folder / "sweep.csv", ["threshold_1", "accuracy", "cost", "last_rate"])
    return shunt


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
    options.pop("cache", None)  # where answers are cached is the loading machine's choice
    return options


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")
