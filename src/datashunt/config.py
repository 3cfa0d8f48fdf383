"""Configuration files (TOML): the one path from a file to constructor arguments.

.. code-block:: toml

    [data]
    train = "train.csv"          # CSV, TSV, JSONL or Parquet
    test = "test.csv"            # for `datashunt evaluate`
    text_column = "text"
    label_column = "label"

    [small]
    model = "tfidf"              # tfidf | textcnn | lstm | minilm
    params = { C = 4.0 }

    [large]
    backend = "llama_cpp"        # llama_cpp | openai | replay; other keys are the backend's options
    instruction = "Is the sentiment of this review positive or negative?"

    [shunt]
    policy = "match_large"       # match_large | max_large_rate | target_accuracy

    [output]
    dir = "reports/run"
"""

import codecs
import tomllib
from pathlib import Path

from .exceptions import ConfigError

SECTIONS = {
    "data": {"train": str, "validation": str, "test": str, "text_column": str, "label_column": str, "encoding": str},
    "small": {"model": str, "params": dict},
    "large": None,  # backend options, checked against the backend's constructor and constraints
    "shunt": "ShuntClassifier",  # the shunt's constructor arguments, less the two models
    "output": {"dir": str},
}
_TYPE_NAMES = {str: "string", dict: "table", object: "value"}


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
    unknown = sorted(set(config) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"{source}: unknown section(s) {unknown}; allowed: {sorted(SECTIONS)}")
    for name, keys in SECTIONS.items():
        if keys == "ShuntClassifier":
            from .shunt import ShuntClassifier

            keys = dict.fromkeys(set(ShuntClassifier._get_param_names()) - {"small", "large", "progress"}, object)
        section = config.setdefault(name, {})
        if not isinstance(section, dict):
            raise ConfigError(f"{source}: [{name}] must be a table")
        if keys is None:
            continue
        if set(section) - set(keys):
            raise ConfigError(f"{source}: unknown key(s) {sorted(set(section) - set(keys))} in [{name}]; "
                              f"allowed: {sorted(keys)}")
        for key, value in section.items():
            if not isinstance(value, keys[key]):
                raise ConfigError(f"{source}: [{name}] {key} must be a {_TYPE_NAMES[keys[key]]}, "
                                  f"got {type(value).__name__} ({value!r})")
    config["data"].setdefault("text_column", "text")
    config["data"].setdefault("label_column", "label")
    config["data"].setdefault("encoding", "utf-8")
    try:
        if not codecs.lookup(config["data"]["encoding"])._is_text_encoding:
            raise LookupError
    except LookupError:
        raise ConfigError(f"{source}: [data] encoding {config['data']['encoding']!r} is not a known text "
                          "encoding (e.g. 'utf-8', 'latin-1')") from None
    config["small"].setdefault("model", "tfidf")
    if not isinstance(config["large"].get("backend"), str):
        raise ConfigError(f"{source}: [large] needs a 'backend' (llama_cpp, openai or replay)")
    config["output"].setdefault("dir", "reports/run")
    return config


def require_key(config: dict, section: str, key: str, why: str):
    """A value the command at hand cannot do without."""
    value = config.get(section, {}).get(key)
    if value is None:
        raise ConfigError(f"[{section}] {key} is required {why}")
    return value


def large_options(config: dict) -> dict:
    """The [large] section as backend options (``backend`` included), checked against the backend."""
    from .large import make_large
    from .params import check_params

    options = dict(config["large"])
    check_params(make_large(**options), "[large]")
    return options


def build_shunt(config: dict):
    """Constructor arguments from a checked config, assembled into a ShuntClassifier and checked."""
    from .large import make_large
    from .shunt import ShuntClassifier
    from .small import make_small

    small = make_small(config["small"]["model"], **config["small"].get("params", {}))
    shunt = ShuntClassifier(small, make_large(**large_options(config)), **config["shunt"])
    shunt.check_params()
    return shunt
