"""Measuring a ShuntGenerator: each stage alone against Data Shunt, and quality against the share sent on.

Compute only; the CLI and the benchmarks print and store what this returns.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .compare import describe_scoring
from .metrics import get_metric

SHARES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


@dataclass
class GenerationEvaluation:
    """``summary``: one row per system (each stage alone, then Data Shunt) with corpus quality, its
    bootstrap 95% interval, the share of items reaching the last stage, tokens, seconds and cost
    per item; ``routes``: the shunt's record per item; ``curve``: quality when the least confident
    share of items goes from the first stage to the last (the paper's Fig. 3)."""

    metric: str
    summary: pd.DataFrame
    routes: pd.DataFrame
    curve: pd.DataFrame


def compare_generation(
    shunt, X, references, n_bootstrap: int = 1000, seed: int = 0, shares=SHARES
) -> GenerationEvaluation:
    """Each stage alone and the fitted ``shunt`` on ``X`` against ``references``."""
    metric = get_metric(shunt.metric)
    every = shunt.answers_of_every_stage(X)
    routes = shunt.route(X)
    rows = []
    for (name, _), got in zip(shunt.stages_, every):
        rows.append(
            _row(
                f"{name} only",
                got.text,
                references,
                metric,
                n_bootstrap,
                seed,
                last_share=float(name == shunt.stages_[-1][0]),
                tokens=got.completion_tokens,
                seconds=got.seconds,
                cost=got.price,
            )
        )
    reached = routes["reached"].to_numpy()
    seconds = sum(np.where(reached >= s, np.nan_to_num(got.seconds), 0.0) for s, got in enumerate(every))
    rows.append(
        _row(
            "data shunt",
            routes["text"].tolist(),
            references,
            metric,
            n_bootstrap,
            seed,
            last_share=float((reached == len(every) - 1).mean()),
            tokens=routes["completion_tokens"],
            seconds=seconds,
            cost=sum(np.where(reached >= s, got.price, 0.0) for s, got in enumerate(every)),
        )
    )
    return GenerationEvaluation(
        metric.name,
        pd.DataFrame(rows),
        routes,
        quality_by_share(every[0].confidence, every[0].text, every[-1].text, references, metric, shares),
    )


def _row(system, texts, references, metric, n_bootstrap, seed, last_share, tokens, seconds, cost) -> dict:
    low, high = metric.bootstrap(texts, references, n=n_bootstrap, seed=seed) if n_bootstrap else (np.nan, np.nan)
    return {
        "system": system,
        "quality": metric.corpus(texts, references),
        "ci_low": low,
        "ci_high": high,
        "last_share": last_share,
        "completion_tokens": float(np.mean(tokens)),
        "seconds_per_item": float(np.nanmean(seconds)) if np.isfinite(seconds).any() else np.nan,
        "cost_per_item": float(np.mean(cost)),
        "unanswered": int(sum(t is None for t in texts)),
    }


def quality_by_share(confidence, first, last, references, metric, shares=SHARES) -> pd.DataFrame:
    """Corpus quality when the ``share`` least confident items take the last stage's text (items of
    unknown confidence first), for each share.

    Examples
    --------
    >>> from datashunt.eval.metrics import get_metric
    >>> quality_by_share(np.array([0.9, 0.2]), ["a", "x"], ["a", "b"], ["a", "b"], get_metric("exact_match"),
    ...                  shares=(0.0, 0.5)).values.tolist()
    [[0.0, 50.0], [0.5, 100.0]]
    """
    confidence = np.asarray(confidence, dtype=float)
    order = np.argsort(np.nan_to_num(confidence, nan=-np.inf), kind="stable")
    rows = []
    for share in shares:
        stage = np.zeros(len(confidence), int)
        stage[order[: int(round(share * len(confidence)))]] = 1
        texts = [last[i] if s and last[i] is not None else first[i] for i, s in enumerate(stage)]
        rows.append({"share": float(share), "quality": metric.corpus(texts, references)})
    return pd.DataFrame(rows)


def describe_calibration(calibration: dict) -> str:
    """The calibration of a generator shunt in one line.

    Examples
    --------
    >>> describe_calibration({"policy": "match_last", "goal": "chrf >= 53.1000", "goal_met": True, "metric": "chrf",
    ...                       "n_validation": 200, "quality": 53.4, "stage_quality": [40.6, 53.1],
    ...                       "reach": [1.0, 0.62]}).split(": ", 1)
    ['goal chrf >= 53.1000 (met) on 200 validation items',
     'chrf 53.40 (stages alone: 40.60, 53.10), 62.0% sent to the last stage']
    """
    if calibration.get("policy") == "fixed":
        return "thresholds given, not calibrated"
    alone = ", ".join(f"{q:.2f}" for q in calibration["stage_quality"])
    return (
        f"goal {calibration['goal']} ({'met' if calibration['goal_met'] else 'NOT met'}) on "
        f"{calibration['n_validation']} validation items: {calibration['metric']} {calibration['quality']:.2f} "
        f"(stages alone: {alone}), {calibration['reach'][-1]:.1%} sent to the last stage"
    ) + describe_scoring(calibration.get("scoring"))


def write_report(folder, evaluation: GenerationEvaluation | None, shunt, info: dict | None = None):
    """A report folder: ``report.json`` (calibration, and with an evaluation its summary and
    quality-share curve), ``routes.csv`` and ``sweep.csv``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    report = {
        "info": info or {},
        "stages": [name for name, _ in shunt.stages_],
        "thresholds": shunt.thresholds_,
        "calibration": shunt.calibration_,
    }
    if evaluation is not None:
        report["metric"] = evaluation.metric
        report["summary"] = evaluation.summary.to_dict("records")
        report["curve"] = evaluation.curve.to_dict("records")
        evaluation.routes.to_csv(folder / "routes.csv", index=False)
    if shunt.sweep_ is not None:
        shunt.sweep_.to_csv(folder / "sweep.csv", index=False)
    (folder / "report.json").write_text(json.dumps(report, indent=2, default=float))
    return folder
