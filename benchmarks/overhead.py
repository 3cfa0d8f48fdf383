"""Routing overhead of the cascade engine on the small-model path, without any large call.

Each small model is trained on the core benchmark's training split; its own ``predict_proba`` on
the 1,000 test sentences is timed against ``ShuntClassifier.predict_proba`` and a two-stage
``Cascade`` with every item kept by the small model (δ = -inf, so the LLM is never asked; it is
not even loaded). Best of 7 runs each, on an otherwise idle machine.

    .venv/bin/python benchmarks/overhead.py --seed 0 --small tfidf textcnn lstm minilm
"""

import argparse
import json
import sys

import numpy as np
from core import RESULTS, items_per_second, split, split_arguments
from sklearn.frozen import FrozenEstimator

from datashunt import Cascade, ShuntClassifier
from datashunt.backends.llama_cpp import LlamaCppModel
from datashunt.demos import DEMO_INSTRUCTION
from datashunt.small import make_small


def main():
    parser = split_arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--small", nargs="+", default=["tfidf", "textcnn", "lstm", "minilm"])
    args = parser.parse_args()
    command = "python benchmarks/overhead.py " + " ".join(sys.argv[1:])
    print(command, flush=True)
    train, _, test = split(args.seed, args.n_validation, args.n_test)
    texts, few = test["text"].tolist(), (train["text"][:50], train["label"][:50])
    large = LlamaCppModel(args.model, prompt=DEMO_INSTRUCTION)
    results = {"command": command, "seed": args.seed, "items": len(texts), "small_models": {}}
    for name in args.small:
        small = FrozenEstimator(make_small(name, random_state=args.seed).fit(train["text"], train["label"]))
        shunt = ShuntClassifier(small, large, threshold=-np.inf).fit(*few)
        cascade = Cascade([("small", small), ("llm", large)], thresholds=[-np.inf]).fit(*few)
        direct = items_per_second(small.predict_proba, texts)
        row = {"direct_items_per_s": direct}
        for system, model in (("shunt", shunt), ("cascade", cascade)):
            row[f"{system}_items_per_s"] = items_per_second(model.predict_proba, texts)
            row[f"{system}_overhead"] = direct / row[f"{system}_items_per_s"] - 1.0
        results["small_models"][name] = row
        print(name, json.dumps(row), flush=True)
    (RESULTS / "overhead.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
