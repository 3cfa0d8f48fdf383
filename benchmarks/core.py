"""Data Shunt on VADER movie sentences with the local Qwen2.5-Coder-1.5B: the core benchmark.

For each small model: small-only, large-only and Data Shunt (δ from the default ``match_large``
policy, certified on the validation split: accuracy at least the LLM's minus 0.01 with probability
0.9; also with the paper's point-estimate rule, ``match_z=0``, and with the guarded point estimate
``match_z=2`` that was the default before) on a held-out test split that nothing is tuned on; the δ
sweep on validation and, for the figure only, on test. Also the routing overhead of the small
path and the seconds per large call with and without reuse of the prompt's shared prefix.

    .venv/bin/python benchmarks/core.py --seed 0 --small tfidf textcnn lstm minilm

``--cv 5`` cross-fits instead: the small model is trained on the training and validation splits
together, and δ is certified on every one of those labels (each scored by a copy trained without
it), the LLM asked about all of them. Run for some small models only, the file keeps the others'
entries; each entry names the command that made it.
"""

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import train_test_split

from datashunt import ShuntClassifier
from datashunt.backends.llama_cpp import LlamaCppModel
from datashunt.core.calibration import choose, sweep
from datashunt.demos import DEMO_INSTRUCTION
from datashunt.eval.compare import compare
from datashunt.io.datasets.vader import load_vader
from datashunt.small import make_small

RESULTS = Path(__file__).parent / "results"


def split(seed, n_val, n_test):
    frame = load_vader("movies")
    rest, test = train_test_split(frame, test_size=n_test, random_state=seed, stratify=frame["label"])
    train, val = train_test_split(rest, test_size=n_val, random_state=seed, stratify=rest["label"])
    return train, val, test


def split_arguments(parser):
    """The options that fix the split and the LLM, shared by the scripts built on this benchmark."""
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-validation", type=int, default=1000)
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--model", default="qwen2.5-coder-1.5b")
    return parser


def items_per_second(predict, texts, repeats=7) -> float:
    """Items per second of ``predict(texts)``, best of ``repeats`` runs."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        predict(texts)
        times.append(time.perf_counter() - start)
    return len(texts) / min(times)


def routing_overhead(shunt, texts, repeats=7):
    """Items per second through the shunt's small path vs the small model's own predict_proba."""
    direct = items_per_second(shunt.small_.predict_proba, texts, repeats)
    threshold, shunt.threshold_ = shunt.threshold_, -np.inf  # every item takes the small path
    routed = items_per_second(shunt.predict_proba, texts, repeats)
    shunt.threshold_ = threshold
    return {
        "items": len(texts),
        "direct_items_per_s": direct,
        "shunt_items_per_s": routed,
        "overhead": direct / routed - 1.0,
    }


def large_call_speed(model, texts):
    """Seconds per large call, one prompt at a time without and with reuse of the shared prefix,
    and four prompts per llama.cpp decode (the default)."""
    settings = {
        "without_prefix_reuse": {"reuse_prefix": False, "batch_size": 1},
        "with_prefix_reuse": {"reuse_prefix": True, "batch_size": 1},
        "with_prefix_reuse_4_per_decode": {"reuse_prefix": True, "batch_size": 4},
    }
    out = {}
    for name, options in settings.items():
        large = LlamaCppModel(model, prompt=DEMO_INSTRUCTION, cache=False, **options)
        large.predict_proba(texts[:1], ["negative", "positive"])  # load the model, warm up
        start = time.perf_counter()
        large.predict_proba(texts, ["negative", "positive"])
        out[name] = (time.perf_counter() - start) / len(texts)
    return {"items": len(texts), "seconds_per_call": out}


def main():
    parser = split_arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--small", nargs="+", default=["tfidf", "textcnn", "lstm", "minilm"])
    parser.add_argument("--out", type=Path, default=RESULTS / "core.json")
    parser.add_argument(
        "--cv",
        type=int,
        default=None,
        help="Cross-fit on training + validation labels instead of holding validation out.",
    )
    args = parser.parse_args()
    command = "python benchmarks/core.py " + " ".join(sys.argv[1:])
    print(command, flush=True)

    train, val, test = split(args.seed, args.n_validation, args.n_test)
    large = LlamaCppModel(args.model, prompt=DEMO_INSTRUCTION)
    results = {
        "command": command,
        "seed": args.seed,
        "large": args.model,
        "machine": platform.processor() or platform.machine(),
        "n_train": len(train),
        "n_validation": len(val),
        "n_test": len(test),
        "small_models": {},
    }
    if args.out.is_file():  # the small models not run now keep their entries
        earlier = json.loads(args.out.read_text())
        kept = {k: v for k, v in earlier["small_models"].items() if k not in args.small}
        results["small_models"] = {k: {"command": earlier["command"]} | v for k, v in kept.items()}
        results["large_call_speed"] = earlier.get("large_call_speed")
    for name in args.small:
        start = time.perf_counter()
        shunt = ShuntClassifier(
            make_small(name, random_state=args.seed),
            large,
            policy="match_large",
            confidence="max_proba",  # the paper's score, the baseline; the learned one in "learned"
            cv=args.cv,
            random_state=args.seed,
            progress=True,
        )
        if args.cv:  # every label trains the small model and calibrates δ
            labelled = pd.concat([train, val])
            shunt.fit(labelled["text"], labelled["label"])
        else:
            shunt.fit(train["text"], train["label"], X_val=val["text"], y_val=val["label"])
        fit_seconds = time.perf_counter() - start
        evaluation = compare(shunt, test["text"], test["label"], progress=True)
        y = test["label"].to_numpy()
        routes = evaluation.routes
        large_right = compare_large_right(shunt, test["text"], y)
        small_right = shunt.classes_[shunt.small_.predict_proba(test["text"]).argmax(1)] == y
        confidence = routes["confidence_small"].to_numpy()
        test_sweep = sweep(confidence, np.column_stack([small_right, large_right]))
        # The paper's rule (match_z=0) and the former default (match_z=2), on the same validation sweep.
        results["small_models"][name] = {
            "command": command,
            "cv": args.cv,
            "fit_seconds": fit_seconds,
            "threshold": shunt.threshold_,
            "calibration": shunt.calibration_,
            "point_estimate_match_z_0": point_estimate(shunt, 0, confidence, small_right, large_right),
            "point_estimate_match_z_2": point_estimate(shunt, 2, confidence, small_right, large_right),
            "summary": evaluation.summary.to_dict("records"),
            "per_class": evaluation.per_class.to_dict("records"),
            "validation_sweep": shunt.sweep_.replace([np.inf, -np.inf], None).to_dict("list"),
            "test_sweep_for_figure_only": test_sweep.replace([np.inf, -np.inf], None).to_dict("list"),
            "routing_overhead": routing_overhead(shunt, list(test["text"]) * 3),
        }
        if not args.cv:  # the same small model routed by the learned score (a cross-fitted one would need copies)
            results["small_models"][name]["learned"] = learned_routing(shunt, large, train, val, test, args.seed)
        print(name, evaluation.summary[["system", "accuracy", "large_rate"]].to_string(index=False), flush=True)
        args.out.write_text(json.dumps(results, indent=1, default=float))
    results["large_call_speed"] = large_call_speed(args.model, list(test["text"][:100]))
    args.out.write_text(json.dumps(results, indent=1, default=float))
    print(json.dumps(results["large_call_speed"]), flush=True)


def learned_routing(shunt, large, train, val, test, seed) -> dict:
    """The shunt's small model, already trained, routed by ``confidence="learned"`` and ``"auto"``
    (the same policy and guarantee; the scorer is trained on the validation labels), on the same test split."""
    out, y = {}, test["label"].to_numpy()
    for confidence in ("learned", "auto"):
        start = time.perf_counter()
        other = ShuntClassifier(
            FrozenEstimator(shunt.small_), large, policy="match_large", confidence=confidence, random_state=seed
        )
        other.fit(train["text"], train["label"], X_val=val["text"], y_val=val["label"])
        routes = other.route(test["text"])
        out[confidence] = {
            "threshold": other.threshold_,
            "accuracy": float((routes["label"].to_numpy() == y).mean()),
            "large_rate": float((routes["reached"] == 1).mean()),
            "goal_met": other.calibration_["goal_met"],
            "large_calls": other.calibration_.get("large_calls"),
            "scoring": other.scoring_,
            "fit_seconds": time.perf_counter() - start,
        }
        print(confidence, json.dumps({k: v for k, v in out[confidence].items() if k != "scoring"}), flush=True)
    return out


def point_estimate(shunt, match_z, test_confidence, small_right, large_right):
    """δ by the point estimate (guarded by ``match_z``) on the shunt's validation sweep, judged on the test split."""
    delta = choose(shunt.sweep_, "match_last", match_z=match_z).threshold
    to_large = test_confidence < delta
    return {
        "threshold": delta,
        "accuracy": float(np.where(to_large, large_right, small_right).mean()),
        "large_rate": float(to_large.mean()),
    }


def compare_large_right(shunt, texts, y):
    """Whether the large model alone is right on each item (answers come from the cache)."""
    result = shunt.large_.predict_proba(list(texts), shunt.labels_)
    pred = np.where(result.ok, shunt.classes_[np.nan_to_num(result.proba, nan=0).argmax(1)], None)
    return pred == y


if __name__ == "__main__":
    main()
