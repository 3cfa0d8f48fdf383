"""Configuration files (TOML): the one path from a file to constructor arguments.

.. code-block:: toml

    [data]
    train = "train.csv"          # CSV, TSV, JSONL or Parquet; or a folder of images, one subfolder per class
    test = "test.csv"            # for `datashunt evaluate`
    text_column = "text"          # with modality = "image": the column of image paths
    label_column = "label"
    groups = "count"             # optional: report head / medium / tail classes by training count

    [small]
    model = "tfidf"              # tfidf | textcnn | lstm | minilm | resnet32 | cnn
    params = { C = 4.0 }

    [large]
    backend = "llama_cpp"        # llama_cpp | openai | replay | fewshot | clip; other keys: its options
    instruction = "Is the sentiment of this review positive or negative?"

    [shunt]
    policy = "match_last"        # match_last | max_last_rate | target_accuracy (older: match_large, max_large_rate)
    confidence_level = 0.9       # the guarantee's 1 - α; "none" for the point estimate
    tolerance = 0.01             # ε
    max_calibration_calls = 400  # large calls to certify δ; every validation label is used either way

    [output]
    dir = "reports/run"

TOML has no null: in ``[shunt]``, ``[cascade]`` and ``[generate]`` the string ``"none"`` stands
for Python's None.

Generation (``task = "generate"``, a :class:`~datashunt.ShuntGenerator`) reads a reference column
and lists generator stages, cheapest first (``backend``: ``llama_cpp``, ``openai``,
``transformers`` or the trainable ``captioner``, with its options), and takes the shunt's
arguments from ``[generate]``:

.. code-block:: toml

    task = "generate"

    [data]
    train = "pairs.csv"
    reference_column = "reference"

    [[stages]]
    name = "small"
    backend = "llama_cpp"
    model = "qwen2.5-coder-0.5b"
    instruction = "Translate into German. Answer with the translation only."
    shots = 2
    stop = ["\n"]

    [[stages]]
    name = "large"
    backend = "llama_cpp"
    model = "qwen2.5-coder-1.5b"
    instruction = "Translate into German. Answer with the translation only."

    [generate]
    metric = "chrf"

Documents made of sentences (:class:`~datashunt.Segments`): a generation config with a
``[segments]`` table routes every sentence of a document on its own, the large model asked only
the open ones (together, one call per document). References are whole documents:

.. code-block:: toml

    [segments]
    unit = "sentences"           # or "lines"
    together = true
    context = false              # true: show the large model the small side's neighbouring answers
    # max_cost = 0.0002          # the most the large model may cost per document over a run

Items with several labels (:class:`~datashunt.Subtasks`): a ``[[subtasks]]`` table per label
column, each its own shunt (``small``, ``params``, ``large`` backend options, ``shunt``
arguments), replaces ``[small]``, ``[large]`` and ``[shunt]``; the top-level ``context`` says
whether the large model is told what the small side settled:

.. code-block:: toml

    context = true

    [[subtasks]]
    name = "interface"           # its label column too, unless label_column says otherwise
    small = "tfidf"
    large = { backend = "llama_cpp", instruction = "What kind of user interface does it offer?" }
    shunt = { tolerance = 0.02 }

A cascade of any number of stages replaces ``[small]``, ``[large]`` and ``[shunt]`` with a list of
stages, cheapest first (each a small model by name, or a large backend with its options), and a
``[cascade]`` table of :class:`~datashunt.Cascade` arguments:

.. code-block:: toml

    [[stages]]
    name = "tfidf"
    small = "tfidf"              # with optional params = { ... }

    [[stages]]
    name = "api"
    backend = "openai"
    model = "gpt-4o-mini"

    [cascade]
    policy = "match_last"
    tolerance = 0.005
"""

import codecs
import importlib
import tomllib
from pathlib import Path

import pandas as pd

from ..backends import make_large
from ..backends.base import Backend
from ..backends.generate import generator_class, make_generator
from ..core.params import check_params
from ..estimators.cascade import Cascade
from ..estimators.generator import ShuntGenerator
from ..estimators.segments import Segments
from ..estimators.shunt import ShuntClassifier
from ..estimators.subtasks import Subtasks, check_names
from ..eval.compare import count_groups
from ..exceptions import ConfigError, DataError
from ..small import make_small
from .datasets.files import load_labeled, read_table

TASKS = ("classify", "generate")
SECTIONS = {
    "data": {
        "train": str,
        "validation": str,
        "test": str,
        "text_column": str,
        "label_column": str,
        "encoding": str,
        "groups": (str, dict),
        "reference_column": str,
    },
    "small": {"model": str, "params": dict},
    "large": None,  # backend options, checked against the backend's constructor and constraints
    "shunt": "ShuntClassifier",  # the shunt's constructor arguments, less the two models
    "output": {"dir": str},
    "stages": None,  # a list of stage tables, checked by check_stages
    "cascade": "Cascade",  # the cascade's constructor arguments, less the stages
    "generate": "ShuntGenerator",  # a generator shunt's constructor arguments, less the stages
    "segments": "Segments",  # documents cut into parts: Segments' arguments, less the shunt
    "subtasks": None,  # a list of subtask tables, checked by check_subtasks
    "serve": None,  # the service's limits and key digests, checked by datashunt.serve.settings.ServeSettings
}
ESTIMATORS = {
    "ShuntClassifier": ("..estimators.shunt", "ShuntClassifier"),
    "Cascade": ("..estimators.cascade", "Cascade"),
    "ShuntGenerator": ("..estimators.generator", "ShuntGenerator"),
    "Segments": ("..estimators.segments", "Segments"),
}
SUBTASK_KEYS = {"name": str, "label_column": str, "small": str, "params": dict, "large": dict, "shunt": dict}
_TYPE_NAMES = {str: "string", dict: "table", object: "value", (str, dict): "string or table"}


def load_config(path) -> dict:
    """Read and check a TOML config; unknown sections or keys are errors, never ignored."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        config = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return check_config(config, source=str(path))


def check_config(config: dict, source: str = "config") -> dict:
    """Check sections, keys and the types of plain values, and fill in defaults.

    The shunt's and the backends' own values are checked by :func:`build_shunt` and
    :func:`large_options` against their parameter constraints.

    Examples
    --------
    >>> check_config({"data": {"train": "t.csv"}, "large": {"backend": "openai", "model": "m"}})["data"]["text_column"]
    'text'
    >>> check_config({"output": {"dir": 5}, "large": {"backend": "openai"}})
    Traceback (most recent call last):
    ...
    datashunt.exceptions.ConfigError: config: [output] dir must be a string, got int (5)
    """
    task = config.pop("task", "classify")
    if task not in TASKS:
        raise ConfigError(f"{source}: task must be one of {list(TASKS)}, got {task!r}")
    context = config.pop("context", True)
    if "subtasks" in config:
        if task != "classify" or sorted({"small", "large", "shunt", "stages", "cascade"} & set(config)):
            raise ConfigError(
                f"{source}: [[subtasks]] (each its own shunt) replaces [small], [large], [shunt] and [[stages]], "
                'and labels items (task = "classify")'
            )
        check_subtasks(config["subtasks"], source)
        if not isinstance(context, bool):
            raise ConfigError(f"{source}: context must be true or false, got {context!r}")
    elif context is not True:
        raise ConfigError(f"{source}: context (telling the large model what the small side settled) needs [[subtasks]]")
    if "segments" in config and task != "generate":
        raise ConfigError(f'{source}: [segments] needs task = "generate"')
    unknown = sorted(set(config) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"{source}: unknown section(s) {unknown}; allowed: {sorted(SECTIONS)} and task")
    generating = task == "generate"
    if "generate" in config and not generating:
        raise ConfigError(f'{source}: [generate] needs task = "generate"')
    if generating:
        stray = sorted({"small", "large", "shunt", "cascade"} & set(config))
        if stray or "stages" not in config:
            raise ConfigError(
                f'{source}: task = "generate" takes [[stages]] of generators and [generate], '
                f"not {stray or 'a config without [[stages]]'}"
            )
        check_stages(config["stages"], source, generating=True)
    elif "stages" in config:
        mixed = sorted({"small", "large", "shunt"} & set(config))
        if mixed:
            raise ConfigError(
                f"{source}: a config has either [[stages]] (a cascade) or [small]/[large]/[shunt] "
                f"(a shunt), not both; found {mixed} beside [[stages]]"
            )
        check_stages(config["stages"], source)
    elif "cascade" in config:
        raise ConfigError(f"{source}: [cascade] needs a list of [[stages]]")
    for name, keys in SECTIONS.items():
        if name in ("stages", "subtasks") or (name == "segments" and name not in config):
            continue  # lists checked above; [segments], present or not, says what the model is
        if isinstance(keys, str):
            module, attr = ESTIMATORS[keys]
            cls = getattr(importlib.import_module(module, __package__), attr)
            keys = dict.fromkeys(
                set(cls._get_param_names()) - {"small", "large", "stages", "shunt", "progress"}, object
            )
        section = config.setdefault(name, {})
        if not isinstance(section, dict):
            raise ConfigError(f"{source}: [{name}] must be a table")
        if keys is None:
            continue
        if set(section) - set(keys):
            raise ConfigError(
                f"{source}: unknown key(s) {sorted(set(section) - set(keys))} in [{name}]; allowed: {sorted(keys)}"
            )
        for key, value in section.items():
            if not isinstance(value, keys[key]):
                raise ConfigError(
                    f"{source}: [{name}] {key} must be a {_TYPE_NAMES[keys[key]]}, "
                    f"got {type(value).__name__} ({value!r})"
                )
            if isinstance(SECTIONS[name], str) and value == "none":
                section[key] = None
    config["data"].setdefault("text_column", "text")
    config["data"].setdefault("label_column", "label")
    config["data"].setdefault("reference_column", "reference")
    config["data"].setdefault("encoding", "utf-8")
    try:
        if not codecs.lookup(config["data"]["encoding"])._is_text_encoding:
            raise LookupError
    except LookupError:
        raise ConfigError(
            f"{source}: [data] encoding {config['data']['encoding']!r} is not a known text "
            "encoding (e.g. 'utf-8', 'latin-1')"
        ) from None
    config["small"].setdefault("model", "tfidf")
    if not ({"stages", "subtasks"} & set(config)) and not isinstance(config["large"].get("backend"), str):
        raise ConfigError(f"{source}: [large] needs a 'backend' (llama_cpp, openai, replay, fewshot or clip)")
    config["output"].setdefault("dir", "reports/run")
    config["task"] = task
    if "subtasks" in config:
        config["context"] = context
    return config


def check_stages(stages, source: str = "config", generating: bool = False) -> None:
    """Each stage a table with a ``name`` and either ``small`` (+ ``params``) or a ``backend`` (+ its
    options); generator stages (``generating``) name a ``backend`` only.

    Examples
    --------
    >>> check_stages([{"name": "a", "small": "tfidf"}, {"name": "b"}])
    Traceback (most recent call last):
    ...
    datashunt.exceptions.ConfigError: config: [[stages]] 2 ('b') needs either small = "<model>" or backend = "<name>"
    """
    if not isinstance(stages, list) or len(stages) < 2 or not all(isinstance(s, dict) for s in stages):
        raise ConfigError(f"{source}: [[stages]] must list at least two stage tables")
    for i, stage in enumerate(stages, start=1):
        name = stage.get("name")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{source}: [[stages]] {i} needs a name")
        kinds = [k for k in ("small", "backend") if k in stage]
        if generating and kinds != ["backend"]:
            raise ConfigError(
                f"{source}: [[stages]] {i} ({name!r}) of a generation task needs backend = "
                '"<llama_cpp | openai | transformers | captioner>" and its options'
            )
        if len(kinds) != 1 or not isinstance(stage[kinds[0]], str):
            raise ConfigError(
                f'{source}: [[stages]] {i} ({name!r}) needs either small = "<model>" or backend = "<name>"'
            )
        if kinds == ["small"] and (
            set(stage) - {"name", "small", "params"} or not isinstance(stage.get("params", {}), dict)
        ):
            raise ConfigError(
                f"{source}: [[stages]] {i} ({name!r}): a small model takes only name, small and a "
                f"params table; got {sorted(stage)}"
            )


def check_subtasks(subtasks, source: str = "config") -> None:
    """Each subtask a table with a distinct ``name``, a ``large`` table naming its backend, and
    optionally ``label_column``, ``small`` (+ ``params``) and ``shunt`` (the shunt's arguments).

    Examples
    --------
    >>> check_subtasks([{"name": "use", "large": {"backend": "openai"}, "shunt": 0.5}])
    Traceback (most recent call last):
    ...
    datashunt.exceptions.ConfigError: config: [[subtasks]] 1 ('use'): shunt must be a table, got 0.5
    """
    if not isinstance(subtasks, list) or not subtasks or not all(isinstance(s, dict) for s in subtasks):
        raise ConfigError(f"{source}: [[subtasks]] must list at least one subtask table")
    names = []
    for i, subtask in enumerate(subtasks, start=1):
        name = subtask.get("name")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{source}: [[subtasks]] {i} needs a name")
        where = f"{source}: [[subtasks]] {i} ({name!r})"
        if set(subtask) - set(SUBTASK_KEYS):
            unknown = sorted(set(subtask) - set(SUBTASK_KEYS))
            raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(SUBTASK_KEYS)}")
        for key, value in subtask.items():
            if not isinstance(value, SUBTASK_KEYS[key]):
                raise ConfigError(f"{where}: {key} must be a {_TYPE_NAMES[SUBTASK_KEYS[key]]}, got {value!r}")
        if not isinstance(subtask.get("large", {}).get("backend"), str):
            raise ConfigError(f'{where} needs large = {{ backend = "<name>", ... }}')
        subtask.setdefault("label_column", name)
        subtask.setdefault("small", "tfidf")
        subtask["shunt"] = {k: None if v == "none" else v for k, v in subtask.get("shunt", {}).items()}
        allowed = set(ShuntClassifier._get_param_names()) - {"small", "large", "progress"}
        if set(subtask["shunt"]) - allowed:
            unknown = sorted(set(subtask["shunt"]) - allowed)
            raise ConfigError(f"{where}: unknown key(s) {unknown} in shunt; allowed: {sorted(allowed)}")
        names.append(name)
    try:
        check_names(names)
    except ConfigError as exc:
        raise ConfigError(f"{source}: [[subtasks]] {exc}") from None


def label_columns(config: dict) -> list[str] | None:
    """The label column of each subtask, or None for a config without [[subtasks]]."""
    return [s["label_column"] for s in config["subtasks"]] if "subtasks" in config else None


def stage_options(config: dict) -> dict:
    """The options of each backend stage of a cascade or generation config, by stage name
    (``backend`` included), checked."""
    make = make_generator if config.get("task") == "generate" else make_large
    options = {}
    for stage in config["stages"]:
        if "backend" in stage:
            options[stage["name"]] = {k: v for k, v in stage.items() if k != "name"}
            check_params(make(**options[stage["name"]]), f"[[stages]] {stage['name']!r}")
    return options


def require_key(config: dict, section: str, key: str, why: str):
    """A value the command at hand cannot do without."""
    value = config.get(section, {}).get(key)
    if value is None:
        raise ConfigError(f"[{section}] {key} is required {why}")
    return value


def load_data(config: dict, path, labelled: bool = True):
    """Items and labels (None unless ``labelled``) from a data file or image folder, read as the
    config's ``[data]`` says; image paths in a table when the shunt's ``modality`` is ``"image"``.
    For a generation task the "labels" are the references (a JSON list in a cell: several)."""
    data = config["data"]
    images = "image" in (config[s].get("modality") for s in ("shunt", "cascade", "generate"))
    if label_columns(config) is not None and labelled:  # one label column per subtask: a table of labels
        return _subtask_labels(config, path)
    target = data["reference_column"] if config.get("task") == "generate" else data["label_column"]
    return load_labeled(path, data["text_column"], target if labelled else None, data["encoding"], images=images)


def _subtask_labels(config: dict, path) -> tuple:
    data = config["data"]
    frame = read_table(path, data["encoding"], text_columns=[data["text_column"]])
    columns = {s["name"]: s["label_column"] for s in config["subtasks"]}
    missing = [c for c in [data["text_column"], *columns.values()] if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; columns present: {list(frame.columns)}")
    labels = pd.DataFrame({name: frame[column] for name, column in columns.items()})
    empty = labels.isna().any(axis=1)
    if empty.any():
        rows = labels.index[empty].tolist()[:5]
        raise DataError(f"{path}: {int(empty.sum())} rows lack a label of some subtask (first rows: {rows})")
    return frame[data["text_column"]], labels


def groups_of(config: dict) -> dict | None:
    """Class to group from ``[data] groups``: ``"count"`` (head / medium / tail thirds by training
    count, see :func:`~datashunt.eval.compare.count_groups`) or a table of group = [labels]."""
    groups = config["data"].get("groups")
    if groups is None:
        return None
    if groups == "count":
        _, y = load_data(config, require_key(config, "data", "train", "to group classes by training count"))
        return count_groups(y)
    if isinstance(groups, dict) and all(isinstance(v, list) for v in groups.values()):
        return {str(label): name for name, labels in groups.items() for label in labels}
    raise ConfigError(f'[data] groups must be "count" or a table of group = [labels], got {groups!r}')


def large_options(config: dict) -> dict:
    """The [large] section as backend options (``backend`` included), checked against the backend."""
    return _checked_large(config["large"], "[large]")


def _checked_large(options: dict, where: str) -> dict:
    options = dict(options)
    check_params(make_large(**options), where)
    return options


def model_options(config: dict) -> dict:
    """Where a saved model's calls go, from the config: the ``[large]`` options of a shunt, or each
    backend stage's options by name for a cascade or a generator (what :func:`datashunt.io.persist.load`
    takes as ``large_options``)."""
    if "subtasks" in config:
        return {s["name"]: _checked_large(s["large"], f"[[subtasks]] {s['name']!r} large") for s in config["subtasks"]}
    if "stages" not in config:
        return large_options(config)
    options = stage_options(config)
    if config.get("task") == "generate":  # a trainable generator (captioner, memory) is saved whole: no calls to direct
        options = {n: o for n, o in options.items() if issubclass(generator_class(o["backend"]), Backend)}
    return options


def build_shunt(config: dict):
    """Constructor arguments from a checked config, assembled into a ShuntClassifier (or, with
    ``[[stages]]``, a Cascade; with ``[[subtasks]]``, Subtasks; with ``task = "generate"``, a
    ShuntGenerator, in Segments with ``[segments]``) and checked."""
    if config.get("task") == "generate":
        shunt = ShuntGenerator(
            [(name, make_generator(**options)) for name, options in stage_options(config).items()], **config["generate"]
        )
        shunt._check_stages()
        return Segments(shunt, **config["segments"]) if "segments" in config else shunt
    if "subtasks" in config:
        large = model_options(config)
        faces = []
        for s in config["subtasks"]:
            face = ShuntClassifier(
                make_small(s["small"], **s.get("params", {})), make_large(**large[s["name"]]), **s["shunt"]
            )
            face.check_params()
            faces.append((s["name"], face))
        return Subtasks(faces, context=config["context"])
    if "stages" in config:
        large = stage_options(config)
        stages = [
            (
                s["name"],
                make_large(**large[s["name"]]) if s["name"] in large else make_small(s["small"], **s.get("params", {})),
            )
            for s in config["stages"]
        ]
        cascade = Cascade(stages, **config["cascade"])
        cascade._check_stages()
        return cascade
    small = make_small(config["small"]["model"], **config["small"].get("params", {}))
    shunt = ShuntClassifier(small, make_large(**large_options(config)), **config["shunt"])
    shunt.check_params()
    return shunt
