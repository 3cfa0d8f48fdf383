"""Judging Data Shunt+ on labelled data: :class:`~datashunt.Subtasks` (items with several labels)
and :class:`~datashunt.Segments` (documents made of parts), each as routed, with what the large
model was asked. Computing only; :func:`write_report` writes the figures and the route table.
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.routes import FALLBACK
from .metrics import get_metric


def evaluate_subtasks(model, X, Y) -> tuple[dict, pd.DataFrame]:
    """Exact match (every subtask right), each subtask's accuracy and share sent to its last stage
    (the large model), the large calls, tokens and cost per item; and the route table.

    Examples
    --------
    See :class:`~datashunt.Subtasks`; ``datashunt evaluate`` runs it on a ``[[subtasks]]`` config.
    """
    names = [name for name, _ in model.subtasks_]
    Y = model._labels(Y, names, "evaluation", len(X))
    table = model.route(X)
    right = np.column_stack([table[name].to_numpy(dtype=object) == Y[name].to_numpy(dtype=object) for name in names])
    summary = {
        "n": len(table),
        "exact_match": float(right.all(axis=1).mean()) if len(table) else float("nan"),
        "subtasks": {
            name: {
                "accuracy": float(right[:, i].mean()),
                "large_share": float(table[f"route_{name}"].isin([face.stage_names()[-1], FALLBACK]).mean()),
                "threshold": _threshold(face),
            }
            for i, (name, face) in enumerate(model.subtasks_)
        },
    }
    tokens = float((table["prompt_tokens"] + table["completion_tokens"]).mean()) if len(table) else 0.0
    return summary | _spending(table) | {"tokens_per_item": tokens}, table


def evaluate_segments(model, X, references, n_bootstrap: int = 1000, seed: int = 0) -> tuple[dict, pd.DataFrame]:
    """Quality of the joined texts against whole-document references (the shunt's metric, with a
    bootstrap 95% interval), the share of parts the large model answered, its calls and tokens per
    document; and the route table."""
    metric = get_metric(model.shunt_.metric)
    table = model.route(X)
    texts, references = table["text"].tolist(), list(references)
    low, high = metric.bootstrap(texts, references, n=n_bootstrap, seed=seed)
    parts = int(table["parts"].sum())
    summary = {
        "n": len(table),
        "metric": metric.name,
        "quality": metric.corpus(texts, references),
        "ci95": [low, high],
        "large_share_of_parts": float(table["large_parts"].sum() / parts) if parts else 0.0,
        "held_back_share_of_parts": float(table["held_back"].sum() / parts) if parts else 0.0,
        "large_tokens_per_item": float((table["large_prompt_tokens"] + table["large_completion_tokens"]).mean()),
        "thresholds": model.shunt_.thresholds_,
        "alignment": model.alignment_,
    }
    return summary | _spending(table), table


def _spending(table: pd.DataFrame) -> dict:
    return {
        "items_asking_large": float((table["large_calls"] > 0).mean()) if len(table) else 0.0,
        "large_calls_per_item": float(table["large_calls"].mean()) if len(table) else 0.0,
        "cost": float(table["cost"].sum()),
        "flagged": int(table["flag"].notna().sum()),
    }


def _threshold(face):
    threshold = getattr(face, "threshold_", None)
    return face.thresholds_ if threshold is None else np.asarray(threshold).tolist()


def write_report(folder, summary: dict | None, model, info: dict | None = None, routes=None) -> Path:
    """``report.json`` (the summary, with each part's calibration) and ``routes.csv`` in ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    faces = getattr(model, "subtasks_", None) or [("segments", model.shunt_)]
    report = {
        "info": info or {},
        "kind": type(model).__name__,
        "calibration": {name: face.calibration_ for name, face in faces},
        "summary": summary,
    }
    if routes is not None:
        routes.to_csv(folder / "routes.csv", index=False)
    (folder / "report.json").write_text(json.dumps(report, indent=2, default=_plain))
    return folder


def _plain(value):
    return value.tolist() if isinstance(value, np.ndarray) else float(value)


def describe_plus(model, summary: dict | None = None) -> str:
    """Each part's calibration in words, then (with a ``summary``) what evaluation found."""
    from .compare import describe_calibration  # noqa: PLC0415 (compare and generation import plotting helpers)
    from .generation import describe_calibration as describe_generation  # noqa: PLC0415

    lines = []
    if hasattr(model, "subtasks_"):
        for name, face in model.subtasks_:
            lines.append(
                f"{name}: δ = {np.round(_threshold(face), 4).tolist()}; {describe_calibration(face.calibration_)}"
            )
        if summary:
            each = ", ".join(
                f"{name} {s['accuracy']:.4f} ({s['large_share']:.1%} sent)" for name, s in summary["subtasks"].items()
            )
            lines.append(
                f"exact match {summary['exact_match']:.4f} on {summary['n']} items; {each}; "
                f"{summary['items_asking_large']:.1%} of items asked the large model"
            )
    else:
        shunt, aligned = model.shunt_, model.alignment_
        lines.append(
            f"parts: δ = {np.round(shunt.thresholds_, 4).tolist()}; {describe_generation(shunt.calibration_)}; "
            f"documents cut alike: training {aligned['training']['aligned']}/{aligned['training']['documents']}, "
            f"validation {aligned['validation']['aligned']}/{aligned['validation']['documents']}"
        )
        if summary:
            low, high = summary["ci95"]
            lines.append(
                f"{summary['metric']} {summary['quality']:.2f} (95% CI {low:.2f}-{high:.2f}) on {summary['n']} "
                f"documents; the large model answered {summary['large_share_of_parts']:.1%} of the parts, "
                f"{summary['large_calls_per_item']:.2f} calls and {summary['large_tokens_per_item']:.0f} tokens "
                "per document"
                + (
                    f"; the budget kept {summary['held_back_share_of_parts']:.1%} of the parts on the small side"
                    if summary.get("held_back_share_of_parts")
                    else ""
                )
            )
    return "\n".join(lines)
