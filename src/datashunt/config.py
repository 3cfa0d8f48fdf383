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

import tomllib
from pathlib import Path

from .exceptions import ConfigError

SECTIONS = {
    "data": {"train", "validation", "test", "text_column", "label_column", "encoding"},
    "small": {"model", "params"},
    "large": None,  # backend options, checked against the backend's constructor
    "shunt": "ShuntClassifier",  # the shunt's constructor arguments, less the two models
    "output": {"dir"},
}


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
    """Check sections and keys, and fill in defaults.

    Examples
    --------
    >>> check_config({"data": {"train": "t.csv"}, "large": {"backend": "openai", "model": "m"}})["data"]["text_column"]
    'text'
    """
    unknown = sorted(set(config) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"{source}: unknown section(s) {unknown}; allowed: {sorted(SECTIONS)}")
    for name, keys in SECTIONS.items():
        if keys == "ShuntClassifier":
            from .shunt import ShuntClassifier

            keys = set(ShuntClassifier._get_param_names()) - {"small", "large", "progress"}
        section = config.setdefault(name, {})
        if not isinstance(section, dict):
            raise ConfigError(f"{source}: [{name}] must be a table")
        if keys is not None and set(section) - keys:
            raise ConfigError(f"{source}: unknown key(s) {sorted(set(section) - keys)} in [{name}]; "
                              f"allowed: {sorted(keys)}")
    config["data"].setdefault("text_column", "text")
    config["data"].setdefault("label_column", "label")
    config["data"].setdefault("encoding", "utf-8")
    config["small"].setdefault("model", "tfidf")
    if "backend" not in config["large"]:
        raise ConfigError(f"{source}: [large] needs a 'backend' (llama_cpp, openai or replay)")
    config["output"].setdefault("dir", "reports/run")
    return config


def require_key(config: dict, section: str, key: str, why: str):
    """A value the command at hand cannot do without."""
    value = config.get(section, {}).get(key)
    if value is None:
        raise ConfigError(f"[{section}] {key} is required {why}")
    return value


def build_shunt(config: dict):
    """Constructor arguments from a checked config, assembled into a ShuntClassifier."""
    from .large import make_large
    from .shunt import ShuntClassifier
    from .small import make_small

    large_options = dict(config["large"])
    backend = large_options.pop("backend")
    small = make_small(config["small"]["model"], **config["small"].get("params", {}))
    return ShuntClassifier(small, make_large(backend, **large_options), **config["shunt"])
