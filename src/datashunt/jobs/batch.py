"""Batch runs that survive: a file of any size routed a chunk at a time, resumable after a kill.

Each chunk is routed by the fitted model (:meth:`route` of a shunt, cascade or generator), its
rows appended to the output and flushed, and only then is the run's state file (beside the
output, written atomically) moved forward. Killed at any moment, the next run with the same
input, model and output truncates the output to what the state file vouches for and goes on from
there: no row lost, none written twice. Large-model answers are committed to the call cache one by
one as they arrive, so the chunk that was being routed at the kill is asked again only for the
calls that were in flight then (at most the backend's concurrency); the rest come from the cache
at no cost.
"""

import hashlib
import json
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..exceptions import DataError
from .tables import ChunkReader, ChunkWriter


@dataclass
class RunState:
    """What a run has finished: rows done, output size at that point, cost paid, routes taken."""

    key: str
    rows_done: int = 0
    output_size: int = 0
    cost: float = 0.0
    routes: dict = field(default_factory=dict)
    largest_chunk_cost: float = 0.0
    seconds: float = 0.0


@dataclass
class Progress:
    """Handed to the ``report`` callback after each chunk (and once before the first)."""

    rows_done: int
    cost: float
    routes: dict
    position: int  # bytes (text files) or rows (Parquet) read so far
    total: int
    resumed_from: int
    stopped: str | None = None  # "budget" when --max-cost ended the run early

    @property
    def large_share(self) -> float:
        asked = sum(n for route, n in self.routes.items() if route in ("large", "fallback"))
        return asked / self.rows_done if self.rows_done else 0.0


def state_path(output) -> Path:
    """Where the state of the run writing ``output`` is kept (removed once the run finishes)."""
    output = Path(output)
    return output.with_name(f".{output.name}.run.json")


def job_key(input_path, *parts) -> str:
    """A run's identity: the input file (path, size, modification time) and what else the caller
    says makes the output (the model folder's contents, the columns, the chunk size)."""
    stat = Path(input_path).stat()
    text = json.dumps([str(Path(input_path).resolve()), stat.st_size, stat.st_mtime_ns, *map(str, parts)])
    return hashlib.sha256(text.encode()).hexdigest()


def run_batch(model, input_path, output, *, column: str, key: str, item_name: str | None = None, keep=(),
              chunk_rows: int = 10_000, encoding: str = "utf-8", max_cost: float | None = None,
              restart: bool = False, images: bool = False, report=None) -> Progress:
    """Route every row of ``input_path`` with ``model`` into ``output``, resuming a killed run.

    ``key`` identifies the job (:func:`job_key`): a state file with another key is a different job
    and is started afresh. ``max_cost`` stops cleanly before a chunk that could take the cost past
    it (judged by the most expensive chunk so far). ``report(progress)`` is called after each chunk.
    With ``images``, the item column holds image paths, relative ones taken from the input's folder.

    Examples
    --------
    >>> import tempfile
    >>> import pandas as pd
    >>> from datashunt.estimators.shunt import ShuntClassifier
    >>> from datashunt.backends.replay import ReplayModel
    >>> from sklearn.dummy import DummyClassifier
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "in.csv").write_text("text\\ngood\\nbad\\nfine\\n")
    >>> replay = ReplayModel(pd.DataFrame({"id": ["good", "bad", "fine"], "prediction": ["pos", "neg", "pos"]}))
    >>> shunt = ShuntClassifier(DummyClassifier(), replay, threshold=1.0).fit(["a", "b"] * 5, ["neg", "pos"] * 5)
    >>> done = run_batch(shunt, folder / "in.csv", folder / "out.csv", column="text", key="k", chunk_rows=2)
    >>> done.rows_done, pd.read_csv(folder / "out.csv")["label"].tolist()
    (3, ['pos', 'neg', 'pos'])
    """
    if max_cost is not None and max_cost < 0:
        raise DataError(f"max_cost must be at least 0, got {max_cost}")
    writer = ChunkWriter(output)
    where = state_path(output)
    state = _read_state(where)
    if restart or state is None or state.key != key:
        state = RunState(key=key)
        writer.start()
        _write_state(where, state)
    else:
        writer.truncate(state.output_size)
    resumed_from = state.rows_done
    reader = ChunkReader(input_path, column, keep=keep, chunk_rows=chunk_rows, encoding=encoding,
                         skip_rows=state.rows_done)
    name = item_name or column
    routes = Counter(state.routes)

    def progress(stopped=None):
        return Progress(state.rows_done, state.cost, dict(routes), reader.position, reader.total, resumed_from,
                        stopped)

    if report:
        report(progress())
    for chunk in reader:
        if max_cost is not None and state.cost + state.largest_chunk_cost > max_cost:
            return progress("budget")
        start = time.perf_counter()
        items = chunk[column]
        if images:
            base = Path(input_path).parent
            items = items.map(lambda v: base / v if isinstance(v, str) and v.strip() else v)
        table = model.route(items.to_numpy() if not images else items)
        table.insert(0, name, chunk[column].to_numpy())
        for extra in reversed([c for c in keep if c != column]):
            table.insert(0, extra, chunk[extra].to_numpy())
        writer.write(table)
        cost = float(table["cost"].sum())
        routes.update(table["route"].value_counts().to_dict())
        state.rows_done += len(table)
        state.output_size = writer.size
        state.cost += cost
        state.largest_chunk_cost = max(state.largest_chunk_cost, cost)
        state.routes = {str(k): int(v) for k, v in routes.items()}
        state.seconds += time.perf_counter() - start
        _write_state(where, state)
        if report:
            report(progress())
    if state.rows_done == 0:
        raise DataError(f"{input_path}: the file has no rows")
    where.unlink(missing_ok=True)
    return progress()


def _read_state(path: Path) -> RunState | None:
    if not path.is_file():
        return None
    try:
        return RunState(**json.loads(path.read_text()))
    except (ValueError, TypeError):
        return None  # unreadable: the run starts afresh rather than trusting it


def _write_state(path: Path, state: RunState) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as handle:
        json.dump(asdict(state), handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
