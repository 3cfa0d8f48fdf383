"""How often a calibrated δ keeps Data Shunt at or above the LLM on unseen items: by ``match_z``,
and with a guarantee (``confidence_level``, ``tolerance``: Learn then Test).

Uses only the core benchmark's validation split (VADER movies, same seed): the small model is
trained on the training split, the LLM answers every validation sentence (from the call cache
after the core benchmark), then the validation set is cut in two halves many times over. δ is
calibrated with ``match_large`` on one half (as the demo does on its 500 sentences) and judged on
the other: the gap between the shunt's accuracy and the LLM's, and the share of items sent to
the LLM. The test split is not touched.

    .venv/bin/python benchmarks/calibration.py --seed 0 --small tfidf minilm
"""

import argparse
import json
import sys

import numpy as np
from core import RESULTS, split, split_arguments

from datashunt import ShuntClassifier
from datashunt.backends.llama_cpp import LlamaCppModel
from datashunt.core.calibration import choose, sweep
from datashunt.core.guarantee import guaranteed_match
from datashunt.demos import DEMO_INSTRUCTION
from datashunt.small import make_small


def validation_outcomes(small, model, seed, n_val, n_test):
    """Per validation item: the small model's confidence and whether each model was right."""
    train, val, _ = split(seed, n_val, n_test)
    shunt = ShuntClassifier(
        make_small(small, random_state=seed),
        LlamaCppModel(model, prompt=DEMO_INSTRUCTION),
        threshold=np.inf,
        random_state=seed,
        progress=True,
    )
    shunt.fit(train["text"], train["label"], X_val=val["text"], y_val=val["label"])
    routes = shunt.route(val["text"])  # δ = +inf: every item is answered by the LLM
    y = val["label"].to_numpy(dtype=object)
    small_proba = shunt.small_.predict_proba(val["text"])
    small_right = shunt.classes_[small_proba.argmax(axis=1)] == y
    return routes["confidence_small"].to_numpy(), small_right, routes["label"].to_numpy() == y


GUARANTEES = [(0.9, 0.0), (0.9, 0.005), (0.9, 0.01), (0.8, 0.005)]  # (confidence_level, tolerance)
WITHIN = 0.01  # the tolerance at which the heuristics are compared with the guarantee (guarantee.json)


def split_half(confidence, small_right, large_right, z_values, repeats, seed):
    rng = np.random.default_rng(seed)
    n = len(confidence)
    methods = (
        [("match_z", z, 0.0) for z in z_values]
        + [("guaranteed", level, eps) for level, eps in GUARANTEES]
        + [("match_z", z, WITHIN) for z in (0.0, 2.0)]
    )  # the same promise as the guarantee's, heuristically
    out = {m: {"gap": [], "large_rate": []} for m in methods}
    for _ in range(repeats):
        order = rng.permutation(n)
        fit, judge = order[: n // 2], order[n // 2 :]
        table = sweep(confidence[fit], np.column_stack([small_right[fit], large_right[fit]]))
        for method in methods:
            kind, value, eps = method
            if kind == "match_z":
                delta = choose(table, "match_last", match_z=value, tolerance=eps).threshold
            else:
                delta = guaranteed_match(
                    confidence[fit], small_right[fit], large_right[fit], epsilon=eps, alpha=1 - value
                ).threshold
            to_large = confidence[judge] < delta
            shunt_right = np.where(to_large, large_right[judge], small_right[judge])
            out[method]["gap"].append(shunt_right.mean() - large_right[judge].mean())
            out[method]["large_rate"].append(to_large.mean())
    rows = []
    for (kind, value, eps), r in out.items():
        gap = np.array(r["gap"])
        row = (
            {"method": kind, "match_z": value}
            if kind == "match_z" and not eps
            else {
                "method": kind,
                "confidence_level" if kind == "guaranteed" else "match_z": value,
                "tolerance": eps,
                "share_below_tolerance": float(np.mean(gap < -eps - 1e-12)),
            }
        )
        rows.append(
            row
            | {
                "mean_gap": float(gap.mean()),
                "share_below_llm": float(np.mean(gap < 0)),
                "gap_5th_percentile": float(np.percentile(gap, 5)),
                "mean_large_rate": float(np.mean(r["large_rate"])),
            }
        )
    return rows


def main():
    parser = split_arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--small", nargs="+", default=["tfidf", "minilm"])
    parser.add_argument("--z", nargs="+", type=float, default=[0.0, 0.5, 1.0, 1.5, 2.0])
    parser.add_argument("--repeats", type=int, default=500)
    args = parser.parse_args()
    command = "python benchmarks/calibration.py " + " ".join(sys.argv[1:])
    result = {
        "command": command,
        "seed": args.seed,
        "repeats": args.repeats,
        "half": args.n_validation // 2,
        "small": {},
    }
    for small in args.small:
        outcomes = validation_outcomes(small, args.model, args.seed, args.n_validation, args.n_test)
        result["small"][small] = split_half(*outcomes, args.z, args.repeats, args.seed)
        for row in result["small"][small]:
            print(small, row, flush=True)
    (RESULTS / "calibration.json").write_text(json.dumps(result, indent=1))
    record_in_guarantee(result)


def record_in_guarantee(result):
    """The promise "accuracy >= the LLM's - 0.01" on the movie halves, per method, into guarantee.json."""
    path = RESULTS / "guarantee.json"
    if not path.is_file():
        return
    names = {0.0: "point_estimate", 2.0: "match_z2"}
    real = []
    for small, rows in result["small"].items():
        for r in rows:
            if r.get("tolerance") != WITHIN or (r["method"] == "guaranteed" and r["confidence_level"] != 0.9):
                continue
            real.append(
                {
                    "small": small,
                    "method": names.get(r.get("match_z"), r["method"]),
                    "alpha": 0.1 if r["method"] == "guaranteed" else None,
                    "epsilon": WITHIN,
                    "violation_rate": r["share_below_tolerance"],
                    "large_share": r["mean_large_rate"],
                }
            )
    guarantee = json.loads(path.read_text())
    guarantee["movies_split_half"] = {
        "command": result["command"],
        "halves": result["repeats"],
        "half": result["half"],
        "records": real,
    }
    path.write_text(json.dumps(guarantee, indent=2) + "\n")


if __name__ == "__main__":
    main()
