"""Measuring a shunt against its own parts: small model only, large model only, Data Shunt."""

import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import f1_score

from ..core.routes import ASKED_LARGE, FALLBACK, ROUTES
from ..exceptions import DataError, DatashuntWarning
from ..modalities import as_inputs
from .html import report_html
from .plotting import save_sweep_figure


@dataclass
class Evaluation:
    """``summary``: one row per system; ``per_class``: accuracy by true class; ``routes``: per item;
    ``per_group``: accuracy and large share by group of classes (head / medium / tail), when asked."""

    summary: pd.DataFrame
    per_class: pd.DataFrame
    routes: pd.DataFrame
    per_group: pd.DataFrame | None = None


GROUP_NAMES = ("head", "medium", "tail")


def count_groups(y_train, sizes=None) -> dict:
    """Each class's group by how many training items it has: ``head``, ``medium`` or ``tail``.

    Classes are ranked from most to fewest items (ties by class) and cut into ``sizes`` classes
    per group; by default into thirds, the medium group taking the remainder (10 classes: 3 / 4 / 3).

    Examples
    --------
    >>> count_groups(["a"] * 9 + ["b"] * 5 + ["c"] * 2 + ["d"])
    {'a': 'head', 'b': 'medium', 'c': 'medium', 'd': 'tail'}
    """
    counts = pd.Series(np.asarray(y_train).tolist()).value_counts()
    ranked = sorted(counts.index, key=lambda c: (-counts[c], str(c)))
    if sizes is None:
        third = len(ranked) // 3
        sizes = (third, len(ranked) - 2 * third, third)
    if len(sizes) != 3 or sum(sizes) != len(ranked) or min(sizes) < 0:
        raise DataError(f"group sizes {tuple(sizes)} must be three counts adding up to the {len(ranked)} classes")
    names = [name for name, size in zip(GROUP_NAMES, sizes) for _ in range(size)]
    return dict(zip(ranked, names))


def per_group(per_class: pd.DataFrame, groups: dict) -> pd.DataFrame:
    """Per-class rows pooled into groups: support and the support-weighted accuracies and large share.

    ``groups`` maps a class to its group; classes it leaves out are pooled as ``"other"``.

    Examples
    --------
    >>> rows = pd.DataFrame({"class": ["a", "b", "c"], "support": [10, 10, 20],
    ...                      "small_accuracy": [1.0, 0.5, 0.25], "large_rate": [0.0, 0.5, 1.0]})
    >>> per_group(rows, {"a": "head", "b": "head", "c": "tail"}).to_dict("records")[0]
    {'group': 'head', 'support': 20, 'small_accuracy': 0.75, 'large_rate': 0.25}
    """
    named = {str(k): v for k, v in groups.items()}
    group = per_class["class"].map(lambda c: named.get(str(c), "other"))
    measures = [c for c in per_class.columns if c.endswith("_accuracy") or c == "large_rate"]
    order = list(dict.fromkeys([g for g in GROUP_NAMES if g in set(group)] + sorted(set(group) - set(GROUP_NAMES))))
    rows = []
    for name in order:
        part = per_class[group == name]
        weight = part["support"].to_numpy(dtype=float)
        rows.append(
            {
                "group": name,
                "support": int(weight.sum()),
                **{m: float(np.average(part[m].to_numpy(dtype=float), weights=weight)) for m in measures},
            }
        )
    return pd.DataFrame(rows)


def compare(shunt, X, y, progress: bool = False, groups: dict | None = None) -> Evaluation:
    """Accuracy, macro-F1, large-call rate and cost of small-only, large-only and Data Shunt.

    The large model is asked about every item once (for the large-only row); Data Shunt's own
    calls then come from the cache, and its cost is the uncached price of the items it routed
    (``cost`` in money, ``large_seconds`` in the large model's compute time as first measured).
    Items whose true label the shunt never saw in training count as errors for every system
    and are flagged in ``routes``. Failed large calls count as errors for large-only.
    ``groups`` (class to group, e.g. from :func:`count_groups`) adds ``per_group``.
    """
    batch = as_inputs(X, shunt.modality_)
    inputs, problems = batch.items, batch.problems
    y = np.asarray(y, dtype=object)
    classes = shunt.classes_
    known = np.isin(y, classes)
    if not known.all():
        warnings.warn(
            f"{int((~known).sum())} test items have labels never seen in training "
            f"{sorted(set(y[~known].tolist()), key=str)[:5]}; they count as errors",
            DatashuntWarning,
            stacklevel=2,
        )
    valid = np.ones(len(y), bool) if problems is None else np.array([p is None for p in problems])
    if not valid.any():
        shown = "; ".join(f"row {i}: {p}" for i, p in enumerate(problems[:3]))
        raise DataError(f"none of the {len(y)} test items can be evaluated: {shown}")
    idx = np.flatnonzero(valid)

    start = time.perf_counter()
    small_pred = np.full(len(y), None, dtype=object)
    small_pred[idx] = classes[shunt.small_.predict_proba(inputs[idx]).argmax(axis=1)]
    small_seconds = time.perf_counter() - start

    start = time.perf_counter()
    large = shunt.large_.predict_proba(inputs[idx], shunt.labels_, progress=progress, modality=shunt.modality_)
    large_seconds = time.perf_counter() - start
    large_pred = np.full(len(y), None, dtype=object)
    large_pred[idx[large.ok]] = classes[large.proba[large.ok].argmax(axis=1)]
    price = np.zeros(len(y))
    price[idx] = shunt.large_.price_of(large.prompt_tokens)
    call_seconds = np.zeros(len(y))
    call_seconds[idx] = large.call_seconds

    start = time.perf_counter()
    routes = shunt.route(inputs)
    shunt_seconds = time.perf_counter() - start
    routed = routes["route"].isin(ASKED_LARGE).to_numpy()
    routes.insert(0, "true_label", y)
    routes.insert(1, "small_label", small_pred)
    routes.insert(2, "large_label", large_pred)
    routes.loc[~known, "flag"] = "label unseen in training"

    def row(name, pred, to_large, seconds, failures):
        return _system_row(
            name,
            pred,
            y,
            classes,
            to_large,
            float(price[to_large].sum()),
            float(call_seconds[to_large].sum()),
            failures,
            seconds,
        )

    summary = pd.DataFrame(
        [
            row("small only", small_pred, np.zeros(len(y), bool), small_seconds, 0),
            row("large only", large_pred, valid, large_seconds, int((~large.ok).sum())),
            row(
                "data shunt",
                routes["label"].to_numpy(),
                routed,
                shunt_seconds,
                int((routes["route"] == FALLBACK).sum()),
            ),
        ]
    )
    per_class = pd.DataFrame(
        [
            {
                "class": c,
                "support": int((y == c).sum()),
                "small_accuracy": float(np.mean(small_pred[y == c] == c)),
                "large_accuracy": float(np.mean(large_pred[y == c] == c)),
                "shunt_accuracy": float(np.mean(routes["label"].to_numpy()[y == c] == c)),
                "large_rate": float(routed[y == c].mean()),
            }
            for c in classes
            if (y == c).any()
        ]
    )
    return Evaluation(summary, per_class, routes, None if groups is None else per_group(per_class, groups))


def compare_cascade(cascade, X, y, progress: bool = False, groups: dict | None = None) -> Evaluation:
    """Accuracy, macro-F1, cost and the share reaching the last stage: each stage alone, then the cascade.

    Every stage answers every item once (its row); the cascade's own calls then come from the
    cache, and its cost is the uncached price of every stage each item reached. ``groups`` as
    for :func:`compare`.
    """
    batch = as_inputs(X, cascade.modality_)
    inputs, problems = batch.items, batch.problems
    y = np.asarray(y, dtype=object)
    valid = np.ones(len(y), bool) if problems is None else np.array([p is None for p in problems])
    if not valid.any():
        raise DataError(
            f"none of the {len(y)} test items can be evaluated: "
            + "; ".join(f"row {i}: {p}" for i, p in enumerate(problems[:3]))
        )
    idx, last = np.flatnonzero(valid), len(cascade.stages_) - 1
    classes = cascade.classes_
    rows, price, preds = [], np.zeros((len(y), last + 1)), {}
    for s, name in enumerate(cascade.stage_names()):
        start = time.perf_counter()
        got = cascade.ask_stage(s, inputs[idx])
        pred = np.full(len(y), None, dtype=object)
        pred[idx[got.ok]] = classes[got.proba[got.ok].argmax(axis=1)]
        price[idx, s] = got.price
        preds[f"{name} only"] = pred
        rows.append(
            _system_row(
                f"{name} only",
                pred,
                y,
                classes,
                valid & (s == last),
                float(price[:, s].sum()),
                float("nan"),
                int((~got.ok).sum()),
                time.perf_counter() - start,
            )
        )
    start = time.perf_counter()
    routes = cascade.route(inputs)
    reached = routes["reached"].to_numpy()
    paid = (np.arange(last + 1)[None, :] <= reached[:, None]) * price
    rows.append(
        _system_row(
            "cascade",
            routes["label"].to_numpy(),
            y,
            classes,
            reached == last,
            float(paid.sum()),
            float("nan"),
            int((routes["route"] == FALLBACK).sum()),
            time.perf_counter() - start,
        )
    )
    routes.insert(0, "true_label", y)
    preds["cascade"] = routes["label"].to_numpy()
    per_class = pd.DataFrame(
        [
            {
                "class": c,
                "support": int((y == c).sum()),
                **{f"{system}_accuracy": float(np.mean(p[y == c] == c)) for system, p in preds.items()},
            }
            for c in classes
            if (y == c).any()
        ]
    )
    return Evaluation(pd.DataFrame(rows), per_class, routes, None if groups is None else per_group(per_class, groups))


def _system_row(name, pred, y, classes, to_large, cost, large_seconds, failures, seconds) -> dict:
    """One system's row of a summary; ``to_large`` marks the items it sent to the large (last) model."""
    correct = np.array([p is not None and p == t for p, t in zip(pred, y)])
    answered = np.array([p is not None for p in pred])
    return {
        "system": name,
        "accuracy": correct.mean(),
        "macro_f1": f1_score(
            y.astype(str),
            np.where(answered, pred, "<none>").astype(str),
            labels=[str(c) for c in classes],
            average="macro",
            zero_division=0,
        ),
        "large_rate": to_large.mean(),
        "large_calls": int(to_large.sum()),
        "cost": cost,
        "large_seconds": large_seconds,
        "unanswered": int((~answered).sum()),
        "large_failures": failures,
        "seconds": seconds,
    }


def write_report(folder, evaluation: Evaluation | None, shunt, info: dict | None = None, texts=None) -> Path:
    """A report folder: ``report.json``, ``sweep.csv``, ``routes.csv``, ``sweep.png`` (when
    matplotlib is there) and ``report.html`` (all of it in one page; ``texts``, the evaluated items
    as text, show beside the sample of routed items)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    report = {
        "info": info or {},
        "stages": shunt.stage_names(),
        "thresholds": [np.asarray(t).tolist() for t in shunt.thresholds_],
        "calibration": shunt.calibration_,
        "classes": [str(c) for c in shunt.classes_],
    }
    if getattr(shunt, "class_report_", None) is not None:  # a shunt: what its collaborations gave
        report["collaboration"] = collaboration(shunt, evaluation)
    if evaluation is not None:
        report["summary"] = evaluation.summary.to_dict("records")
        report["per_class"] = evaluation.per_class.astype({"class": str}).to_dict("records")
        if evaluation.per_group is not None:
            report["per_group"] = evaluation.per_group.to_dict("records")
        evaluation.routes.to_csv(folder / "routes.csv", index=False)
    if shunt.sweep_ is not None:
        shunt.sweep_.to_csv(folder / "sweep.csv", index=False)
    if shunt.sweep_ is not None and "threshold_2" not in shunt.sweep_:  # one threshold: a curve to draw
        try:
            save_sweep_figure(shunt.sweep_, folder / "sweep.png", threshold=shunt.thresholds_[0])
            report["figure"] = "sweep.png"
        except ImportError:
            report["figure"] = None
    text = json.dumps(report, indent=2, default=_jsonable)
    (folder / "report.json").write_text(text)
    routes = None
    if evaluation is not None:
        routes = evaluation.routes if texts is None else evaluation.routes.assign(text=list(texts))
    figure = folder / "sweep.png"
    page = report_html(
        json.loads(text),
        routes,
        figure.read_bytes() if report.get("figure") and figure.is_file() else None,
        title=f"Data Shunt report: {(info or {}).get('command', folder.name)}",
    )
    (folder / "report.html").write_text(page, encoding="utf-8")
    return folder


def collaboration(shunt, evaluation: Evaluation | None = None) -> dict:
    """Which collaborations the shunt used and what each contributed on the evaluated items.

    Prompt Pruning: the mode and the classes the small model excels in (from validation).
    2CD: what the learnable model was taught, and the share of items it answered.
    """
    report = shunt.class_report_
    excelled = report.loc[report["excels"], "class"].tolist() if report is not None else []
    out = {
        "prompt_pruning": shunt.prompt_pruning,
        "excelled_classes": [str(c) for c in excelled],
        "class_report": report.astype({"class": str}).to_dict("records") if report is not None else None,
        "distillation": getattr(shunt, "distillation_", None),
    }
    if evaluation is not None:
        routes = evaluation.routes["route"]
        out["answered_by"] = {name: float((routes == name).mean()) for name in ROUTES}
    return out


def describe_collaboration(info: dict) -> str:
    """One line for a terminal."""
    pruning = info["prompt_pruning"] or "off"
    parts = [f"Prompt Pruning: {pruning}"]
    if info["prompt_pruning"]:
        parts[0] += f" (small model excels in: {', '.join(info['excelled_classes']) or 'no class'})"
    parts.append(
        "2CD: "
        + (
            "off"
            if info["distillation"] is None
            else f"{info['distillation']['n_from_large']} items from the large model, "
            f"{info['distillation']['n_from_small']} from the small one"
        )
    )
    if "answered_by" in info:
        parts.append("answered by " + ", ".join(f"{k} {v:.1%}" for k, v in info["answered_by"].items() if v))
    return "; ".join(parts)


def describe_calibration(calibration: dict) -> str:
    """The promise behind δ and the validation figures, in one line for a terminal.

    Examples
    --------
    >>> describe_calibration({"goal": "accuracy >= last stage's accuracy - 0.01 with probability >= 0.9 "
    ...                       "(Learn then Test)", "goal_met": True, "n_validation": 1000, "accuracy": 0.91,
    ...                       "large_accuracy": 0.9, "large_rate": 0.43}).split("; ")
    ["promise: accuracy >= last stage's accuracy - 0.01 with probability >= 0.9 (Learn then Test), certified",
     'on 1000 validation items: accuracy 0.9100 (large only 0.9000), 43.0% sent to the large model']
    >>> describe_calibration({"goal": "accuracy >= last stage's accuracy - 0.01 with probability >= 0.9 "
    ...                       "(Learn then Test)", "goal_met": True, "n_validation": 2000, "accuracy": None,
    ...                       "large_accuracy": None, "small_accuracy": 0.88, "large_rate": 0.47,
    ...                       "certification": "stratified", "large_calls": {"asked": 400}}).split("; ")[1]
    'on 2000 validation items, 400 large calls: small only 0.8800, 47.0% sent to the large model'
    """
    if calibration.get("policy") == "fixed":
        return "given, not calibrated: no promise"
    status = "certified" if calibration["goal_met"] else "NOT met: see the warning above"
    if "with probability" not in calibration["goal"]:
        status = "met on validation (point estimate, no guarantee)" if calibration["goal_met"] else status
    calls = calibration.get("large_calls") or {}
    spent = f", {calls['asked']} large calls" if calibration.get("certification") == "stratified" and calls else ""
    line = f"promise: {calibration['goal']}, {status}; on {calibration['n_validation']} validation items{spent}: "
    if "stage_accuracy" in calibration:  # a cascade
        first, last = calibration["stage_accuracy"][0], calibration["stage_accuracy"][-1]
        line += (
            f"first stage only {_figure(first)}"
            if calibration["accuracy"] is None
            else f"accuracy {calibration['accuracy']:.4f} (last stage only {_figure(last)})"
        )
        line += f", {calibration['reach'][-1]:.1%} sent to the last stage" if calibration.get("reach") else ""
        return line + describe_scoring(calibration.get("scoring"))
    if calibration["accuracy"] is None:  # estimated from a sample that cannot tell: say what the labels show
        line += f"small only {_figure(calibration.get('small_accuracy'))}"
    else:
        line += f"accuracy {calibration['accuracy']:.4f}"
        if "large_accuracy" in calibration:
            line += f" (large only {_figure(calibration['large_accuracy'])})"
    line += f", {calibration['large_rate']:.1%} sent to the large model" if "large_rate" in calibration else ""
    return line + describe_scoring(calibration.get("scoring"))


def describe_scoring(scoring: dict | None) -> str:
    """The routing score a learned or ``"auto"`` confidence chose, with both scores' validation
    figures ("" where none was learned).

    Examples
    --------
    >>> describe_scoring({"used": "max_proba", "ranking": "roc_auc",
    ...                   "validation": {"max_proba": 0.83, "learned": 0.786}, "difference_se": 0.008})
    '; routing score: max_proba (roc_auc on validation, out of fold: max_proba 0.830, learned 0.786)'
    """
    if not scoring:
        return ""
    if not scoring.get("validation"):
        return f"; routing score: {scoring['used']} ({scoring.get('reason', 'the learned one was not compared')})"
    figures = ", ".join(f"{name} {value:.3f}" for name, value in scoring["validation"].items())
    return f"; routing score: {scoring['used']} ({scoring['ranking']} on validation, out of fold: {figures})"


def _figure(value) -> str:
    """An accuracy to four places, or "unknown" where it could not be estimated."""
    return "unknown" if value is None else f"{value:.4f}"


def _jsonable(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return None if np.isnan(value) else float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return str(value)


def peer_metrics(share, accuracy, weak: float, strong: float) -> dict:
    """RouteLLM's measures of a router's cost-quality curve, to compare with other routers.

    ``share`` and ``accuracy`` trace the curve (for instance a sweep's ``large_rate`` or
    ``last_rate`` and ``accuracy``); ``weak`` and ``strong`` are the cheapest and the strongest
    model's accuracy alone. PGR, the performance gap recovered, is ``(accuracy - weak) / (strong -
    weak)``; at each share the curve takes the best accuracy reachable with at most that share.
    ``apgr`` is the area under PGR over the share (0.5 for random routing), ``cpt_50`` and ``cpt_80``
    the least share of calls to the strong model recovering 50% and 80% of the gap (NaN if never).

    Examples
    --------
    >>> peer_metrics([0.0, 0.2, 1.0], [0.80, 0.88, 0.90], weak=0.80, strong=0.90)
    {'apgr': 0.8, 'cpt_50': 0.2, 'cpt_80': 0.2}
    """
    share = np.asarray(share, dtype=float)
    accuracy = np.asarray(accuracy, dtype=float)
    if strong <= weak:
        return {"apgr": float("nan"), "cpt_50": float("nan"), "cpt_80": float("nan")}
    order = np.argsort(share, kind="stable")
    share, pgr = share[order], np.maximum.accumulate((accuracy[order] - weak) / (strong - weak))
    apgr = float(np.sum(np.diff(share) * (pgr[1:] + pgr[:-1]) / 2))

    def cpt(level):
        reached = np.flatnonzero(pgr >= level - 1e-12)
        return float(share[reached[0]]) if len(reached) else float("nan")

    return {"apgr": round(apgr, 10), "cpt_50": cpt(0.5), "cpt_80": cpt(0.8)}


def random_routing_accuracy(share: float, weak: float, strong: float) -> float:
    """Expected accuracy when a random ``share`` of items goes to the strong model (the baseline).

    Examples
    --------
    >>> random_routing_accuracy(0.3, weak=0.8, strong=0.9)
    0.83
    """
    return round(weak + share * (strong - weak), 12)
