"""Generation (the paper's eq. 8, Table 3 and Fig. 3) on Debian package synopses, English -> German.

Items are the one-line English synopses of Debian packages, references the translations Debian's
volunteers wrote (``Translation-de``, paired by ``Description-md5``; ``--lang`` takes any
language apt has lists for). ``--n-validation`` pairs calibrate δ, ``--n-test`` pairs measure;
every other pair is training data, used only as retrieved examples (``--shots`` closest pairs,
shown as earlier chat turns). Greedy decoding, one line (``stop="\\n"``), local GGUF models:

- small: Qwen2.5-Coder-0.5B-Instruct, zero-shot (``small_zero``) or with retrieved examples
  (``small_shots``: the task knowledge a small model brings);
- large: Qwen2.5-Coder-1.5B-Instruct, zero-shot (``large``), given the small model's draft and
  confidence as a hint (``large_hint``), or with the same retrieved examples (``large_shots``).

Each configuration is a two-stage :class:`~datashunt.ShuntGenerator` with the default policy
(``match_last``: the fewest items sent on whose validation chrF is at least the large model's
alone, less ``--tolerance`` chrF points) for every sequence confidence: the paper's mean token
probability (eq. 8, the baseline: ``ds_mean_proba``), the other token measures, the learned
quality estimator (``learned``) and ``auto``, which takes the learned score only where it ranks
the validation texts better; ``ds`` (the headline) is ``auto``. Reported on the test split: corpus chrF
(sacrebleu) with a bootstrap 95% interval, BLEU and ROUGE-L, the large share, tokens and seconds
per item of each stage (seconds as measured when each answer was first computed: the call cache
keeps them), the quality-share curve at fixed shares (Fig. 3), and every sequence confidence.
Nothing is chosen on the test split. Run for some configurations only (``--configs``), the file
keeps the others' entries; each entry names the command that made it.

    .venv/bin/python benchmarks/generation.py --seed 0
"""

import argparse
import json
import platform
import sys
import time
from pathlib import Path

from datashunt import ShuntGenerator
from datashunt.backends.generate.llama_cpp import LlamaCppGenerator
from datashunt.core.sequence import SEQUENCE_MEASURES
from datashunt.eval.generation import compare_generation
from datashunt.io.datasets.ddtp import translation_instruction, translation_task

RESULTS = Path(__file__).parent / "results" / "generation.json"


def generator(model: str, args, shots: int = 0) -> LlamaCppGenerator:
    return LlamaCppGenerator(
        model, instruction=translation_instruction(args.lang), shots=shots, stop=["\n"], max_new_tokens=64
    )


def run(name, small, large, task, args, hint=False) -> dict:
    """One two-stage configuration: each stage alone and Data Shunt on the test split, for every
    sequence confidence and every ``--tolerance`` (the first gives the full entry per measure, the
    others a summary under ``tolerance_<t>``; ``mean_proba`` also gives the curve and the stage figures)."""
    result = {}
    # With a hint the large stage's prompt carries the small stage's confidence, so every measure
    # would make new prompts (and calls): the hint configuration uses the default measure only.
    for measure in ("mean_proba",) if hint else (*SEQUENCE_MEASURES, "learned", "auto"):
        for i, tolerance in enumerate(args.tolerance):
            entry, rows, curve = shunted(small, large, task, args, measure, tolerance, hint)
            if i:
                result.setdefault(f"tolerance_{tolerance:g}", {})[measure] = {
                    k: entry[k] for k in ("quality", "ci95", "large_share", "threshold", "validation")
                }
                continue
            result[measure] = entry
            if measure == "mean_proba":
                for stage in ("small", "large"):
                    row = rows.loc[f"{stage} only"]
                    result[stage] = {
                        "quality": row.quality,
                        "ci95": [row.ci_low, row.ci_high],
                        "completion_tokens_per_item": row.completion_tokens,
                        "seconds_per_item": row.seconds_per_item,
                        "unanswered": int(row.unanswered),
                    }
                result["curve"] = curve
        shown = {k: round(v, 3) if isinstance(v, float) else v for k, v in result[measure].items() if k != "validation"}
        print(name, measure, json.dumps(shown), flush=True)
    # Data Shunt's headline routing score: the learned one where it ranks the validation texts better
    # (confidence="auto"), the paper's mean token probability otherwise; mean_proba stays the baseline.
    result["ds"] = result.get("auto", result["mean_proba"])
    return result


def shunted(small, large, task, args, measure, tolerance, hint):
    """Fit one ShuntGenerator on the training and validation pairs and judge it on the test pairs."""
    train, val, test = task
    start = time.perf_counter()
    shunt = ShuntGenerator(
        [("small", small), ("large", large)],
        metric="chrf",
        confidence=measure,
        hint=hint,
        tolerance=tolerance,
        random_state=args.seed,
    )
    shunt.fit(train.text.tolist(), train.reference.tolist(), val.text.tolist(), val.reference.tolist())
    evaluation = compare_generation(
        shunt, test.text.tolist(), test.reference.tolist(), n_bootstrap=args.bootstrap, seed=args.seed
    )
    rows = evaluation.summary.set_index("system")
    ds = rows.loc["data shunt"]
    entry = {
        "quality": ds.quality,
        "ci95": [ds.ci_low, ds.ci_high],
        "large_share": ds.last_share,
        "threshold": shunt.thresholds_[0],
        "seconds_per_item": ds.seconds_per_item,
        "validation": {k: shunt.calibration_[k] for k in ("quality", "stage_quality", "reach", "goal", "goal_met")},
        "fit_seconds": time.perf_counter() - start,
    }
    if shunt.calibration_.get("scoring"):  # the learned score: which one was used, both ranks, training time
        entry["scoring"] = shunt.calibration_["scoring"]
        entry["deferral_seconds"] = shunt.calibration_["deferral"]["seconds"]
    return entry, rows, evaluation.curve.to_dict("records")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lang", default="de")
    parser.add_argument("--n-validation", type=int, default=200)
    parser.add_argument("--n-test", type=int, default=300)
    parser.add_argument("--shots", type=int, default=2)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument(
        "--tolerance",
        type=float,
        nargs="+",
        default=[0.0],
        help="chrF points below the large model's the match policy accepts (the first is the headline)",
    )
    parser.add_argument(
        "--configs",
        nargs="+",
        default=["zero", "shots", "hint", "shots_both"],
        choices=["zero", "shots", "hint", "shots_both"],
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    task = translation_task(args.lang, args.n_validation, args.n_test, args.seed)
    small_zero = generator("qwen2.5-coder-0.5b", args)
    small_shots = generator("qwen2.5-coder-0.5b", args, args.shots)
    large = generator("qwen2.5-coder-1.5b", args)
    large_shots = generator("qwen2.5-coder-1.5b", args, args.shots)
    plan = {
        "zero": (small_zero, large, False),
        "shots": (small_shots, large, False),
        "hint": (small_shots, large, True),
        "shots_both": (small_shots, large_shots, False),
    }
    command = "python " + " ".join(sys.argv)
    configs = {}
    if args.out.is_file():  # the configurations not run now keep their entries, each naming its command
        earlier = json.loads(args.out.read_text())
        configs = {
            name: {"command": entry.get("command", earlier["command"])} | entry
            for name, entry in earlier.get("configs", {}).items()
            if name not in args.configs
        }
    for name in args.configs:
        small, big, hint = plan[name]
        configs[name] = {"command": command} | run(name, small, big, task, args, hint=hint)
    # The headline: both stages shown the same examples, so "as good as the large model" is measured
    # against the large model at its best, not against a zero-shot one the small model already beats.
    headline = "shots_both" if "shots_both" in configs else next(iter(configs))
    main_config = configs[headline]
    results = {
        "command": command,
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}; 2 cores",
        "task": {
            "data": f"Debian package synopses, English -> {args.lang} (DDTP)",
            "n_train": len(task[0]),
            "n_validation": args.n_validation,
            "n_test": args.n_test,
            "seed": args.seed,
            "shots": args.shots,
            "tolerance": args.tolerance,
        },
        "stages": {
            "small": "Qwen2.5-Coder-0.5B-Instruct GGUF, greedy",
            "large": "Qwen2.5-Coder-1.5B-Instruct GGUF, greedy",
        },
        "headline": headline,
        "metric": "chrf",
        "small": main_config["small"],
        "large": main_config["large"],
        "ds": main_config["ds"],
        "ds_mean_proba": main_config["mean_proba"],
        "configs": configs,
    }
    args.out.write_text(json.dumps(results, indent=1, default=float))
    print("wrote", args.out)


if __name__ == "__main__":
    main()
