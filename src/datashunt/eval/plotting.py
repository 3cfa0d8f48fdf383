"""Figures. The only module that imports matplotlib; functions take data and an axes."""

import numpy as np
import pandas as pd

from ..exceptions import require


def plot_sweep(sweep: pd.DataFrame, ax=None, threshold: float | None = None, label: str = "Data Shunt"):
    """The paper's Figure 3: accuracy (solid) and large-call rate (dotted) against δ, from a
    two-stage :func:`~datashunt.core.calibration.sweep`.

    Points where the shunt is at least as accurate as the large model alone are drawn bold; the
    large model's own accuracy is a dashed line and the chosen δ a vertical line.
    Returns the axes (the rate axis is ``ax.right_ax``).

    Examples
    --------
    >>> from datashunt.core.calibration import sweep
    >>> table = sweep(np.array([0.6, 0.7, 0.9]), np.array([[0, 1], [1, 1], [1, 0]], bool))
    >>> ax = plot_sweep(table, threshold=0.65)
    """
    plt = require("matplotlib.pyplot", "plot")
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4))
    finite = sweep[np.isfinite(sweep["threshold_1"])]
    large_acc = float(sweep["accuracy"].iloc[-1])
    if np.isfinite(large_acc):
        ax.plot(finite["threshold_1"], finite["accuracy"], "-", color="C0", label=f"{label} accuracy")
        above = finite[finite["accuracy"] >= large_acc]
        ax.plot(above["threshold_1"], above["accuracy"], "o", color="C0", markersize=3, label="≥ large model")
        ax.axhline(large_acc, color="C3", linestyle="--", linewidth=1, label=f"large only ({large_acc:.3f})")
        ax.set_ylabel("accuracy")
    else:  # estimated from a sample of large answers: only the gain over the large model is known
        known = finite[np.isfinite(finite["gain"])]
        ax.plot(known["threshold_1"], known["gain"], "-", color="C0", label=f"{label} accuracy − large model's (est.)")
        ax.axhline(0.0, color="C3", linestyle="--", linewidth=1, label="large only")
        ax.set_ylabel("accuracy minus the large model's")
    if threshold is not None and np.isfinite(threshold):
        ax.axvline(threshold, color="grey", linewidth=1, label=f"chosen δ = {threshold:.3f}")
    ax.set_xlabel("threshold δ (small-model confidence)")
    right = ax.twinx()
    right.plot(finite["threshold_1"], finite["last_rate"], ":", color="C1", label="share sent to large model")
    right.set_ylabel("share sent to the large model")
    right.set_ylim(0, 1)
    handles = ax.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    ax.legend(handles=handles, loc="lower left", fontsize=8)
    ax.right_ax = right
    return ax


def save_sweep_figure(sweep: pd.DataFrame, path, threshold: float | None = None) -> None:
    """Draw :func:`plot_sweep` into a PNG file, leaving the user's plotting backend and figures alone.

    The figure is built without pyplot (no window, no global state), so this works headless and
    inside a notebook alike.
    """
    figure = require("matplotlib.figure", "plot")
    fig = figure.Figure(figsize=(7, 4))
    plot_sweep(sweep, ax=fig.add_subplot(), threshold=threshold)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
