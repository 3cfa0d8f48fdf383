"""Markdown tables (pasted into benchmarks/README.md) and figures from the committed results.

    .venv/bin/python benchmarks/tables.py
"""

import json
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def core_tables(result: dict) -> str:
    lines = [f"`{result['command']}` (seed {result['seed']}; train {result['n_train']}, validation "
             f"{result['n_validation']}, test {result['n_test']}; large model {result['large']})", "",
             "| small model | small only | large only | Data Shunt | sent to large (test) | δ | sent to large (validation) "
             "| fit + calibration (s) |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in result["small_models"].items():
        rows = {row["system"]: row for row in r["summary"]}
        lines.append(f"| {name} | {rows['small only']['accuracy']:.4f} | {rows['large only']['accuracy']:.4f} | "
                     f"{rows['data shunt']['accuracy']:.4f} | {rows['data shunt']['large_rate']:.1%} | "
                     f"{r['threshold']:.4f} | {r['calibration']['large_rate']:.1%} | {r['fit_seconds']:.0f} |")
    lines += ["", "| small model | small path, direct `predict_proba` (items/s) | through the shunt (items/s) | overhead |",
              "|---|---|---|---|"]
    for name, r in result["small_models"].items():
        o = r["routing_overhead"]
        lines.append(f"| {name} | {o['direct_items_per_s']:,.0f} | {o['shunt_items_per_s']:,.0f} | "
                     f"{o['overhead']:+.1%} |")
    speed = result.get("large_call_speed")
    if speed:
        s = speed["seconds_per_call"]
        lines += ["", f"Large calls ({speed['items']} test sentences, no cache): "
                  f"{s['without_prefix_reuse']:.3f} s each without reusing the shared prompt prefix, "
                  f"{s['with_prefix_reuse']:.3f} s with it."]
    return "\n".join(lines)


def sweep_table(result: dict, name: str, every: float = 0.1) -> str:
    """The validation sweep at a few large-call rates, for one small model."""
    sweep = result["small_models"][name]["validation_sweep"]
    lines = [f"| sent to large | accuracy ({name}, validation) | δ |", "|---|---|---|"]
    target = 0.0
    for rate, acc, delta in zip(sweep["large_rate"], sweep["accuracy"], sweep["threshold"]):
        if rate >= target - 1e-9:
            lines.append(f"| {rate:.0%} | {acc:.4f} | {'-' if delta is None else f'{delta:.4f}'} |")
            target += every
    return "\n".join(lines)


def core_figure(result: dict, path: Path) -> None:
    """The paper's Figure 3 on the test split: one panel per small model (δ was chosen on validation)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import pandas as pd

    from datashunt.plotting import plot_sweep

    names = list(result["small_models"])
    cols = min(2, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.5 * cols, 4 * rows), squeeze=False)
    for ax, name in zip(axes.ravel(), names):
        r = result["small_models"][name]
        sweep = pd.DataFrame(r["test_sweep_for_figure_only"]).astype({"threshold": float}).fillna(
            {"threshold": np.inf})
        plot_sweep(sweep, ax=ax, threshold=r["threshold"], label=name)
        ax.set_title(f"{name} + {result['large']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    core = RESULTS / "core.json"
    if core.is_file():
        result = json.loads(core.read_text())
        print(core_tables(result))
        for name in result["small_models"]:
            print()
            print(sweep_table(result, name))
        core_figure(result, RESULTS / "core_sweep.png")


if __name__ == "__main__":
    main()
