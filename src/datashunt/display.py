"""What the command line shows: tables of results, where calls go, progress bars."""

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .backends.base import Backend, LargeModel

console = Console()


def faces(model) -> list:
    """The shunts a Data Shunt+ model is made of (fitted where it is), or the model itself."""
    if hasattr(model, "subtasks"):
        return [face for _, face in getattr(model, "subtasks_", model.subtasks)]
    if hasattr(model, "unit"):  # Segments
        return [getattr(model, "shunt_", model.shunt)]
    return [model]


def say_destination(model) -> None:
    """Print where each large model's calls will go, before the first one is made."""
    if faces(model) != [model]:
        for face in faces(model):
            say_destination(face)
        return
    if hasattr(model, "stages"):  # a cascade, or a generator shunt
        stages = model.stages_ if hasattr(model, "stages_") else model.stages
        for name, stage in stages:
            if isinstance(stage, Backend):
                console.print(escape(f"stage {name}: {stage.describe()}"), highlight=False)
        return
    large = model if isinstance(model, LargeModel) else getattr(model, "large_", model.large)
    console.print(escape(f"large model: {large.describe()}"), highlight=False)


def with_progress(shunt, on: bool = True):
    """Progress bars (or, with ``on`` False, none) for the large-model calls and, where it has one,
    the small model's training."""
    for face in faces(shunt):
        face.set_params(progress=on)
        if "small__progress" in face.get_params():
            face.set_params(small__progress=on)
    return shunt


def count_text(value) -> str:
    """A count for a table cell: "-" where there is none."""
    return "-" if value is None or value != value else str(int(value))


def show_groups(per_group, console: Console = console) -> None:
    """Accuracy and large share per group of classes (the paper's Table 2 layout)."""
    table = Table(title="by group of classes", box=box.SIMPLE_HEAD, pad_edge=False)
    measures = [c for c in per_group.columns if c.endswith("_accuracy") or c == "large_rate"]
    for column in ["group", "items"] + [m.replace("_accuracy", "").replace("large_rate", "to large") for m in measures]:
        table.add_column(column, justify="left" if column == "group" else "right", no_wrap=True)
    for row in per_group.to_dict("records"):
        table.add_row(
            str(row["group"]),
            str(row["support"]),
            *[f"{row[m]:.1%}" if m == "large_rate" else f"{row[m]:.4f}" for m in measures],
        )
    console.print(table)


def show_generation(evaluation, title: str, console: Console = console) -> None:
    """Each stage alone and Data Shunt: quality with its bootstrap interval, share sent on, tokens, time."""
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("system", evaluation.metric, "95% interval", "to last", "tokens", "time/item", "cost/item"):
        table.add_column(column, justify="left" if column == "system" else "right", no_wrap=True)
    for row in evaluation.summary.itertuples():
        table.add_row(
            row.system,
            f"{row.quality:.2f}",
            f"{row.ci_low:.2f}-{row.ci_high:.2f}",
            f"{row.last_share:.1%}",
            f"{row.completion_tokens:.1f}",
            "n/a" if row.seconds_per_item != row.seconds_per_item else f"{row.seconds_per_item:.2f} s",
            f"{row.cost_per_item:.5f}",
        )
    console.print(table)


def show_summary(evaluation, title: str, console: Console = console) -> None:
    """Print the paper's Table 1 for one run, in 80 columns: money where the large model has a
    price, and always the large model's compute time (what a free local model costs)."""
    summary = evaluation.summary
    priced = bool((summary["cost"] > 0).any())
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False)
    columns = ["system", "accuracy", "macro-F1", "to large", "calls", "failed", "large time"]
    columns += ["cost"] if priced else []
    for column in columns:
        table.add_column(column, justify="left" if column == "system" else "right", no_wrap=True)
    for row in summary.itertuples():
        cells = [
            row.system,
            f"{row.accuracy:.4f}",
            f"{row.macro_f1:.4f}",
            f"{row.large_rate:.1%}",
            str(row.large_calls),
            str(row.large_failures),
            "n/a" if row.large_seconds != row.large_seconds else f"{row.large_seconds:.1f} s",
        ]
        table.add_row(*cells, *([f"{row.cost:.4f}"] if priced else []))
    console.print(table)
