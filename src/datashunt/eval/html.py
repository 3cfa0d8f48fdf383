"""A report as one self-contained HTML page: the promise, the comparison, per class, the sweep figure
and a sample of routed items with both models' answers. No script, no external resource: it opens
offline in any browser and can be mailed as one file."""

import base64
import html

import numpy as np
import pandas as pd

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 72rem; padding: 0 1rem; color: #222; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.15rem; margin-top: 2rem; }
table { border-collapse: collapse; margin: .5rem 0; } caption { text-align: left; color: #555; }
th, td { padding: .25rem .7rem; border-bottom: 1px solid #ddd; text-align: right; vertical-align: top; }
th:first-child, td:first-child, td.text { text-align: left; }
td.text { max-width: 34rem; }
tr.best td { font-weight: 600; }
.promise { background: #f3f7fb; border-left: 4px solid #2b6cb0; padding: .6rem 1rem; }
.missed { border-left-color: #c53030; background: #fdf2f2; }
img { max-width: 100%; }
.route-small, .route-learnable { color: #2f855a; } .route-large { color: #2b6cb0; }
.route-fallback, .route-invalid { color: #c53030; }
"""

SAMPLE_SIZE = 24


def report_html(
    report: dict,
    routes: pd.DataFrame | None = None,
    figure_png: bytes | None = None,
    title: str = "Data Shunt report",
    sample_size: int = SAMPLE_SIZE,
    random_state: int = 0,
) -> str:
    """The page for ``report`` (what :func:`~datashunt.eval.compare.write_report` writes to
    ``report.json``), ``routes`` (per item, with ``text``, ``true_label``, ``small_label`` and
    ``large_label`` where known) and the sweep figure as PNG bytes.

    The sample of routed items is drawn at random with ``random_state``, half from those the
    large model answered, so both routes show.

    Examples
    --------
    >>> page = report_html({"info": {"command": "datashunt demo"}, "calibration": {"policy": "fixed"}})
    >>> page.startswith("<!DOCTYPE html>") and "<script" not in page
    True
    """
    from .compare import describe_calibration  # noqa: PLC0415 (cycle: eval.compare imports eval.html)

    calibration = report.get("calibration") or {}
    parts = [f"<h1>{_e(title)}</h1>", _info(report.get("info") or {})]
    if calibration:
        missed = calibration.get("policy") != "fixed" and not calibration.get("goal_met", True)
        parts.append(
            f'<p class="promise{" missed" if missed else ""}">{_e(describe_calibration(calibration))}'
            f"{_thresholds(report.get('thresholds'))}</p>"
        )
    if report.get("summary"):
        parts.append(_table(pd.DataFrame(report["summary"]), "Held-out comparison", SUMMARY_COLUMNS, best="accuracy"))
    if report.get("per_class"):
        parts.append(_table(pd.DataFrame(report["per_class"]), "Accuracy by true class", PER_CLASS_COLUMNS))
    if figure_png:
        data = base64.b64encode(figure_png).decode("ascii")
        parts.append(
            "<h2>Accuracy and share sent against δ (validation)</h2>"
            f'<img alt="accuracy and share sent to the large model against the threshold" '
            f'src="data:image/png;base64,{data}">'
        )
    if routes is not None and len(routes):
        parts.append(_sample(routes, sample_size, random_state))
    body = "\n".join(parts)
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
        f"<style>{STYLE}</style></head>\n<body>\n{body}\n</body></html>\n"
    )


#: column: (heading, format)
SUMMARY_COLUMNS = {
    "system": ("system", "{}"),
    "accuracy": ("accuracy", "{:.4f}"),
    "macro_f1": ("macro-F1", "{:.4f}"),
    "large_rate": ("sent to large", "{:.1%}"),
    "large_calls": ("large calls", "{:d}"),
    "large_failures": ("failed", "{:d}"),
    "large_seconds": ("large time (s)", "{:.1f}"),
    "cost": ("cost", "{:.4f}"),
}
PER_CLASS_COLUMNS = {
    "class": ("class", "{}"),
    "support": ("items", "{:d}"),
    "small_accuracy": ("small only", "{:.4f}"),
    "large_accuracy": ("large only", "{:.4f}"),
    "shunt_accuracy": ("data shunt", "{:.4f}"),
    "large_rate": ("sent to large", "{:.1%}"),
}
SAMPLE_COLUMNS = {
    "text": "item",
    "true_label": "truth",
    "route": "route",
    "small_label": "small model",
    "confidence_small": "its confidence",
    "large_label": "large model",
    "label": "answer",
}


def _info(info: dict) -> str:
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in info.items())
    return f"<table><caption>Run</caption>{rows}</table>" if rows else ""


def _thresholds(thresholds) -> str:
    """Each stage's δ (a number, or one per class)."""
    if not thresholds:
        return ""

    def shown(t):
        if isinstance(t, list):
            return "[" + ", ".join(shown(v) for v in t) + "]"
        return f"{t:.4f}" if t is not None and np.isfinite(t) else str(t)

    return f"<br>δ = {_e(', '.join(shown(t) for t in thresholds))}"


def _table(frame: pd.DataFrame, caption: str, columns: dict, best: str | None = None) -> str:
    shown = [c for c in columns if c in frame.columns]
    head = "".join(f"<th>{_e(columns[c][0])}</th>" for c in shown)
    top = frame[best].max() if best in frame.columns else None
    rows = []
    for record in frame.to_dict("records"):
        cells = "".join(f"<td>{_e(_format(record[c], columns[c][1]))}</td>" for c in shown)
        mark = ' class="best"' if top is not None and record[best] == top else ""
        rows.append(f"<tr{mark}>{cells}</tr>")
    return f"<h2>{_e(caption)}</h2><table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _sample(routes: pd.DataFrame, size: int, random_state: int) -> str:
    rng = np.random.default_rng(random_state)
    large = np.flatnonzero(routes["route"].isin(["large", "fallback"]).to_numpy())
    other = np.setdiff1d(np.arange(len(routes)), large)
    take = min(len(large), size // 2)
    picked = np.r_[
        rng.choice(large, take, replace=False), rng.choice(other, min(len(other), size - take), replace=False)
    ]
    sample = routes.iloc[np.sort(picked)]
    shown = [c for c in SAMPLE_COLUMNS if c in sample.columns]
    head = "".join(f"<th>{_e(SAMPLE_COLUMNS[c])}</th>" for c in shown)
    rows = []
    for record in sample.to_dict("records"):
        cells = []
        for c in shown:
            value = record[c]
            if c == "confidence_small":
                cells.append(f"<td>{_e(_format(value, '{:.3f}'))}</td>")
            elif c == "route":
                cells.append(f'<td class="route-{_e(value)}">{_e(value)}</td>')
            else:
                cells.append(f'<td class="text">{_e(_format(value, "{}"))}</td>')
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return (
        f"<h2>A sample of routed items ({len(sample)} of {len(routes)})</h2><table><thead><tr>{head}</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _format(value, spec: str) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "—"
    try:
        return spec.format(int(value) if spec == "{:d}" else value)
    except (TypeError, ValueError):
        return str(value)


def _e(value) -> str:
    return html.escape(str(value), quote=True)
