"""The main job as a new user meets it: ``datashunt demo`` with an empty call cache, timed end to end.

A fresh cache folder is made beside the installed models and data (they are linked in, not
copied), so every LLM answer is computed during the run: the calibration calls and the test
set. Run it alone on the machine; the time is the wall clock of the whole command, training
included.

    .venv/bin/python benchmarks/demo.py --seed 0
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from datashunt.backends.cache import default_cache_dir

RESULTS = Path(__file__).resolve().parent / "results" / "demo.json"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("reports/demo"))
    parser.add_argument("demo_args", nargs="*", help="Further options for datashunt demo (after --).")
    args = parser.parse_args()
    installed = default_cache_dir()
    with tempfile.TemporaryDirectory() as fresh:
        for name in ("models", "data"):
            os.symlink(installed / name, Path(fresh) / name)
        command = [
            str(Path(sys.executable).with_name("datashunt")),
            "demo",
            "--seed",
            str(args.seed),
            "--out",
            str(args.out),
            *args.demo_args,
        ]
        start = time.perf_counter()
        subprocess.run(command, check=True, env={**os.environ, "DATASHUNT_CACHE_DIR": fresh})
        seconds = time.perf_counter() - start
    report = json.loads((args.out / "report.json").read_text())
    rows = {row["system"]: row for row in report["summary"]}
    calibration = report["calibration"]
    result = {
        "command": "python benchmarks/demo.py " + " ".join(sys.argv[1:]),
        "seed": args.seed,
        "demo": " ".join(["datashunt", *command[1:]]),
        "seconds": round(seconds, 1),
        "calibration_large_calls": calibration["large_calls"]["asked"],
        "n_validation": calibration["n_validation"],
        "n_test": report["info"]["n_test"],
        "small": {"accuracy": rows["small only"]["accuracy"]},
        "large": {"accuracy": rows["large only"]["accuracy"]},
        "ds": {"accuracy": rows["data shunt"]["accuracy"], "large_share": rows["data shunt"]["large_rate"]},
        "threshold": report["thresholds"][0],
        "promise": calibration["goal"],
        "promise_certified": calibration["goal_met"],
    }
    result["bar"] = "ds.accuracy >= large.accuracy - 0.01, ds.large_share <= 0.50, seconds <= 600"
    result["bar_met"] = bool(
        result["ds"]["accuracy"] >= result["large"]["accuracy"] - 0.01
        and result["ds"]["large_share"] <= 0.5
        and result["seconds"] <= 600
    )
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
