"""Batch runs that survive: a file of any size routed a chunk at a time, resumable after a kill.

Each chunk is routed by the fitted model (:meth:`route` of a shunt, cascade or generator), its
rows appended to the output and flushed, and only then is the run's state file (beside the
output, written atomically) moved forward. Killed at any moment, the next run with the same
input, model and output checks that the output still holds what the state file vouches for, cuts
off the tail written after it and goes on from there: no row lost, none written twice. Large-model
answers are committed to the call cache one by one as they arrive, so the chunk that was being
routed at the kill is asked again only for the calls that were in flight then (at most the
backend's concurrency); the rest come from the cache at no cost, and what they were paid is known
from the run's ledger (:mod:`datashunt.jobs.spending`). One run at a time writes an output.
"""

import contextlib
import fcntl
import hashlib
import json
import os
import time
import uuid
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from ..exceptions import DataError, DatashuntError
from .paths import check_distinct, check_input, ledger_path, lock_path, state_path, write_atomically
from .spending import NOT_ASKED, Meter
from .tables import ChunkReader, ChunkWriter

__all__ = [
    "Progress",
    "RunState",
    "check_columns",
    "job_key",
    "model_digest",
    "route_columns",
    "run_batch",
    "state_path",
]

FLAG_CHARS = 200  # the longest flag written: a flag that quotes a huge cell is cut, with an ellipsis
MODEL_FILES = ("*.json", "*.skops", "*.npz", "sweep.csv")  # what a saved model folder holds (io.persist)
MODEL_FOLDERS = ("subtask_*", "shunt")  # the faces of Subtasks and Segments, saved one folder each
MAX_MODEL_FILE = 4 << 30  # a saved file beyond this is not a model datashunt loads (io.persist)


@dataclass
class RunState:
    """What a run has finished: rows done, the output's size (and a fingerprint of its end) at that
    point, cost paid, routes taken. ``run`` names the run the ledger of paid calls belongs to."""

    key: str
    run: str = ""
    rows_done: int = 0
    output_size: int = 0
    output_tail: str = ""
    cost: float = 0.0
    routes: dict = field(default_factory=dict)
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


def job_key(input_path, *parts) -> str:
    """A run's identity: the input file (path, size, modification time) and what else the caller
    says makes the output (the model folder's contents, the columns, the chunk size)."""
    stat = check_input(input_path).stat()
    text = json.dumps([str(Path(input_path).resolve()), stat.st_size, stat.st_mtime_ns, *map(str, parts)])
    return hashlib.sha256(text.encode()).hexdigest()


def model_digest(folder) -> str:
    """The files a saved model folder holds in its format, hashed a block at a time: a changed model
    is a different job. Other files in the folder are not part of the model and are not read."""
    digest = hashlib.sha256()
    folder = Path(folder)
    places = [folder] + sorted(p for pattern in MODEL_FOLDERS for p in folder.glob(pattern) if p.is_dir())
    files = sorted({p for place in places for pattern in MODEL_FILES for p in place.glob(pattern) if p.is_file()})
    for path in files:
        size = path.stat().st_size
        if size > MAX_MODEL_FILE:
            raise DataError(
                f"{path}: {size:,} bytes is larger than any model file datashunt saves; is this the right model folder?"
            )
        digest.update(f"{path.relative_to(folder)}\0{size}\0".encode())
        with open(path, "rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()


def run_batch(
    model,
    input_path,
    output,
    *,
    column: str,
    key: str,
    item_name: str | None = None,
    keep=(),
    chunk_rows: int = 10_000,
    encoding: str = "utf-8",
    max_cost: float | None = None,
    restart: bool = False,
    images: bool = False,
    report=None,
) -> Progress:
    """Route every row of ``input_path`` with ``model`` into ``output``, resuming a killed run.

    ``key`` identifies the job (:func:`job_key`): a state file with another key is a different job
    and is started afresh. ``max_cost`` is a spending limit: a call goes out only while its price
    (judged by the priciest answer of that model so far) still fits, so the run stops within one
    call of it, after the last row it could finish (``stopped == "budget"``; the same run with a
    larger limit goes on from there). A model whose priced parts the meter cannot find (see
    :mod:`datashunt.jobs.spending`) is stopped between chunks instead, judged by its costliest chunk.
    ``report(progress)`` is called after each chunk. With ``images``, the item column holds image
    paths, relative ones taken from the input's folder.

    Refused before anything is written: an output that is the input (or a link to it), and an
    output another run is writing now.

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
    if max_cost is not None and not max_cost >= 0:
        raise DataError(f"max_cost must be at least 0, got {max_cost}")
    input_path, output = check_input(input_path), Path(output)
    check_distinct(input_path, output)
    keep = list(dict.fromkeys(keep))
    with exclusive(output):
        return _run(
            model,
            input_path,
            output,
            column,
            key,
            item_name or column,
            keep,
            chunk_rows,
            encoding,
            max_cost,
            restart,
            images,
            report,
        )


def _run(
    model, input_path, output, column, key, name, keep, chunk_rows, encoding, max_cost, restart, images, report
) -> Progress:
    writer, where = ChunkWriter(output), state_path(output)
    state = _read_state(where)
    with _writing(output, 0 if state is None else state.rows_done):
        if restart or state is None or state.key != key:
            state = RunState(key=key, run=uuid.uuid4().hex)
            _write_state(where, state)  # first: a kill from here on resumes this fresh run, never an old one
            writer.start()
        else:
            writer.resume(state.output_size, state.output_tail)
    resumed_from = state.rows_done
    reader = ChunkReader(
        input_path, column, keep=keep, chunk_rows=chunk_rows, encoding=encoding, skip_rows=state.rows_done
    )
    routes = Counter(state.routes)
    meter = Meter(ledger_path(output), state.run, max_cost, committed=state.cost)

    def progress(stopped=None):
        return Progress(
            state.rows_done, meter.spent, dict(routes), reader.position, reader.total, resumed_from, stopped
        )

    largest = 0.0  # the costliest chunk so far, for a model the meter cannot see into
    try:
        if report:
            report(progress())
        base = Path(input_path).parent  # image paths in the table are relative to it
        with meter.watch(model):
            for chunk in reader:
                if not meter.watched and max_cost is not None and meter.spent + largest > max_cost:
                    return progress("budget")  # the tightest bound such a model allows: between chunks
                start = time.perf_counter()
                items = chunk[column]
                if images:
                    items = items.map(lambda v: base / v if isinstance(v, str) and v.strip() else v)
                table = model.route(items.to_numpy() if not images else items)
                if not meter.watched:  # a model the meter cannot see into: its own account of the chunk
                    largest = max(largest, float(table["cost"].sum()))
                    meter.pay("", float(table["cost"].sum()))
                done = _finished(table) if meter.refused else len(table)
                table = _with_items(table.iloc[:done], chunk.iloc[:done], column, name, keep)
                with _writing(output, state.rows_done):
                    if len(table):
                        writer.write(table)
                    routes.update(table["route"].value_counts().to_dict())
                    state.rows_done += len(table)
                    state.output_size, state.output_tail = writer.size, writer.fingerprint()
                    state.cost = meter.spent
                    state.routes = {str(k): int(v) for k, v in routes.items()}
                    state.seconds += time.perf_counter() - start
                    _write_state(where, state)
                if meter.refused:
                    return progress("budget")
                if report:
                    report(progress())
    finally:
        meter.close()
    if state.rows_done == 0:
        raise DataError(f"{input_path}: the file has no rows")
    where.unlink(missing_ok=True)
    ledger_path(output).unlink(missing_ok=True)
    return progress()


def _finished(table) -> int:
    """How many leading rows of a routed chunk are complete: those before the first call the budget stopped."""
    stopped = table["flag"].map(lambda flag: isinstance(flag, str) and NOT_ASKED in flag).to_numpy(bool)
    return int(np.argmax(stopped)) if stopped.any() else len(table)


def route_columns(model) -> list | None:
    """The columns ``model.route`` writes, learnt before any call from a batch of one missing item (it is
    flagged, not sent), or None where the model cannot route such a batch."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return list(model.route(np.array([None], dtype=object)).columns)
        except DatashuntError:
            return None


def check_columns(columns, keep, name: str, column: str) -> None:
    """Refuse ``keep`` columns that would clash with the output's own (``columns``, and the item column ``name``)."""
    taken = set(columns) | {name}
    clash = [c for c in keep if c != column and c in taken]
    if clash:
        raise DataError(
            f"--keep {clash[0]!r} clashes with the output column of that name (the output has "
            f"{[name, *columns]}); rename that input column, or keep another"
        )


def _with_items(table, chunk, column: str, name: str, keep):
    """The routed rows with the item column (``name``) and the kept input columns first, flags cut short."""
    check_columns(table.columns, keep, name, column)
    table, chunk = table.reset_index(drop=True), chunk.reset_index(drop=True)
    table.insert(0, name, chunk[column])  # as read: a column pandas keeps as plain strings stays so
    for extra in reversed([c for c in keep if c != column]):
        table.insert(0, extra, chunk[extra])
    if "flag" in table:
        table["flag"] = table["flag"].map(_short)
    return table


def _short(flag):
    if isinstance(flag, str) and len(flag) > FLAG_CHARS:
        return flag[: FLAG_CHARS - 1] + "…"
    return flag


@contextlib.contextmanager
def _writing(output: Path, rows_done: int):
    """Say plainly that the output (or its state) cannot be written, and that finished rows are kept."""
    try:
        yield
    except DatashuntError:
        raise
    except OSError as exc:
        kept = f"the {rows_done:,} rows finished before are kept: " if rows_done else ""
        raise DataError(
            f"{output}: cannot write ({exc.strerror or exc}); {kept}fix that and run the same command again to go on"
        ) from None


@contextlib.contextmanager
def exclusive(output):
    """Hold the lock of ``output`` for the block, or fail at once if another run holds it."""
    path, output = lock_path(output), Path(output)
    for _ in range(3):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise DataError(f"{output}: cannot open its lock file {path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DataError(
                f"{output}: another run is writing this output now (it holds {path}); let it finish, "
                "or write to another path"
            ) from None
        try:  # a run that just ended removed the file it held: lock the one now in place instead
            if os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    else:
        raise DataError(f"{output}: its lock file {path} keeps changing; is another run starting on it?")
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)


def _read_state(path: Path) -> RunState | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:  # none, or a link planted in its place: not this run's state
        return None
    try:
        with open(fd, "rb") as handle:
            saved = json.loads(handle.read())
        known = {f.name for f in fields(RunState)}
        return RunState(**{k: v for k, v in saved.items() if k in known})
    except (ValueError, TypeError, AttributeError, OSError):
        return None  # unreadable: the run starts afresh rather than trusting it


def _write_state(path: Path, state: RunState) -> None:
    write_atomically(path, json.dumps(asdict(state)))
