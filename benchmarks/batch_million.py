"""The batch runner on 1,000,000 rows: ``datashunt predict`` (TF-IDF small stage, a replay large
stage) over a CSV of VADER movie sentences repeated to a million rows, timed end to end in a
subprocess, with its peak resident memory (``ru_maxrss`` of the child).

The replay holds the gold label of each distinct sentence (traffic that repeats
itself, as real traffic does); the TF-IDF model is trained on the demo's training split, δ
calibrated on its validation split for a budget of 30% sent on.

    .venv/bin/python benchmarks/batch_million.py --seed 0
"""

import argparse
import json
import platform
import resource
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rows", type=int, default=1_000_000)
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
        rng = np.random.default_rng(args.seed)
        rows = pd.DataFrame({"id": np.arange(args.rows), "text": frame["text"].to_numpy()[
            rng.integers(0, len(frame), args.rows)]})
        rows.to_csv(folder / "rows.csv", index=False)
        size = (folder / "rows.csv").stat().st_size
        (folder / "run.toml").write_text(f"""
[data]
train = "{folder / 'train.csv'}"
validation = "{folder / 'val.csv'}"
[small]
model = "tfidf"
[large]
backend = "replay"
table = "{folder / 'answers.csv'}"
[shunt]
policy = "max_large_rate"
max_large_rate = 0.3
random_state = {args.seed}
[output]
dir = "{folder / 'out'}"
""")
        datashunt = str(Path(sys.executable).parent / "datashunt")
        fitted = CliRunner().invoke(app, ["fit", str(folder / "run.toml")])  # in this process: the only child
        assert fitted.exit_code == 0, fitted.output                         # measured is the batch run
        start = time.perf_counter()
        run = subprocess.run([datashunt, "predict", str(folder / "run.toml"), "-i", str(folder / "rows.csv"), "-o",
                              str(folder / "labels.csv"), "--keep", "id", "--chunk-rows", str(args.chunk_rows)],
                             capture_output=True, text=True)
        seconds = time.perf_counter() - start
        peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        if run.returncode != 0:
            raise SystemExit(run.stdout + run.stderr)
        out = pd.read_csv(folder / "labels.csv", usecols=["id", "route", "label"])
        accuracy = float((out["label"].to_numpy() == frame.set_index("text").loc[rows["text"], "label"].to_numpy()).mean())
        results = {
            "command": command, "seed": args.seed, "machine": f"{platform.machine()}, 2 CPU cores, no GPU",
            "rows": args.rows, "input_bytes": size, "chunk_rows": args.chunk_rows, "seconds": seconds,
            "rows_per_s": args.rows / seconds, "peak_rss_mib": peak_kib / 1024,
            "output_rows": len(out), "ids_exactly_once": bool(out["id"].is_unique and len(out) == args.rows),
            "routes": out["route"].value_counts().to_dict(), "accuracy_vs_gold": accuracy,
            "note": "wall clock includes starting the process, loading the model and writing the CSV output",
        }
    (RESULTS / "batch_million.json").write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1), flush=True)


if __name__ == "__main__":
    main()
