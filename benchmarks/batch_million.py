"""The batch runner on 1,000,000 rows: ``datashunt predict`` (TF-IDF small stage, a replay large
stage) over a CSV of VADER movie sentences repeated to a million rows, timed end to end in a
subprocess, with its peak resident memory (``VmHWM`` of that process, read every 0.1 s).

The replay holds the gold label of each distinct sentence (traffic that repeats
itself, as real traffic does); the TF-IDF model is trained on the demo's training split, δ
calibrated on its validation split for a budget of 30% sent on.

    .venv/bin/python benchmarks/batch_million.py --seed 0
"""

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from core import RESULTS, split
from typer.testing import CliRunner

from datashunt.cli import app
from datashunt.io.datasets.vader import load_vader


def _vm_hwm_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return 0  # the process has just ended


def batch_run(folder: Path, frame: pd.DataFrame, n: int, args) -> dict:
    """``datashunt predict`` over ``n`` rows drawn from ``frame``, in a subprocess: time and peak memory."""
    rng = np.random.default_rng(args.seed)
    rows = pd.DataFrame({"id": np.arange(n), "text": frame["text"].to_numpy()[rng.integers(0, len(frame), n)]})
    rows.to_csv(folder / "rows.csv", index=False)
    size = (folder / "rows.csv").stat().st_size
    datashunt = str(Path(sys.executable).parent / "datashunt")
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as log:
        run = subprocess.Popen(
            [
                datashunt,
                "predict",
                str(folder / "run.toml"),
                "-i",
                str(folder / "rows.csv"),
                "-o",
                str(folder / "labels.csv"),
                "--keep",
                "id",
                "--chunk-rows",
                str(args.chunk_rows),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        peak_kib = 0
        while run.poll() is None:  # VmHWM: the peak of the program itself (ru_maxrss would count the
            peak_kib = max(peak_kib, _vm_hwm_kib(run.pid))  # pages of this process it was forked from)
            time.sleep(0.1)
        seconds = time.perf_counter() - start
        if run.returncode != 0:
            log.seek(0)
            raise SystemExit(log.read())
    out = pd.read_csv(folder / "labels.csv", usecols=["id", "route", "label"])
    gold = frame.set_index("text").loc[rows["text"], "label"].to_numpy()
    result = {
        "rows": n,
        "input_bytes": size,
        "chunk_rows": args.chunk_rows,
        "seconds": seconds,
        "rows_per_s": n / seconds,
        "peak_rss_mib": peak_kib / 1024,
        "ids_exactly_once": bool(out["id"].is_unique and len(out) == n and out["id"].tolist() == list(range(n))),
        "routes": out["route"].value_counts().to_dict(),
        "accuracy_vs_gold": float((out["label"].to_numpy() == gold).mean()),
    }
    print(json.dumps(result), flush=True)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--chunk-rows", type=int, default=10_000)
    args = parser.parse_args()
    command = "python benchmarks/batch_million.py " + " ".join(sys.argv[1:])
    print(command, flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        train, val, _ = split(args.seed, 500, 300)
        train.to_csv(folder / "train.csv", index=False)
        val.to_csv(folder / "val.csv", index=False)
        frame = load_vader("movies").drop_duplicates("text")
        pd.DataFrame({"id": frame["text"], "prediction": frame["label"]}).to_csv(folder / "answers.csv", index=False)
        (folder / "run.toml").write_text(f"""
[data]
train = "{folder / "train.csv"}"
validation = "{folder / "val.csv"}"
[small]
model = "tfidf"
[large]
backend = "replay"
table = "{folder / "answers.csv"}"
[shunt]
policy = "max_large_rate"
max_large_rate = 0.3
random_state = {args.seed}
[output]
dir = "{folder / "out"}"
""")
        fitted = CliRunner().invoke(app, ["fit", str(folder / "run.toml")])  # in this process: the only
        assert fitted.exit_code == 0, fitted.output  # children measured are the runs
        runs = [batch_run(folder, frame, rows, args) for rows in args.rows]
    results = {
        "command": command,
        "seed": args.seed,
        "machine": f"{platform.machine()}, 2 CPU cores, no GPU",
        "runs": runs,
        "note": "wall clock includes starting the process, loading the model and writing the "
        "CSV output; accuracy is against the gold labels of sentences partly seen in "
        "training, a check that rows kept their labels, not a quality figure",
    }
    (RESULTS / "batch_million.json").write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1), flush=True)


if __name__ == "__main__":
    main()
