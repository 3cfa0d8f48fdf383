"""The Ray Data engine on a local Ray instance: the same output as the local engine."""

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from datashunt.cli import app

ray = pytest.importorskip("ray")
runner = CliRunner(env={"COLUMNS": "200"})


def _same_output(tmp_path, config: str, new: pd.DataFrame, ignore=()) -> pd.DataFrame:
    """Fit ``config``, predict ``new`` with the local engine and with Ray; both outputs must be equal
    (but for the columns in ``ignore``)."""
    (tmp_path / "run.toml").write_text(config)
    new.to_csv(tmp_path / "new.csv", index=False)
    fitted = runner.invoke(app, ["fit", str(tmp_path / "run.toml")])
    assert fitted.exit_code == 0, fitted.output
    args = ["predict", str(tmp_path / "run.toml"), "-i", str(tmp_path / "new.csv"), "--keep", "id"]
    args += ["--chunk-rows", "64"]
    local = runner.invoke(app, args + ["-o", str(tmp_path / "local.parquet")])
    assert local.exit_code == 0, local.output
    try:
        remote = runner.invoke(app, args + ["-o", str(tmp_path / "ray.parquet"), "--engine", "ray"])
    finally:
        ray.shutdown()
    assert remote.exit_code == 0, remote.output
    assert f"{len(new)} items" in remote.output
    a, b = pd.read_parquet(tmp_path / "local.parquet"), pd.read_parquet(tmp_path / "ray.parquet")
    assert list(a.columns) == list(b.columns) and a["id"].tolist() == list(range(len(new)))
    pd.testing.assert_frame_equal(a.drop(columns=list(ignore)), b.drop(columns=list(ignore)), check_dtype=False)
    return a


def _sentiment_files(tmp_path, texts, labels) -> pd.DataFrame:
    pd.DataFrame({"review": texts[:400], "sentiment": labels[:400]}).to_csv(tmp_path / "train.csv", index=False)
    pd.DataFrame({"id": texts, "prediction": labels}).to_csv(tmp_path / "answers.csv", index=False)
    new = pd.DataFrame({"id": np.arange(200), "review": texts[400:]})
    new.loc[7, "review"] = ""  # a bad row is flagged the same way by both
    return new


def test_ray_engine_gives_the_local_engines_output(tmp_path, sentiment):
    new = _sentiment_files(tmp_path, *sentiment)
    out = _same_output(
        tmp_path,
        f"""
[data]
train = "{tmp_path / "train.csv"}"
text_column = "review"
label_column = "sentiment"
[large]
backend = "replay"
table = "{tmp_path / "answers.csv"}"
price = {{ per_call = 0.001 }}
[shunt]
threshold = 0.9
[output]
dir = "{tmp_path / "out"}"
""",
        new,
    )
    assert (out["route"] == "large").any() and (out["route"] == "small").any() and out.loc[7, "route"] == "invalid"


def test_ray_engine_runs_a_cascade_like_the_local_engine(tmp_path, sentiment):
    new = _sentiment_files(tmp_path, *sentiment)
    out = _same_output(
        tmp_path,
        f"""
[data]
train = "{tmp_path / "train.csv"}"
text_column = "review"
label_column = "sentiment"
[[stages]]
name = "tfidf"
small = "tfidf"
[[stages]]
name = "prior"
small = "tfidf"
params = {{ C = 0.01 }}
[[stages]]
name = "recorded"
backend = "replay"
table = "{tmp_path / "answers.csv"}"
price = {{ per_call = 0.001 }}
[cascade]
thresholds = [0.9, 0.99]
[output]
dir = "{tmp_path / "out"}"
""",
        new,
    )
    assert {"tfidf", "recorded"} <= set(out["route"]) and out.loc[7, "route"] == "invalid"
    assert (out.loc[out["route"] == "recorded", "cost"] == 0.001).all()


def test_ray_engine_runs_a_generator_like_the_local_engine(tmp_path):
    from test_cli import GENERATE_PAIRS, generation_config
    from test_llama_cpp import installed_tiny

    tiny = installed_tiny()
    if tiny is None:
        pytest.skip("run `datashunt setup` first (installs the tiny test model)")
    pd.DataFrame(GENERATE_PAIRS * 3, columns=["english", "german"]).to_csv(tmp_path / "pairs.csv", index=False)
    new = pd.DataFrame({"id": np.arange(len(GENERATE_PAIRS)), "english": [e for e, _ in GENERATE_PAIRS]})
    out = _same_output(
        tmp_path,
        generation_config(tmp_path, tiny, "thresholds = [0.5]"),
        new,
        ignore=["cached"],  # the second run finds the first one's answers in the shared cache
    )
    assert out["text"].notna().all() and set(out["route"]) <= {"small", "large"}


def test_ray_engine_refuses_what_it_cannot_do(tmp_path):
    (tmp_path / "run.toml").write_text('[large]\nbackend = "replay"\ntable = "t.csv"\n')
    (tmp_path / "in.csv").write_text("text\nfine\n")
    args = ["predict", str(tmp_path / "run.toml"), "-i", str(tmp_path / "in.csv"), "--engine", "ray"]
    budget = runner.invoke(app, args + ["-o", str(tmp_path / "o.parquet"), "--max-cost", "1"])
    assert budget.exit_code == 2 and "--max-cost works with the local engine" in budget.output
    engine = runner.invoke(
        app, ["predict", str(tmp_path / "run.toml"), "-i", "x.csv", "-o", "o.csv", "--engine", "spark"]
    )
    assert engine.exit_code == 2 and "--engine must be local or ray, got 'spark'" in engine.output


def test_ray_engine_writes_parquet_only(tmp_path):
    from datashunt.exceptions import ConfigError
    from datashunt.jobs.ray_engine import run_ray

    with pytest.raises(ConfigError, match="the Ray engine writes Parquet: give an output ending in .parquet"):
        run_ray(tmp_path, {}, tmp_path / "in.csv", tmp_path / "out.csv", column="text", item_name="text")
