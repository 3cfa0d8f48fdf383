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
  told in its prompt what the small side settled;
- ``large_informed``: the LLM on every subtask of every item, with candidate labels from the small
  model (hard Prompt Pruning over every class: those under a probability of 0.1 dropped, at least
  two kept) and the ``--shots`` labelled training packages most like the item in its prompt;
- ``ds_plus_informed``: ``ds_plus`` with that informed LLM and the budget policy (the most
  accurate δ on validation that asks the LLM about at most ``--informed-budget`` of the items per
  subtask, guaranteed): where the LLM earns a place, on the items the small model is least sure of;
  ``ds_plus_informed_guarded``: the same with ``budget_z`` (``--budget-z`` standard errors, the
  one-standard-error rule by default): a larger share asked only where its validation gain clears
  the noise.

Reported on the test packages: exact match (every subtask right), macro-F1 per subtask, and the
LLM's tokens (prompt and completion) per item. Nothing is chosen on the test packages.

``--part segments``: Debian long package descriptions (3 to 6 English sentences) translated into
German (:func:`datashunt.io.datasets.ddtp.documents_task`; human translations as references).
A description is cut into its paragraphs (``--unit lines``: Debian writes one paragraph per line;
``sentences`` is the other unit, run as an extra row). The training descriptions whose translation
has as many parts give the aligned part pairs: the translation memory and the retrieved examples.
Three stages, cheapest first: a translation memory (:class:`~datashunt.small.memory.MemoryGenerator`:
the translation of the most similar training part, confidence = their similarity), Qwen2.5-Coder-0.5B
with 2 retrieved examples, Qwen2.5-Coder-1.5B with 1 retrieved example (a part, or a whole
description when it translates whole descriptions). Greedy, local.

- ``small``: the small side alone (the memory where its calibrated δ trusts it, the 0.5B model on
  every other part); ``small_model_only``, ``large_parts``: each model alone on every part;
  ``large``: the large model on each whole description (what one would do without Data Shunt);
- ``ds_item``: Data Shunt on whole descriptions (the paper's unit), the same three stages on whole
  descriptions, calibrated on validation chrF;
- ``ds_plus``: :class:`~datashunt.Segments`: every part routed on its own (a ShuntGenerator,
  default score, calibrated on the validation descriptions' aligned parts for the budget's share of
  a part), the large model asked a description's open parts together in one numbered call, shown
  what the small side wrote around them, least sure parts first within the budget per description
  (``max_cost``: open parts beyond it keep the small side's answer); ``ds_plus_one_by_one``: the
  same, one call per open part; ``ds_plus_match``: no budget (the default policy);
  ``ds_plus_sentences``: the same as ``ds_plus`` by sentence.

``--no-context`` leaves out of the large model's prompt what the small side wrote around each
open part (every Segments row; the default shows it).

``--part prompts`` (validation only, the design probe behind ``--no-context``): on the first
``--probe-docs`` validation descriptions, the memory settling what it is sure of (its δ from the
last ``segments`` run) and the 1.5B model asked about every other paragraph, together or one by
one, with or without the context, with 1 retrieved example or none; against the 1.5B model on
the whole descriptions, and the small side alone.

Reported on the test descriptions (the ``--n-test`` drawn first and ``--n-more-test`` more from
the end of the shuffled order, so the test set grew without moving validation): corpus chrF
against the whole human translation with a bootstrap 95% interval, the large model's tokens
(prompt and completion) per description, Data Shunt+'s paired interval of its difference from
``ds_item`` and ``large`` (``minus_ds_item``, ``minus_large``: both scored on the same resamples),
and the main rows per draw of the test set (``test_batches``).

    .venv/bin/python benchmarks/ds_plus.py --seed 0 --part segments
    .venv/bin/python benchmarks/ds_plus.py --seed 0 --part prompts
"""

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import finetune
import numpy as np
from sklearn.base import clone
from sklearn.metrics import f1_score

from datashunt import Segments, ShuntClassifier, ShuntGenerator, Subtasks
from datashunt.backends.generate.llama_cpp import LlamaCppGenerator
from datashunt.backends.llama_cpp import LlamaCppModel
from datashunt.core.calibration import choose, sweep
from datashunt.core.segments import join, split
from datashunt.eval.metrics import get_metric
from datashunt.io.datasets.ddtp import LANGUAGES, documents_task
from datashunt.io.datasets.debian import facet_split, load_debian_facets
from datashunt.small import make_small
from datashunt.small.memory import MemoryGenerator

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
        "macro_f1": {n: macro_f1(truth[n], predicted[n]) for n in names},
        "large_tokens_per_item": float(np.sum(tokens) / len(truth)),
    }


def macro_f1(truth, predicted) -> float:
    """Macro-F1 over the classes the truth or an answer names; a failed call (``None``) is wrong
    for its item and names no class of its own."""
    predicted = np.asarray(predicted, dtype=object)
    answered = np.array([p is not None for p in predicted])
    labels = sorted(set(truth.astype(str)) | set(predicted[answered].astype(str)))
    return float(
        f1_score(truth.astype(str), np.where(answered, predicted, "<none>").astype(str), labels=labels, average="macro")
    )


def large_answers(face, texts):
    """The LLM's label and prompt tokens on every text (one call per text, cached; a label is
    scored from the next token's probabilities, so no completion tokens, as in the route table),
    its prompt shaped as the face shapes it (Prompt Pruning's candidates, retrieved examples)."""
    pruning = face.pruning_.prompt_args(face.small_.predict_proba(texts), face.labels_) if face.pruning_ else {}
    result = face.large_.predict_proba(list(texts), face.labels_, **pruning)
    label = np.where(result.ok, face.classes_[np.nan_to_num(result.proba, nan=0).argmax(axis=1)], None)
    return label, np.asarray(result.prompt_tokens)


def facets(args) -> dict:
    names = list(QUESTIONS)
    frame = load_debian_facets(tuple(n for n in names if n != "section"))
    train, val, test = facet_split(frame)
    print(f"packages: train {len(train)}, validation {len(val)}, test {len(test)}", flush=True)

    def subtasks(shots=0, **face) -> Subtasks:
        return Subtasks(
            [
                (
                    name,
                    ShuntClassifier(
                        make_small("tfidf", random_state=args.seed),
                        LlamaCppModel(args.model, prompt=QUESTIONS[name], shots=shots),
                        random_state=args.seed,
                        progress=True,
                        **face,
                    ),
                )
                for name in names
            ],
            context=True,
        )

    def routed(plus: Subtasks) -> tuple[dict, dict]:
        start = time.perf_counter()
        plus.fit(train["text"], train[names], val["text"], val[names])
        fit_seconds = time.perf_counter() - start
        start = time.perf_counter()
        table = plus.route(test["text"])
        route_seconds = time.perf_counter() - start
        fitted = dict(plus.subtasks_)
        tokens = table["prompt_tokens"].to_numpy() + table["completion_tokens"].to_numpy()
        return fitted, figures({n: table[n].to_numpy() for n in names}, test, tokens) | {
            "large_share": {n: float((table[f"route_{n}"] == "large").mean()) for n in names},
            "items_asking_large": float((table["large_calls"] > 0).mean()),
            "thresholds": {n: fitted[n].threshold_ for n in names},
            "scoring": {n: getattr(fitted[n], "scoring_", {"used": "max_proba"})["used"] for n in names},
            "fit_seconds": fit_seconds,
            "route_seconds": route_seconds,
        }

    fitted, plus = routed(subtasks())
    small = {n: fitted[n].small_.predict(test["text"]) for n in names}
    large = {n: large_answers(fitted[n], test["text"]) for n in names}
    result = {
        "small": figures(small, test, np.zeros(len(test))),
        "large": figures({n: large[n][0] for n in names}, test, sum(large[n][1] for n in names)),
    }
    result["ds_item"] = whole_items(fitted, names, val, test, large)
    result["ds_plus"] = plus
    informing = dict(shots=args.shots, prompt_pruning="hard", pruning_level=0.0)
    budget = dict(policy="max_last_rate", max_large_rate=args.informed_budget)
    informed, result["ds_plus_informed"] = routed(subtasks(**informing, **budget))
    large = {n: large_answers(informed[n], test["text"]) for n in names}
    result["large_informed"] = figures({n: large[n][0] for n in names}, test, sum(large[n][1] for n in names))
    _, result["ds_plus_informed_guarded"] = routed(subtasks(**informing, **budget, budget_z=args.budget_z))
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


PART = {"lines": ("paragraph", 256), "sentences": ("sentence", 96)}  # what a part is called, its new tokens
TOKEN = {"per_million_input": 1e6, "per_million_output": 1e6}  # the large model's price: 1 per token


class Translators:
    """The translation models of ``--part segments`` and ``--part prompts``, built alike."""

    def __init__(self, args):
        self.language, self.seed = LANGUAGES.get(args.lang, args.lang), args.seed
        self.small, self.large = "qwen2.5-coder-0.5b", args.model

    def part(self, model, shots, unit, price=None):
        noun, new_tokens = PART[unit]
        ask = (
            f"Translate this {noun} of a Debian package description from English into {self.language}. "
            f"Answer with the {self.language} translation only."
        )
        return LlamaCppGenerator(
            model, instruction=ask, shots=shots, stop=["\n"], max_new_tokens=new_tokens, price=price
        )

    def doc(self, model, price=None):
        ask = (
            f"Translate this Debian package description from English into {self.language}, keeping its line "
            f"breaks. Answer with the {self.language} translation only."
        )
        return LlamaCppGenerator(model, instruction=ask, shots=1, max_new_tokens=512, n_ctx=4096, price=price)

    def shunt(self, first, last, **policy):
        stages = [("memory", MemoryGenerator()), ("small", first), ("large", last)]
        return ShuntGenerator(stages, metric="chrf", random_state=self.seed, progress=True, **policy)


def documents(args):
    train, val, test = documents_task(
        args.lang, args.n_validation, args.n_test, args.seed, 3, 6, n_more_test=args.n_more_test
    )
    print(f"descriptions: train {len(train)}, validation {len(val)}, test {len(test)}", flush=True)
    return train, val, test


def segments(args) -> dict:
    train, val, test = documents(args)
    make = Translators(args)
    small, large = make.small, make.large
    part_model, doc_model, shunt = make.part, make.doc, make.shunt

    chrf = get_metric("chrf")
    refs = test["reference"].tolist()
    written = {}  # the test texts of the rows compared at the end

    def figures(texts, large_tokens, row=None) -> dict:
        low, high = chrf.bootstrap(texts, refs, n=args.bootstrap, seed=args.seed)
        if row:
            written[row] = list(texts)
        return {
            "quality": chrf.corpus(texts, refs),
            "ci95": [low, high],
            "large_tokens_per_item": float(np.mean(large_tokens)),
        }

    def routed(model: Segments, row=None) -> dict:
        start = time.perf_counter()
        table = model.route(test["text"].tolist())
        seconds = time.perf_counter() - start
        parts = table["large_parts"].sum() / table["parts"].sum()
        tokens = table["large_prompt_tokens"] + table["large_completion_tokens"]
        return figures(table["text"].tolist(), tokens, row) | {
            "large_share_of_parts": float(parts),
            "held_back_share_of_parts": float(table["held_back"].sum() / table["parts"].sum()),
            "items_asking_large": float((table["large_calls"] > 0).mean()),
            "large_calls_per_item": float(table["large_calls"].mean()),
            "flagged": int(table["flag"].notna().sum()),
            "route_seconds": seconds,
        }

    def fitted(unit: str, held=None, **policy) -> tuple[Segments, dict]:
        last = part_model(large, 1, unit, TOKEN)
        plus = Segments(
            shunt(part_model(small, 2, unit), last, **policy), unit=unit, max_cost=held, context=args.context
        )
        plus.fit(train["text"].tolist(), train["reference"].tolist(), val["text"].tolist(), val["reference"].tolist())
        calibration = plus.shunt_.calibration_
        return plus, {
            "unit": unit,
            "context": args.context,
            "policy": calibration["policy"],
            "thresholds": dict(zip(plus.shunt_.stage_names(), plus.shunt_.thresholds_)),
            "scoring": (calibration.get("scoring") or {}).get("used", "mean_proba"),
            "validation": {k: calibration[k] for k in ("quality", "stage_quality", "reach", "goal_met")},
            "n_validation_parts": calibration["n_validation"],
            "alignment": plus.alignment_,
        }

    def spent(got) -> np.ndarray:
        return np.asarray(got.prompt_tokens) + np.asarray(got.completion_tokens)

    def whole(item, row=None) -> tuple[dict, list]:
        """Data Shunt on whole descriptions, and every stage's answers on each test description."""
        start = time.perf_counter()
        item.fit(train["text"].tolist(), train["reference"].tolist(), val["text"].tolist(), val["reference"].tolist())
        table = item.route(test["text"].tolist())
        seconds = time.perf_counter() - start
        every = item.answers_of_every_stage(test["text"].tolist())  # cached by the route and the calibration
        sent = table["reached"].to_numpy() == len(every) - 1
        return figures(table["text"].tolist(), np.where(sent, spent(every[-1]), 0), row) | {
            "large_share": float(sent.mean()),
            "thresholds": dict(zip(item.stage_names(), item.thresholds_)),
            "scoring": (item.calibration_.get("scoring") or {}).get("used", "mean_proba"),
            "seconds": seconds,
        }, every

    # Whole descriptions first: what the large model spends per validation description sets the budget.
    result = {}
    item = shunt(doc_model(small), doc_model(large, TOKEN))
    result["ds_item"], every = whole(item, "ds_item")
    result["large"] = figures(list(every[-1].text), spent(every[-1]), "large")
    result["small_whole_descriptions"] = figures(list(every[1].text), np.zeros(len(test)))
    on_validation = float(np.mean(spent(item.answers_of_every_stage(val["text"].tolist())[-1])))  # cached
    budget = args.budget * on_validation
    result["budget"] = {"share": args.budget, "large_tokens_per_validation_item": on_validation}
    budgeted = shunt(doc_model(small), doc_model(large, TOKEN), policy="max_cost", max_cost=budget)
    result["ds_item_budget"] = whole(budgeted)[0]

    def per_part(unit) -> dict:
        """The budget per part (a validation description's share over its parts) for calibration,
        held per description when routing."""
        per_part = budget / np.mean([len(split(d, unit)) for d in val["text"]])
        return {"policy": "max_cost", "max_cost": per_part, "held": budget}

    start = time.perf_counter()
    plus, report = fitted(args.unit, **per_part(args.unit))
    fit_seconds = time.perf_counter() - start
    result["ds_plus"] = routed(plus, "ds_plus") | report | {"fit_seconds": fit_seconds}
    print("ds_plus", json.dumps({k: result["ds_plus"][k] for k in ("quality", "large_tokens_per_item")}), flush=True)
    one = clone(plus).set_params(together=False)
    one.shunt_, one.alignment_ = plus.shunt_, plus.alignment_  # the same calibrated shunt
    result["ds_plus_one_by_one"] = routed(one)
    match, report = fitted(args.unit)
    result["ds_plus_match"] = routed(match) | report
    for unit in args.also_units:
        other, report = fitted(unit, **per_part(unit))
        result[f"ds_plus_{unit}"] = routed(other) | report

    # each side alone on every part of the routed unit: the small side (the memory where it is
    # sure, the small model elsewhere), the small model, the large model (most answers cached)
    pieces = [split(doc, args.unit) for doc in test["text"]]
    flat = [part for doc in pieces for part, _ in doc]

    def joined(texts):
        texts = iter(texts)
        return [join([next(texts) for _ in doc], [sep for _, sep in doc]) for doc in pieces]

    memory, model = plus.shunt_.ask_stage(0, flat), plus.shunt_.ask_stage(1, flat)
    sure = memory.confidence >= plus.shunt_.thresholds_[0]
    result["small"] = figures(joined(np.where(sure, memory.text, model.text)), np.zeros(len(test)), "small")
    result["small"]["memory_share_of_parts"] = float(sure.mean())
    result["small_model_only"] = figures(joined(model.text), np.zeros(len(test)))
    last = plus.shunt_.ask_stage(2, flat)
    tokens = iter(spent(last))
    result["large_parts"] = figures(joined(last.text), [sum(next(tokens) for _ in doc) for doc in pieces])
    # no budget: the memory where sure, the large model on every other part (single calls)
    rest = iter(np.where(sure, 0, spent(last)))
    result["memory_then_large"] = figures(
        joined(np.where(sure, memory.text, last.text)), [sum(next(rest) for _ in doc) for doc in pieces]
    ) | {"large_share_of_parts": float(1 - sure.mean())}
    for other in ("ds_item", "large"):  # paired: both rows scored on the same resampled descriptions
        low, high = chrf.bootstrap(written["ds_plus"], refs, n=args.bootstrap, seed=args.seed, against=written[other])
        result["ds_plus"][f"minus_{other}"] = {
            "difference": result["ds_plus"]["quality"] - result[other]["quality"],
            "ci95": [low, high],
        }
    batches = {"first": slice(0, args.n_test), "more": slice(args.n_test, len(test))}  # the test set as it grew
    result["test_batches"] = {
        batch: {"n": len(refs[rows])} | {row: chrf.corpus(texts[rows], refs[rows]) for row, texts in written.items()}
        for batch, rows in batches.items()
        if len(refs[rows])
    }
    result["n"] = {"train": len(train), "validation": len(val), "test": len(test)}
    result["parts_per_item"] = float(np.mean([len(doc) for doc in pieces]))
    result["unit"] = args.unit
    return result


def prompts(args, results: dict) -> dict:
    """Validation only: each way of asking the large model about every paragraph the memory leaves
    open (its δ as the last ``segments`` run calibrated it), against whole descriptions."""
    train, val, _ = documents(args)
    make = Translators(args)
    docs, refs = val["text"].tolist()[: args.probe_docs], val["reference"].tolist()[: args.probe_docs]
    chrf = get_metric("chrf")
    memory = results["segments"]["ds_plus"]["thresholds"]["memory"]
    whole = make.doc(make.large, TOKEN).fit(train["text"].tolist(), train["reference"].tolist())
    got = whole.generate(docs)
    out = {"n_docs": len(docs), "memory_threshold": memory}
    out["large_whole"] = {
        "quality": chrf.corpus(got.text, refs),
        "large_tokens_per_item": float(np.mean(np.add(got.prompt_tokens, got.completion_tokens))),
    }
    ways = {"small_side": (True, True, 1, -np.inf)}  # δ of the 0.5B: -inf keeps all it writes, inf none
    for together in (True, False):
        for context in (True, False):
            ways[f"{'together' if together else 'one_by_one'}_{'context' if context else 'plain'}"] = (
                together,
                context,
                1,
                np.inf,
            )
    ways["together_plain_0_shots"] = (True, False, 0, np.inf)
    for name, (together, context, shots, delta) in ways.items():
        stages = make.shunt(make.part(make.small, 2, "lines"), make.part(make.large, shots, "lines", TOKEN)).stages
        shunt = ShuntGenerator(stages, thresholds=[memory, delta], metric="chrf")
        model = Segments(shunt, unit="lines", together=together, context=context)
        model.fit(train["text"].tolist(), train["reference"].tolist(), docs, refs)
        table = model.route(docs)
        out[name] = {
            "quality": chrf.corpus(table["text"].tolist(), refs),
            "large_tokens_per_item": float(np.mean(table["large_prompt_tokens"] + table["large_completion_tokens"])),
            "large_share_of_parts": float(table["large_parts"].sum() / table["parts"].sum()),
            "flagged": int(table["flag"].notna().sum()),
        }
        print(name, json.dumps(out[name]), flush=True)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parts = ["facets", "segments", "prompts", "finetune"]
    parser.add_argument("--part", nargs="+", default=parts, choices=parts)
    parser.add_argument("--model", default="qwen2.5-coder-1.5b", help="the large model")
    parser.add_argument("--shots", type=int, default=4, help="facets: retrieved examples in the informed LLM's prompt")
    parser.add_argument(
        "--informed-budget", type=float, default=0.5, help="facets: the informed rows' largest share asked per subtask"
    )
    parser.add_argument(
        "--budget-z", type=float, default=1.0, help="facets: the guarded informed row's noise guard (standard errors)"
    )
    parser.add_argument("--lang", default="de", help="segments: the language translated into")
    parser.add_argument("--n-validation", type=int, default=300, help="segments: validation descriptions")
    parser.add_argument("--n-test", type=int, default=100, help="segments: test descriptions")
    parser.add_argument(
        "--n-more-test",
        type=int,
        default=100,
        help="segments: more test descriptions, from the end of the shuffled order (the validation split stays)",
    )
    parser.add_argument("--unit", default="lines", choices=list(PART), help="segments: the parts routed")
    parser.add_argument(
        "--context",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="segments: show the large model what the small side wrote around an open part (Segments: off by default)",
    )
    parser.add_argument("--probe-docs", type=int, default=60, help="prompts: the validation descriptions probed")
    parser.add_argument(
        "--also-units", nargs="*", default=["sentences"], choices=list(PART), help="segments: other units, one row each"
    )
    parser.add_argument(
        "--budget", type=float, default=0.5, help="segments: the large tokens allowed, a share of the large model's"
    )
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--finetune-tasks", nargs="+", default=list(finetune.TASKS), choices=list(finetune.TASKS))
    parser.add_argument(
        "--lora-model",
        nargs="+",
        default=["qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b"],
        help="finetune: the LLMs given LoRA adapters, each on its own (the first is reported as lora)",
    )
    parser.add_argument("--lora-train", type=int, default=512, help="finetune: training items the LoRA run sees")
    parser.add_argument("--lora-epochs", type=int, default=1)
    parser.add_argument("--image-epochs", type=int, default=6)
    parser.add_argument("--image-size", type=int, default=112, help="finetune: pixels a side (the stand-in sees 224)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    command = "python benchmarks/ds_plus.py " + " ".join(sys.argv[1:])
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    results |= {"machine": f"{platform.machine()}, 2 cores", "seed": args.seed}
    for part in args.part:
        if part == "finetune":  # each task written when done; the tasks not run keep their entries
            for name in args.finetune_tasks:
                entry = {"command": command} | finetune.TASKS[name](args)
                results[part] = results.get(part, {}) | {name: entry}
                print(part, name, json.dumps({k: entry[k]["accuracy"] for k in ("lora", "ds_plus")}), flush=True)
                args.out.write_text(json.dumps(results, indent=1, default=float))
            continue
        run = {"facets": facets, "segments": segments, "prompts": lambda args: prompts(args, results)}[part]
        results[part] = {"command": command} | run(args)
        headline = "exact_match" if part == "facets" else "quality"
        print(part, json.dumps({k: v.get(headline) for k, v in results[part].items() if isinstance(v, dict)}))
        args.out.write_text(json.dumps(results, indent=1, default=float))


if __name__ == "__main__":
    main()
