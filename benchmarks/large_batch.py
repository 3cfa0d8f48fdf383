"""Large calls in batches: items per second of the local Qwen2.5-Coder-1.5B on 2 CPU cores when
``batch_size`` prompts share one llama.cpp decode, against one at a time, on the same sentences.

Each setting scores the same movie sentences (VADER, a random sample) with no answer cache, after
one warm-up call; agreement is measured against one at a time (the largest difference in a
probability, and the share of items whose label changes), accuracy against the human labels.

    .venv/bin/python benchmarks/large_batch.py --seed 0
"""

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

from datashunt.backends.llama_cpp import LlamaCppModel
from datashunt.demos import DEMO_INSTRUCTION
from datashunt.io.datasets.vader import load_vader

RESULTS = Path(__file__).parent / "results" / "large_batch.json"
LABELS = ["negative", "positive"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--model", default="qwen2.5-coder-1.5b")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2, 4, 8])
    args = parser.parse_args()
    frame = load_vader("movies").sample(args.n, random_state=args.seed)
    texts, truth = frame["text"].tolist(), frame["label"].to_numpy()
    rows, base = [], None
    for size in args.batch_sizes:
        model = LlamaCppModel(args.model, prompt=DEMO_INSTRUCTION, cache=False, batch_size=size)
        model.predict_proba(["warm up"], LABELS)
        start = time.perf_counter()
        result = model.predict_proba(texts, LABELS)
        seconds = time.perf_counter() - start
        base = result.proba if base is None else base
        predicted = np.asarray(LABELS)[result.proba.argmax(axis=1)]
        rows.append(
            {
                "batch_size": size,
                "items_per_s": len(texts) / seconds,
                "seconds": seconds,
                "failed": int((~result.ok).sum()),
                "accuracy": float((predicted == truth).mean()),
                "max_proba_difference": float(np.abs(result.proba - base).max()),
                "label_changes": float((result.proba.argmax(axis=1) != base.argmax(axis=1)).mean()),
            }
        )
        print(rows[-1], file=sys.stderr)
    one = rows[0]["items_per_s"]
    for row in rows:
        row["speedup"] = row["items_per_s"] / one
    RESULTS.write_text(
        json.dumps(
            {
                "command": "python benchmarks/large_batch.py " + " ".join(sys.argv[1:]),
                "seed": args.seed,
                "n": args.n,
                "model": args.model,
                "machine": platform.machine(),
                "rows": rows,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
