"""Saving and loading a fitted model: a folder of data that is never run as code.

A saved :class:`~datashunt.ShuntClassifier`, :class:`~datashunt.Cascade` or
:class:`~datashunt.ShuntGenerator` is a folder in one format: ``model.json`` (its kind, settings,
classes, stages, thresholds and calibration; for a backend stage its registry name and settings,
never an API key, never the call cache), one file per stage named by its position
(``stage_{i}.skops``, a trainable model in skops' format, which builds only the types it is told
to trust; ``stage_{i}_state.npz``, what a backend learnt, as plain arrays), ``learnable.skops``
(a 2CD copy of the first stage) and ``sweep.csv``. Folders written before (``shunt.json``,
``cascade.json`` or ``generator.json``) still load, under the same checks. What :func:`load`
trusts, and where a loaded model's calls may go, is stated there.
"""

import io
import json
import math
import re
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import skops.io as sio
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.frozen import FrozenEstimator
from sklearn.utils.validation import check_is_fitted

from .. import __version__
from ..backends import backend_class, backend_name, make_large
from ..backends.base import Backend
from ..backends.generate import generator_class, generator_name, make_generator
from ..backends.prompt import Prompt, label_words
from ..core.params import check_params
from ..core.routes import LARGE, SMALL
from ..core.segments import UNITS
from ..estimators.cascade import Cascade
from ..estimators.deferral import AUTO, LEARNED, Combiner, Deferral, QualityDeferral
from ..estimators.generator import ShuntGenerator
from ..estimators.segments import Segments
from ..estimators.shunt import ShuntClassifier
from ..estimators.subtasks import Subtasks
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
)

FORMAT = 2
META_TYPES = {
    "format": int,
    "datashunt_version": str,
    "kind": str,
    "params": dict,
    "classes": (list, type(None)),
    "stages": list,
    "thresholds": list,
    "calibration": dict,
    "learned": dict,
}
#: The keys of a stage in ``model.json``: a trainable model (kept in skops) or a backend by registry name.
STAGE_TYPES = {
    "trainable": {"name": str, "kind": str},
    "backend": {"name": str, "kind": str, "backend": str, "options": dict},
}
REPORT_COLUMNS = ("class", "precision", "recall", "support", "excels")
#: A shunt's sweep before every face shared one: its columns by their names now.
OLDER_SWEEP = {"threshold": "threshold_1", "large_rate": "last_rate", "n_large": "n_last"}
#: Format 1: each kind's own JSON file, and the keys it held besides format, datashunt_version,
#: params and calibration (stage files as today, but a shunt's were small.skops and large_state.npz).
OLDER = {
    "shunt.json": (
        "ShuntClassifier",
        {
            "classes": list,
            "threshold": (int, float),
            "class_report": dict,
            "distillation": (dict, type(None)),
            "large": dict,
        },
    ),
    "cascade.json": ("Cascade", {"classes": list, "stages": list, "thresholds": list}),
    "generator.json": ("ShuntGenerator", {"stages": list, "thresholds": list}),
}
#: The exact types in datashunt's own small models that skops does not already trust (it trusts
#: scikit-learn, NumPy and SciPy types and plain containers). Reviewed: the torch models accept only
#: their parameters (checked against their constraints) and known fitted arrays; the MiniLM
#: architecture comes from the installed package, the file gives weights only.
#: The types a learned deferral's scorers are made of, beyond what skops trusts by default.
DEFERRAL_TYPES = frozenset(
    {
        "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        "sklearn._loss.loss.HalfBinomialLoss",
        "sklearn._loss.link.LogitLink",
        "sklearn._loss.link.Interval",
        "sklearn._loss._loss.CyHalfBinomialLoss",
        "sklearn._loss.loss.HalfMultinomialLoss",
        "sklearn._loss.link.MultinomialLogit",
        "sklearn._loss._loss.CyHalfMultinomialLoss",
    }
)
TRUSTED_TYPES = frozenset(
    {
        "datashunt.small.tfidf.CompactTfidfVectorizer",
        "datashunt.small.textcnn.TextCNNClassifier",
        "datashunt.small.lstm.LSTMClassifier",
        "datashunt.small.minilm.MiniLMClassifier",
        "datashunt.small.resnet.ResNet32Classifier",
        "datashunt.small.cnn.SmallCNNClassifier",
        "datashunt.small.captioner.CaptionerGenerator",
        "datashunt.small.memory.MemoryGenerator",
    }
)


def _build_shunt(cls, stages, params, thresholds, learned):
    (_, small), (_, large) = stages
    shunt = cls(small, large, **params)
    check_params(shunt, "shunt")
    shunt.small_, shunt.large_ = small, large
    shunt.threshold_ = float(thresholds[0])
    shunt.class_report_ = pd.DataFrame(learned["class_report"])
    shunt._fit_pruning_from_report()
    return shunt


def _build_staged(cls, stages, params, thresholds, learned):
    model = cls(stages, **params)
    model._check_stages()
    model.stages_ = stages
    model.thresholds_ = [np.asarray(t, dtype=float) if isinstance(t, list) else float(t) for t in thresholds]
    return model


class Kind(NamedTuple):
    """What :func:`save` writes and :func:`load` rebuilds for one kind of model."""

    cls: type
    build: Callable  #: (cls, stages, params, thresholds, learned) -> the model, its stages and thresholds set
    learned: dict  #: its further fitted state (``learned`` in model.json): keys and their types
    #: the (name, kind) of each stage when fixed: a shunt's, whose small model knows exactly the classes in
    #: order, and whose large_options are its one backend's (not keyed by stage name)
    layout: tuple | None = None
    per_class: bool = False  #: whether a threshold may be a list of one per class


KINDS = {
    "ShuntClassifier": Kind(
        ShuntClassifier,
        _build_shunt,
        {"class_report": dict, "distillation": (dict, type(None))},
        layout=((SMALL, "trainable"), (LARGE, "backend")),
    ),
    "Cascade": Kind(Cascade, _build_staged, {"distillation": (dict, type(None))}, per_class=True),
    "ShuntGenerator": Kind(ShuntGenerator, _build_staged, {"distillation": (dict, type(None))}),
}
#: What an earlier save may have left in a folder: removed before saving, so one format remains.
STALE = re.compile(
    r"(model|shunt|cascade|generator)\.json|small\.skops|large_state\.npz|(learnable|deferral|combiner)\.skops|"
    r"sweep\.csv|subtasks\.json|segments\.json"
)
STAGE_FILE = re.compile(r"stage_\d+(\.skops|_state\.npz)")


def save(model, folder) -> Path:
    """Write a fitted :class:`~datashunt.ShuntClassifier`, :class:`~datashunt.Cascade`,
    :class:`~datashunt.ShuntGenerator`, :class:`~datashunt.Subtasks` or :class:`~datashunt.Segments`
    to ``folder`` (created if needed), replacing an earlier save. Subtasks are saved one folder each
    (``subtask_0`` ...) beside ``subtasks.json``; Segments' shunt in ``shunt/`` beside ``segments.json``."""
    if type(model) is Subtasks:
        return _save_subtasks(model, Path(folder))
    if type(model) is Segments:
        return _save_segments(model, Path(folder))
    name = type(model).__name__
    kind = KINDS.get(name)
    if kind is None or kind.cls is not type(model):
        raise ConfigError(f"cannot save a {name}: save takes a ShuntClassifier, a Cascade or a ShuntGenerator")
    check_is_fitted(model, "calibration_")
    generating = model.task == "generate"
    params = {k: v for k, v in model.get_params(deep=False).items() if k not in ("small", "large", "stages")}
    params["modality"] = model.modality_  # what "auto" found, so a loaded model reads items the same way
    if callable(params["confidence"]) or not isinstance(params.get("metric", ""), str):
        raise ConfigError(f"a {name} with a custom confidence function or metric cannot be saved; use named ones")
    classes = None if generating else model.classes_.tolist()
    if classes is not None:
        check_label_names(params["label_names"], classes, _refuse_save)
    deferral = getattr(model, "deferral_", None)
    stages, files = [], {"learnable.skops": getattr(model, "learnable_", None)}
    combiner = getattr(model, "combiner_", None)
    files["deferral.skops"] = None if deferral is None else deferral.models_
    files["combiner.skops"] = None if combiner is None else [combiner.model_]
    for i, (stage, part) in enumerate(model.stages_):
        if isinstance(part, Backend):
            registry = generator_name(part) if generating else backend_name(part)
            stages.append({"name": stage, "kind": "backend", "backend": registry, "options": _large_options(part)})
            files[f"stage_{i}_state.npz"] = part.fitted_state()
        else:
            stages.append({"name": stage, "kind": "trainable"})
            files[f"stage_{i}.skops"] = part.estimator if isinstance(part, FrozenEstimator) else part
    meta = {
        "format": FORMAT,
        "datashunt_version": __version__,
        "kind": name,
        "params": params,
        "classes": classes,
        "stages": stages,
        "thresholds": [np.vectorize(saved_threshold, otypes=[float])(t).tolist() for t in model.thresholds_],
        "calibration": model.calibration_,
        "learned": {key: getattr(model, f"{key}_", None) for key in kind.learned},
    }
    try:
        text = json.dumps(meta, indent=2, default=_plain)
    except TypeError as exc:
        raise ConfigError(f"cannot save this {name}'s settings as JSON: {exc}") from None
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():
        if STALE.fullmatch(old.name) or STAGE_FILE.fullmatch(old.name):
            old.unlink()
    for file, content in files.items():
        if content is not None and file.endswith(".skops"):
            sio.dump(content, folder / file)
        elif content is not None:
            np.savez(folder / file, **content)
    (folder / "model.json").write_text(text)
    if model.sweep_ is not None:
        model.sweep_.to_csv(folder / "sweep.csv", index=False)
    return folder


def load(
    folder, *, large_options: dict | None = None, trust_saved_locations: bool = False, trusted: list[str] | None = None
):
    """Load a shunt, a :class:`~datashunt.Cascade` or a :class:`~datashunt.ShuntGenerator` saved by :func:`save`.

    A folder is data: nothing in it runs, and nothing in it decides where texts or keys go. A
    folder written by an earlier version (``shunt.json``, ``cascade.json`` or ``generator.json``)
    is read into the same structure and held to the same rules.

    - The skops files (``stage_{i}.skops``, ``learnable.skops``) may hold only the exact types
      listed in :data:`TRUSTED_TYPES` (what datashunt's own small models are made of); any other
      type is refused unless you name it in ``trusted`` after checking it.
    - ``model.json`` is checked key by key: a missing or unknown key, a value of the wrong type, a
      class list that differs from a classifier's (in a shunt, from the small model's, in the same
      order), label names that do not match the classes, a threshold no confidence can reach or a
      drift reference unlike what ``fit`` writes is refused. Stage files are found by position,
      never by a name from the file.
    - Every estimator reachable from a small model, through its parameters and its fitted
      attributes, is checked: no function, no file or cache folder, the default token pattern.
    - Every file is bounded by size before it is read (:data:`~datashunt.io.checks.MAX_META_BYTES`
      for JSON and CSV, :data:`~datashunt.io.checks.MAX_MODEL_BYTES` for skops and npz).
    - Where a backend's calls go (an endpoint ``base_url``, the environment variable holding the
      key ``api_key_env``, a replay ``table``, a GGUF file path) comes from ``large_options``; a
      saved location other than the backend's default is refused unless you pass
      ``trust_saved_locations=True``. The call cache is never taken from the folder.
    - What a backend may take of this machine (a context ``n_ctx``, ``n_threads``, a ``device``,
      ``batch_size``, ``max_concurrency``) comes from the folder only within
      :data:`~datashunt.io.checks.RESOURCE_LIMITS`; beyond them, or another device, only from
      ``large_options``.

    Parameters
    ----------
    folder : path
        The saved model.
    large_options : dict, optional
        Settings of the backends that replace the saved ones: their locations, ``cache``,
        time-outs, concurrency. For a shunt, the large backend's settings; for a cascade or a
        generator, each backend stage's settings under its name. A ``backend`` key, if given,
        must name the saved backend.
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
    if (folder / SUBTASKS_FILE).is_file():
        return _load_subtasks(folder, large_options, trust_saved_locations, trusted)
    if (folder / SEGMENTS_FILE).is_file():
        return _load_segments(folder, large_options, trust_saved_locations, trusted)
    meta, path, files = _read_meta(folder)
    if meta is None:
        raise ModelFileError(f"{folder} is not a saved shunt, cascade or generator (needs model.json)")
    fail, kind = _refuser(path), KINDS[meta["kind"]]
    _check_meta(meta, kind, fail)
    classes, generating, fixed = meta["classes"], kind.cls.task == "generate", kind.layout is not None

    def file(name):
        return folder / files.get(name, name)

    def trainable(name, what, exact):
        model = _load_skops(file(name), trusted, generating)
        if classes is not None:
            _check_classes(model, classes, what, exact, fail)
        return model

    given = {LARGE: large_options} if fixed else dict(large_options or {})  # a shunt's are its one backend's
    stages = []
    for i, stage in enumerate(meta["stages"]):
        name = stage["name"]
        if stage["kind"] == "trainable":
            model = trainable(f"stage_{i}.skops", f"{name} model" if fixed else f"stage {name!r}", fixed)
        else:
            scope = None if fixed else name
            model = _large(stage, given.pop(name, None), trust_saved_locations, path, generating, scope)
            _load_state(model, file(f"stage_{i}_state.npz"))
        stages.append((name, model))
    if given:
        raise ConfigError(f"large_options names stages {sorted(given)} that this {meta['kind']} has no backend for")
    copy = "distillation" in kind.learned and meta["learned"]["distillation"] is not None
    if copy != file("learnable.skops").is_file():  # distill sets both: one without the other was changed
        fail(
            "learnable.skops is missing though learned.distillation says the model was distilled"
            if copy
            else "learnable.skops is there though learned.distillation is null"
        )
    learnable = trainable("learnable.skops", "learnable model", True) if copy else None
    try:
        model = kind.build(kind.cls, stages, meta["params"], meta["thresholds"], meta["learned"])
        if classes is not None:
            check_label_names(model.label_names, classes, fail)
            model.classes_, model.labels_ = np.asarray(classes), label_words(classes, model.label_names)
        model.modality_ = model.modality
    except ConfigError as exc:
        raise ModelFileError(f"{path}: {exc}") from None
    if learnable is not None:
        model.learnable_, model.distillation_ = learnable, meta["learned"]["distillation"]
    scoring = meta["calibration"].get("scoring")
    chosen = scoring.get("used") if isinstance(scoring, dict) else None
    if meta["params"].get("confidence") == LEARNED or (meta["params"].get("confidence") == AUTO and chosen == LEARNED):
        model.deferral_ = QualityDeferral() if generating else Deferral()
        model.deferral_.models_ = _load_scorers(file("deferral.skops"), len(stages) - 1, trusted, regress=generating)
        if generating:
            model.deferral_.scales_ = _scales(meta["calibration"].get("deferral"), len(stages) - 1, fail)
    if (meta["calibration"].get("combination") or {}).get("used") is True:
        model.combiner_ = Combiner()
        model.combiner_.model_ = _load_scorers(file("combiner.skops"), 1, trusted, constant=False)[0]
    model.calibration_ = meta["calibration"]
    columns = [f"threshold_{s + 1}" for s in range(len(stages) - 1)] + ["accuracy", "cost", "last_rate"]
    model.sweep_ = _read_sweep(file("sweep.csv"), columns)
    if classes is not None and hasattr(stages[0][1], "n_features_in_"):
        model.n_features_in_ = stages[0][1].n_features_in_
    return model


SUBTASKS_FILE = "subtasks.json"  #: what a Subtasks folder holds beside one folder per subtask


def _save_subtasks(model, folder: Path) -> Path:
    check_is_fitted(model, "subtasks_")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / SEGMENTS_FILE).unlink(missing_ok=True)  # an earlier save of another kind
    for old in folder.iterdir():  # an earlier save with more subtasks
        if re.fullmatch(r"subtask_\d+", old.name) and old.is_dir() and int(old.name[8:]) >= len(model.subtasks_):
            shutil.rmtree(old)
    for i, (_, face) in enumerate(model.subtasks_):
        save(face, folder / f"subtask_{i}")
    meta = {
        "format": 2,
        "datashunt_version": __version__,
        "kind": "Subtasks",
        "subtasks": [name for name, _ in model.subtasks_],
        "classes": {name: face.classes_.tolist() for name, face in model.subtasks_},  # ties names to folders
        "context": bool(model.context),
    }
    (folder / SUBTASKS_FILE).write_text(json.dumps(meta, indent=2, default=_plain))
    return folder


def _load_subtasks(folder: Path, large_options, trust_saved_locations, trusted):
    """A :class:`~datashunt.Subtasks` folder: ``subtasks.json`` checked, each subtask loaded as any
    saved face (``large_options`` keyed by subtask name)."""
    path = folder / SUBTASKS_FILE
    meta, fail = _read_json(path), _refuser(path)
    older = isinstance(meta, dict) and meta.get("format") == 1  # saved before each subtask's classes were
    _check_format(meta, path, 1 if older else 2)
    names = meta.get("subtasks")
    keys = {"format", "datashunt_version", "kind", "subtasks", "context"} | (set() if older else {"classes"})
    if set(meta) != keys or meta["kind"] != "Subtasks":
        fail(f"the keys must be {sorted(keys)} (kind Subtasks), got {short(meta)}")
    if not (isinstance(names, list) and names and all(isinstance(n, str) and n for n in names)):
        fail(f"subtasks must be a non-empty list of names, got {short(names)}")
    if len(set(names)) != len(names) or type(meta["context"]) is not bool:
        fail(f"subtask names must be distinct and context true or false, got {short(names)}, {short(meta['context'])}")
    if not older and not (isinstance(meta["classes"], dict) and set(meta["classes"]) == set(names)):
        fail(f"classes must give each subtask's classes by name, got {short(meta['classes'])}")
    options = dict(large_options or {})
    unknown = sorted(set(options) - set(names))
    if unknown:
        raise ConfigError(f"large_options names subtasks {unknown} that this model has none of (it has {names})")
    faces = []
    for i, name in enumerate(names):
        face = load(
            folder / f"subtask_{i}",
            large_options=options.get(name),
            trust_saved_locations=trust_saved_locations,
            trusted=trusted,
        )
        if not isinstance(face, ShuntClassifier | Cascade):
            fail(f"subtask {name!r} is a {type(face).__name__}; a subtask is a ShuntClassifier or a Cascade")
        if not older and meta["classes"][name] != face.classes_.tolist():
            fail(f"subtask {name!r} does not have the classes its folder subtask_{i} holds")
        faces.append((name, face))
    model = Subtasks([(name, face) for name, face in faces], context=meta["context"])
    model.subtasks_ = faces
    return model


SEGMENTS_FILE = "segments.json"  #: what a Segments folder holds beside its shunt's folder
SEGMENTS_OPTIONS = ("unit", "together", "context", "max_cost")  #: Segments' arguments besides its shunt
SEGMENTS_KEYS = {"format", "datashunt_version", "kind", "alignment", *SEGMENTS_OPTIONS}


def _save_segments(model, folder: Path) -> Path:
    check_is_fitted(model, "shunt_")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / SUBTASKS_FILE).unlink(missing_ok=True)  # an earlier save of another kind
    save(model.shunt_, folder / "shunt")
    meta = {"format": 1, "datashunt_version": __version__, "kind": "Segments"}
    meta |= {k: getattr(model, k) for k in SEGMENTS_OPTIONS} | {"alignment": model.alignment_}
    (folder / SEGMENTS_FILE).write_text(json.dumps(meta, indent=2))
    return folder


def _load_segments(folder: Path, large_options, trust_saved_locations, trusted):
    """A :class:`~datashunt.Segments` folder: ``segments.json`` checked, its ShuntGenerator loaded from
    ``shunt/`` (``large_options``: the generator stages' settings by stage name)."""
    path = folder / SEGMENTS_FILE
    meta, fail = _read_json(path), _refuser(path)
    _check_format(meta, path, 1)
    meta = {"max_cost": None} | meta  # saved before budgets were held
    if set(meta) != SEGMENTS_KEYS or meta["kind"] != "Segments":
        fail(f"the keys must be {sorted(SEGMENTS_KEYS)} (kind Segments), got {short(meta)}")
    if meta["unit"] not in UNITS or type(meta["together"]) is not bool or type(meta["context"]) is not bool:
        fail(f"unit must be one of {UNITS} and together, context true or false, got {short(meta)}")
    if not isinstance(meta["alignment"], dict):
        fail(f"alignment must be a table, got {short(meta['alignment'])}")
    budget = meta["max_cost"]
    if budget is not None and (type(budget) not in (int, float) or not budget >= 0):
        fail(f"max_cost must be a non-negative number or null, got {short(budget)}")
    shunt = load(
        folder / "shunt", large_options=large_options, trust_saved_locations=trust_saved_locations, trusted=trusted
    )
    if shunt.task != "generate":
        fail(f"its shunt is a {type(shunt).__name__}; Segments route parts with a ShuntGenerator")
    model = Segments(shunt, **{k: meta[k] for k in SEGMENTS_OPTIONS})
    model.shunt_, model.alignment_ = shunt, meta["alignment"]
    return model


def saved_kind(folder) -> str | None:
    """The class name of the model saved in ``folder`` (``"Cascade"``), or None when it holds none."""
    if (Path(folder) / SUBTASKS_FILE).is_file():
        return "Subtasks"
    if (Path(folder) / SEGMENTS_FILE).is_file():
        return "Segments"
    meta, _, _ = _read_meta(Path(folder))
    return None if meta is None else meta["kind"]


def _read_meta(folder: Path):
    """The folder's ``model.json``, or its older JSON as format 2; the path it was read from; and
    where an older folder's stage files are (by the name format 2 gives them). None when the folder
    holds neither."""
    path = folder / "model.json"
    if path.is_file():
        meta, files = _read_json(path), {}
        _check_format(meta, path, FORMAT)
    else:
        path = next((folder / name for name in OLDER if (folder / name).is_file()), None)
        if path is None:
            return None, None, {}
        meta, files = _from_format_1(_read_json(path), path)
    if not isinstance(meta.get("kind"), str) or meta["kind"] not in KINDS:
        _refuser(path)(f"kind must be one of {sorted(KINDS)}, got {short(meta.get('kind'))}")
    return meta, path, files


def _from_format_1(meta, path: Path):
    """A JSON file written before format 2 as format 2, and the files its stages were saved in."""
    fail = _refuser(path)
    _check_format(meta, path, 1)
    kind, keys = OLDER[path.name]
    _check_keys(meta, {"format": int, "datashunt_version": str, "params": dict, "calibration": dict, **keys}, "", fail)
    new = {k: meta[k] for k in ("datashunt_version", "params", "calibration")} | {
        "format": FORMAT,
        "kind": kind,
        "classes": meta.get("classes"),
        "stages": meta.get("stages"),
        "thresholds": meta.get("thresholds"),
        "learned": dict.fromkeys(KINDS[kind].learned),
    }
    if path.name == "shunt.json":
        _check_keys(meta["large"], {"backend": str, "options": dict}, "large.", fail)
        new["stages"] = [{"name": SMALL, "kind": "trainable"}, {**meta["large"], "name": LARGE, "kind": "backend"}]
        new["thresholds"] = [meta["threshold"]]
        new["learned"] = {"class_report": meta["class_report"], "distillation": meta["distillation"]}
        return new, {"stage_0.skops": "small.skops", "stage_1_state.npz": "large_state.npz"}
    for i, stage in enumerate(new["stages"] if path.name == "cascade.json" else []):
        old = stage.get("kind") if isinstance(stage, dict) else None
        if old not in ("classifier", "large"):
            fail(f"stages[{i}] must be a classifier or a large model, got kind {short(old)}")
        stage["kind"] = "trainable" if old == "classifier" else "backend"
    return new, {}


def _check_format(meta, path, expected: int) -> None:
    if not isinstance(meta, dict):
        _refuser(path)(f"expected a JSON object, got {type(meta).__name__}")
    if type(meta.get("format")) is not int or meta["format"] != expected:
        raise ModelFileError(
            f"{path}: unsupported format {short(meta.get('format'))} (this version reads {FORMAT}, "
            "and 1 in the older files shunt.json, cascade.json and generator.json)"
        )


def _check_meta(meta, kind: Kind, fail) -> None:
    """Refuse a ``model.json`` whose keys or values are not exactly what :func:`save` writes for ``kind``."""
    _check_keys(meta, META_TYPES, "", fail)
    names = kind.cls._get_param_names()
    _older_params(meta["params"], names)
    if kind.cls is Cascade and meta["learned"] == {}:  # saved before cascades could be distilled
        meta["learned"]["distillation"] = None
    _check_keys(meta["params"], dict.fromkeys(set(names) - {"small", "large", "stages"}, object), "params.", fail)
    classes, stages = meta["classes"], meta["stages"]
    if kind.cls.task == "generate":
        if classes is not None:
            fail(f"classes must be null for a generator, got {short(classes)}")
    elif not classes or not all(isinstance(c, (str, int, float)) for c in classes) or len(set(classes)) != len(classes):
        fail(f"classes must be distinct strings or numbers, got {short(classes)}")
    for i, stage in enumerate(stages):
        found = stage.get("kind") if isinstance(stage, dict) else None
        if not isinstance(found, str) or found not in STAGE_TYPES:
            fail(f"stages[{i}] must be a trainable model or a backend, got kind {short(found)}")
        _check_keys(stage, STAGE_TYPES[found], f"stages[{i}].", fail)
    if kind.layout and tuple((s["name"], s["kind"]) for s in stages) != kind.layout:
        fail(f"a {meta['kind']} has the stages {list(kind.layout)} (name, kind), got {short(stages)}")
    n_classes = len(classes) if kind.per_class else None
    check_thresholds(meta["thresholds"], len(stages) - 1, n_classes, fail)
    check_calibration(meta["calibration"], n_classes, fail)
    _check_keys(meta["learned"], kind.learned, "learned.", fail)
    if "class_report" in kind.learned:
        _check_report(meta["learned"]["class_report"], classes, fail)


def _check_report(report, classes, fail) -> None:
    """Refuse a shunt's class report that does not describe ``classes`` with what ``fit`` writes."""
    _check_keys(report, dict.fromkeys(REPORT_COLUMNS, list), "learned.class_report.", fail)
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


def _check_classes(model, classes: list, what: str, exact: bool, fail) -> None:
    """Refuse a classifier that knows a class the model does not, or (``exact``: a shunt's small
    model and a 2CD copy) other classes or another order than the saved ones."""
    found = np.asarray(model.classes_).tolist()
    if exact and found != classes:
        fail(
            f"classes {classes} differ from the {what}'s {found}; the folder is inconsistent "
            "(a different order would swap labels)"
        )
    extra = sorted(set(found) - set(classes), key=str)
    if extra:
        fail(f"{what} knows classes {extra} the model does not")


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


def _large(saved: dict, given: dict | None, trust: bool, path, generating: bool, stage: str | None):
    """The backend of a saved stage (a generator with ``generating``): settings from the folder,
    locations only from the caller (or a trusted folder). ``stage`` names it in messages (None: a
    shunt's one large model)."""
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
    check_resources(large, saved_options, given, path, stage)
    return large


def _load_state(large, path: Path) -> None:
    """Give a backend its saved state (what it learnt in ``fit``: a few-shot head, retrieved
    examples): arrays only (no pickles), checked by the backend."""
    if type(large).fitted_state is Backend.fitted_state or getattr(large, "shots", None) == 0:
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
        sweep = pd.read_csv(io.BytesIO(data)).rename(columns=OLDER_SWEEP)
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise ModelFileError(f"{path} is corrupt: {exc}") from None
    missing = sorted(set(columns) - set(sweep.columns))
    if missing or not all(pd.api.types.is_numeric_dtype(sweep[c]) for c in columns):
        raise ModelFileError(f"{path} is not a threshold sweep (needs numeric columns {list(columns)})")
    return sweep


def _scales(learned, count: int, fail) -> list:
    """A learned quality estimator's error spreads (``calibration.deferral.scales``): ``count`` positive numbers."""
    scales = learned.get("scales") if isinstance(learned, dict) else None
    if not (
        isinstance(scales, list)
        and len(scales) == count
        and all(type(v) in (int, float) and 0 < v < math.inf for v in scales)
    ):
        fail(f"calibration.deferral.scales must be {count} positive number(s), got {short(scales)}")
    return [float(v) for v in scales]


def _load_scorers(path: Path, count: int, trusted, constant: bool = True, regress: bool = False) -> list:
    """A learned deferral's scorers (or a combiner) from ``path``: ``count`` gradient-boosted
    classifiers (or, with ``constant``, numbers; with ``regress``, regressors: a generator's
    quality estimators), of the types :data:`DEFERRAL_TYPES` only (or ``trusted``)."""
    if not path.is_file():
        raise ModelFileError(f"{path} is missing: the model routes by what was learned and saved there")
    check_archive(path)
    try:
        untrusted = sio.get_untrusted_types(file=path)
    except (zipfile.BadZipFile, KeyError, ValueError, TypeError, RecursionError, OSError) as exc:
        raise ModelFileError(f"{path} is corrupt: {exc}") from None
    refused = sorted(t for t in untrusted if t not in DEFERRAL_TYPES | set(trusted or ()))
    if refused:
        raise ModelFileError(f"{path} contains types that are not trusted: {refused}; nothing was loaded")
    try:
        models = sio.load(path, trusted=untrusted)
    except Exception as exc:  # noqa: BLE001 - any failure to build the scorers from a file means the file is bad
        raise ModelFileError(f"{path} is corrupt: {type(exc).__name__}: {exc}") from None
    if regress:
        kinds, what = (HistGradientBoostingRegressor,), "regressor"
    else:
        kinds, what = (
            (HistGradientBoostingClassifier, float) if constant else (HistGradientBoostingClassifier,),
            "classifier",
        )
    if not (isinstance(models, list) and len(models) == count and all(type(m) in kinds for m in models)):
        raise ModelFileError(f"{path} must hold {count} gradient-boosted {what}(s)")
    return models


def _load_skops(path, trusted, generator: bool = False):
    """A small model from a skops file: only trusted types, bounded size, settings that touch nothing outside."""
    if not path.is_file():
        raise ModelFileError(f"{path} is missing; the folder is incomplete")
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
    if isinstance(value, pd.DataFrame):  # a shunt's class report, by column
        return value.to_dict("list")
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")
