"""Data Shunt+ (the follow-up paper): small models take over the easy subtasks of an item.

``--part facets``: Debian packages (``name: synopsis``) labelled at once with their archive section
and two debtags facets, ``interface`` and ``use`` (:func:`datashunt.io.datasets.debian.load_debian_facets`;
each package's most common value per facet, values fewer than 50 packages carry are ``other``; the
split is fixed by a hash of the package name). Per subtask: a TF-IDF model trained on the training
packages (small) and the local Qwen2.5-Coder-1.5B asked that subtask's question zero-shot (large).

- ``small``: the TF-IDF models alone; ``large``: the LLM alone on every subtask of every item;
- ``ds_item``: Data Shunt on whole items (the paper's unit): an item goes to the LLM for all its
  subtasks when the small side is unsure of any (its lowest confidence under δ), δ by the match
  policy on validation exact match;
- ``ds_plus``: :class:`~datashunt.Subtasks`: each subtask a shunt of its own (the default policy
  and guarantee, calibrated on the validation packages), the LLM asked only the open subtasks and
  told in its prompt what the small side settled.

Reported on the test packages: exact match (every subtask right), macro-F1 per subtask, and the
LLM's tokens (prompt and completion) per item. Nothing is chosen on the test packages.

    .venv/bin/python benchmarks/ds_plus.py --seed 0 --part facets
"""

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import f1_score

from datashunt import ShuntClassifier, Subtasks
from datashunt.backends.llama_cpp import LlamaCppModel
from datashunt.core.calibration import choose, sweep
from datashunt.io.datasets.debian import facet_split, load_debian_facets
from datashunt.small import make_small

RESULTS = Path(__file__).parent / "results" / "ds_plus.json"
LEAD = "This is a Debian package: its name and one-line description."
QUESTIONS = {
    "section": f"{LEAD} Which section of the Debian archive is it in?",
    "interface": f"{LEAD} What kind of user interface does it offer?",
    "use": f"{LEAD} What is it mainly used for?",
}


def figures(predicted: dict, truth, tokens) -> dict:
    """Exact match, macro-F1 per subtask and LLM tokens per item of one system."""
    names = list(predicted)
    right = np.column_stack([np.asarray(predicted[n], dtype=object) == truth[n].to_numpy() for n in names])
    return {
        "exact_match": float(right.all(axis=1).mean()),
        "accuracy": {n: float(right[:, i].mean()) for i, n in enumerate(names)},
        "macro_f1": {
            n: float(f1_score(truth[n].astype(str), np.asarray(predicted[n]).astype(str), average="macro"))
            for n in names
        },
        "large_tokens_per_item": float(np.sum(tokens) / len(truth)),
    }


def large_answers(face, texts):
    """The LLM's label and prompt tokens on every text (one call per text, cached; a label is
    scored from the next token's probabilities, so no completion tokens, as in the route table)."""
    result = face.large_.predict_proba(list(texts), face.labels_)
    label = np.where(result.ok, face.classes_[np.nan_to_num(result.proba, nan=0).argmax(axis=1)], None)
    return label, np.asarray(result.prompt_tokens)


def facets(args) -> dict:
    names = list(QUESTIONS)
    frame = load_debian_facets(tuple(n for n in names if n != "section"))
    train, val, test = facet_split(frame)
    print(f"packages: train {len(train)}, validation {len(val)}, test {len(test)}", flush=True)
    faces = [
        (
            name,
            ShuntClassifier(
                make_small("tfidf", random_state=args.seed),
                LlamaCppModel(args.model, prompt=QUESTIONS[name]),
                random_state=args.seed,
                progress=True,
            ),
        )
        for name in names
    ]
    start = time.perf_counter()
    plus = Subtasks(faces, context=True).fit(train["text"], train[names], val["text"], val[names])
    fit_seconds = time.perf_counter() - start
    start = time.perf_counter()
    table = plus.route(test["text"])
    route_seconds = time.perf_counter() - start
    fitted = dict(plus.subtasks_)
    small = {n: fitted[n].small_.predict(test["text"]) for n in names}
    large = {n: large_answers(fitted[n], test["text"]) for n in names}
    result = {
        "small": figures(small, test, np.zeros(len(test))),
        "large": figures({n: large[n][0] for n in names}, test, sum(large[n][1] for n in names)),
    }
    result["ds_item"] = whole_items(fitted, names, val, test, large)
    plus_tokens = table["prompt_tokens"].to_numpy() + table["completion_tokens"].to_numpy()
    result["ds_plus"] = figures({n: table[n].to_numpy() for n in names}, test, plus_tokens)
    result["ds_plus"] |= {
        "large_share": {n: float((table[f"route_{n}"] == "large").mean()) for n in names},
        "items_asking_large": float((table["large_calls"] > 0).mean()),
        "thresholds": {n: fitted[n].threshold_ for n in names},
        "scoring": {n: fitted[n].scoring_["used"] if hasattr(fitted[n], "scoring_") else "max_proba" for n in names},
        "fit_seconds": fit_seconds,
        "route_seconds": route_seconds,
    }
    result["n"] = {"train": len(train), "validation": len(val), "test": len(test)}
    result["classes"] = {n: fitted[n].classes_.tolist() for n in names}
    return result


def whole_items(fitted, names, val, test, large_test) -> dict:
    """Data Shunt on whole items: the lowest of the subtasks' small confidences against one δ
    chosen on validation (match policy on exact match); an item below it goes to the LLM whole."""

    def side(part, large):
        proba = {n: fitted[n].small_.predict_proba(part["text"]) for n in names}
        small = {n: fitted[n].classes_[proba[n].argmax(axis=1)] for n in names}
        lowest = np.min([proba[n].max(axis=1) for n in names], axis=0)
        small_right = np.all([small[n] == part[n].to_numpy() for n in names], axis=0)
        large_right = np.all([large[n][0] == part[n].to_numpy() for n in names], axis=0)
        return small, lowest, small_right, large_right

    large_val = {n: large_answers(fitted[n], val["text"]) for n in names}
    _, lowest, small_right, large_right = side(val, large_val)
    table = sweep(lowest, np.column_stack([small_right, large_right]))
    delta = choose(table, "match_last").threshold
    small, lowest, _, _ = side(test, large_test)
    sent = lowest < delta
    predicted = {n: np.where(sent, large_test[n][0], small[n]) for n in names}
    tokens = sum(np.where(sent, large_test[n][1], 0) for n in names)
    return figures(predicted, test, tokens) | {"threshold": float(delta), "large_share": float(sent.mean())}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--part", nargs="+", default=["facets"], choices=["facets"])
    parser.add_argument("--model", default="qwen2.5-coder-1.5b")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    command = "python benchmarks/ds_plus.py " + " ".join(sys.argv[1:])
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    results |= {"machine": f"{platform.machine()}, 2 cores", "seed": args.seed}
    for part in args.part:
        results[part] = {"command": command} | {"facets": facets}[part](args)
        print(part, json.dumps({k: v.get("exact_match") for k, v in results[part].items() if isinstance(v, dict)}))
        args.out.write_text(json.dumps(results, indent=1, default=float))


if __name__ == "__main__":
    main()
