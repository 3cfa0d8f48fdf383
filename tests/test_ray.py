"""The Ray Data engine on a local Ray instance: the same output as the local engine."""

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from datashunt.cli import app

ray = pytest.importorskip("ray")
runner = CliRunner(env={"COLUMNS": "200"})


def test_ray_engine_gives_the_local_engines_output(tmp_path, sentiment):
    texts, labels = sentiment
    pd.DataFrame({"review": texts[:400], "sentiment": labels[:400]}).to_csv(tmp_path / "train.csv", index=False)
    new = pd.DataFrame({"id": np.arange(200), "review": texts[400:]})
    new.loc[7, "review"] = ""  # a bad row is flagged the same way by both
    new.to_csv(tmp_path / "new.csv", index=False)
    pd.DataFrame({"id": texts, "prediction": labels}).to_csv(tmp_path / "answers.csv", index=False)
    (tmp_path / "run.toml").write_text(f"""
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
""")
    assert runner.invoke(app, ["fit", str(tmp_path / "run.toml")]).exit_code == 0
    args = [
        "predict",
        str(tmp_path / "run.toml"),
        "-i",
        str(tmp_path / "new.csv"),
        "--keep",
        "id",
        "--chunk-rows",
        "64",
    ]
    local = runner.invoke(app, args + ["-o", str(tmp_path / "local.parquet")])
    assert local.exit_code == 0, local.output
    try:
        remote = runner.invoke(app, args + ["-o", str(tmp_path / "ray.parquet"), "--engine", "ray"])
    finally:
        ray.shutdown()
    assert remote.exit_code == 0, remote.output
    assert "200 items" in remote.output
    a, b = pd.read_parquet(tmp_path / "local.parquet"), pd.read_parquet(tmp_path / "ray.parquet")
    assert list(a.columns) == list(b.columns) and a["id"].tolist() == list(range(200))
    pd.testing.assert_frame_equal(a, b, check_dtype=False)
    assert (a["route"] == "large").any() and (a["route"] == "small").any() and a.loc[7, "route"] == "invalid"


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
