"""Cascades of recorded sentiment APIs on 20,000 Yelp reviews (FrugalML's replay table), at zero cost.

Stages are the recorded answers of VADER (a free lexicon model), Amazon's and Google's APIs, each
with its own score as confidence and its recorded price. Thresholds are calibrated on a random half
of the reviews, stratified by label (seed 0), to the cheapest setting whose accuracy is at least
Google's minus ``--tolerance`` on that half, then reported on the other half; the best cascade is the one
cheapest on the calibration half. Single thresholds and per-class thresholds (one δ per label the
stage predicts, FrugalML's idea) are compared. For each cascade: RouteLLM's peer metrics (APGR, CPT at
50% and 80%, over the curve of every single-threshold setting on the report half) and the accuracy
of random routing that sends the same share of reviews to the last stage.

    .venv/bin/python benchmarks/cascade_yelp.py --seed 0 --tolerance 0.005
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from datashunt import Cascade
from datashunt.backends.replay import ReplayModel
from datashunt.core.calibration import choose, per_class_refine, per_class_thresholds, sweep
from datashunt.core.deciding import outcome, stop_stage
from datashunt.eval.compare import peer_metrics, random_routing_accuracy

TABLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "frugalml_yelp" / "yelp_api_outputs.csv"
PRICE_PER_CALL = {"vader": 0.001 / 1e4, "amazon": 0.75 / 1e4, "google": 2.5 / 1e4}  # USD, from the data's README
RESULTS = Path(__file__).resolve().parent / "results" / "cascade_yelp.json"
CASCADES = [("amazon", "google"), ("vader", "google"), ("vader", "amazon", "google")]


def stage_arrays(table: pd.DataFrame, stages) -> dict:
    """Per item and stage: confidence, predicted label, correctness and price."""
    pred = np.column_stack([table[f"{s}_pred"].to_numpy(int) for s in stages])
    return {
        "confidence": np.column_stack([table[f"{s}_conf"].to_numpy(float) for s in stages]),
        "predicted": pred,
        "correct": pred == table["true_label"].to_numpy(int)[:, None],
        "cost": np.tile([PRICE_PER_CALL[s] for s in stages], (len(table), 1)),
    }


def calibrate(arrays: dict, min_accuracy: float, per_class: bool):
    """Thresholds for the cascade: a joint grid of single thresholds, or per class (two stages:
    Lagrangian; more: refined class by class from the grid's choice)."""
    if per_class and arrays["confidence"].shape[1] == 2:
        delta, met = per_class_thresholds(
            arrays["confidence"][:, 0],
            arrays["predicted"][:, 0],
            arrays["correct"][:, 0],
            arrays["correct"][:, 1],
            2,
            min_accuracy,
        )
        return [delta], met
    table = sweep(arrays["confidence"], arrays["correct"], arrays["cost"], n_grid=60)
    choice = choose(table, "target_accuracy", target_accuracy=min_accuracy)
    single = table.filter(like="threshold_").iloc[choice.row].tolist()
    if not per_class:
        return single, choice.met
    return per_class_refine(
        arrays["confidence"], arrays["predicted"], arrays["correct"], arrays["cost"], single, 2, min_accuracy
    )


def evaluate(arrays: dict, thresholds) -> dict:
    stage = stop_stage(arrays["confidence"], thresholds, arrays["predicted"])
    result = outcome(stage, arrays["correct"], arrays["cost"])
    result["last_share"] = result["reach"][-1]
    return result


def engine_rows(table, calib, report, target: float, google_cost: dict, seed: int) -> list:
    """The same cascades through the estimator (:class:`datashunt.Cascade` over replayed answers),
    with the paper's confidence (``max_proba`` of each service's recorded answer) and with the
    learned deferral (``confidence="learned"``: a gradient-boosted model over every earlier
    service's answer, cross-fitted on the calibration half), alone and with a combined final
    answer (``combine=True``: stacking every service's answer where the last was asked, kept only
    if it beats the last service on the calibration half), single and per-class thresholds."""
    frame = table.assign(**{f"{s}_pred": table[f"{s}_pred"].astype(str) for s in PRICE_PER_CALL})
    ids = {"calibration": calib["id"].to_numpy(), "report": report["id"].to_numpy()}
    truth = {
        "calibration": calib["true_label"].astype(str).to_numpy(),
        "report": report["true_label"].astype(str).to_numpy(),
    }
    rows = []
    for stages in CASCADES:
        for confidence, combine in (("max_proba", False), ("learned", False), ("learned", True)):
            for per_class in (False, True):
                models = [
                    (
                        s,
                        ReplayModel(
                            frame,
                            prediction_column=f"{s}_pred",
                            confidence_column=f"{s}_conf",
                            name=s,
                            price={"per_call": PRICE_PER_CALL[s]},
                        ),
                    )
                    for s in stages
                ]
                cascade = Cascade(
                    models,
                    policy="target_accuracy",
                    target_accuracy=target,
                    per_class=per_class,
                    confidence=confidence,
                    combine=combine,
                    random_state=seed,
                )
                start = time.perf_counter()
                cascade.fit(
                    ids["calibration"], truth["calibration"], X_val=ids["calibration"], y_val=truth["calibration"]
                )
                fit_seconds = time.perf_counter() - start
                routes = cascade.route(ids["report"])
                calibration = cascade.calibration_
                answers = stage_arrays(report, stages)
                weak, strong = float(answers["correct"][:, 0].mean()), float(answers["correct"][:, -1].mean())
                share = float((routes["reached"] == len(stages) - 1).mean())
                rows.append(
                    {
                        "cascade": " > ".join(stages),
                        "thresholds": "per class" if per_class else "single",
                        "confidence": confidence,
                        "combined_answer": (cascade.combination_ or {}).get("used", False) if combine else False,
                        "engine": "datashunt.Cascade",
                        "delta": [np.asarray(t).tolist() for t in cascade.thresholds_],
                        "goal_met_on_calibration": calibration["goal_met"],
                        "calibration_accuracy": calibration["accuracy"],
                        "calibration_cost_ratio": calibration["cost_per_item"]
                        * len(calib)
                        / google_cost["calibration"],
                        "accuracy": float((routes["label"].to_numpy() == truth["report"]).mean()),
                        "cost_ratio": float(routes["cost"].sum() / google_cost["report"]),
                        "large_share": share,
                        "random_routing_accuracy": random_routing_accuracy(share, weak, strong),
                        "fit_seconds": round(fit_seconds, 2),
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tolerance", type=float, default=0.005, help="accuracy Google may lose (0.005 = 0.5 pt)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    command = "python benchmarks/cascade_yelp.py " + " ".join(sys.argv[1:])
    print(command, flush=True)
    table = pd.read_csv(TABLE)
    calib, report = train_test_split(table, test_size=0.5, stratify=table["true_label"], random_state=args.seed)

    google_cal, google_rep = (stage_arrays(t, ("google",)) for t in (calib, report))
    google_cost = float(google_rep["cost"].sum())
    target = float(google_cal["correct"].mean()) - args.tolerance
    rows = []
    for stages in CASCADES:
        for per_class in (False, True):
            cal, rep = stage_arrays(calib, stages), stage_arrays(report, stages)
            thresholds, met = calibrate(cal, target, per_class)
            fitted, tested = evaluate(cal, thresholds), evaluate(rep, thresholds)
            weak, strong = float(rep["correct"][:, 0].mean()), float(rep["correct"][:, -1].mean())
            peers = {}
            if not per_class:  # the curve of every single-threshold setting, traced on the report half
                curve = sweep(rep["confidence"], rep["correct"], rep["cost"], n_grid=60)
                peers = peer_metrics(curve["last_rate"], curve["accuracy"], weak, strong)
            rows.append(
                {
                    "cascade": " > ".join(stages),
                    "thresholds": "per class" if per_class else "single",
                    "delta": [np.asarray(t).tolist() for t in thresholds],
                    "goal_met_on_calibration": met,
                    "calibration_accuracy": fitted["accuracy"],
                    "calibration_cost_ratio": fitted["cost"] / google_cost,
                    "accuracy": tested["accuracy"],
                    "cost_ratio": tested["cost"] / google_cost,
                    "large_share": tested["last_share"],
                    "reach": tested["reach"],
                    "random_routing_accuracy": random_routing_accuracy(tested["last_share"], weak, strong),
                    **peers,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    google_costs = {
        "calibration": float(google_cal["cost"].sum()),
        "report": google_cost,
    }
    rows += engine_rows(table, calib, report, target, google_costs, args.seed)
    eligible = [r for r in rows if r["goal_met_on_calibration"] and r["cascade"].endswith("google")]
    best = min(eligible, key=lambda r: r["calibration_cost_ratio"])
    results = {
        "command": command,
        "seed": args.seed,
        "tolerance": args.tolerance,
        "n_calibration": len(calib),
        "n_report": len(report),
        "google": {"accuracy": float(google_rep["correct"].mean()), "cost_ratio": 1.0},
        "amazon": {
            "accuracy": float(stage_arrays(report, ("amazon",))["correct"].mean()),
            "cost_ratio": PRICE_PER_CALL["amazon"] / PRICE_PER_CALL["google"],
        },
        "cascade": {
            k: best[k]
            for k in (
                "cascade",
                "thresholds",
                "confidence",
                "combined_answer",
                "delta",
                "accuracy",
                "cost_ratio",
                "large_share",
            )
            if k in best
        },
        "all": rows,
    }
    args.out.write_text(json.dumps(results, indent=1))
    print(json.dumps({"google": results["google"], "cascade": results["cascade"]}), flush=True)


if __name__ == "__main__":
    main()
