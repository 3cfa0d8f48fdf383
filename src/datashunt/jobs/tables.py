"""Tables of any size, read and written a chunk at a time (CSV, JSONL, Parquet).

A :class:`ChunkReader` yields the item column (and any columns to carry through) in chunks and
says how far it is, for an ETA; a :class:`ChunkWriter` appends chunks to the output so that a run
killed at any moment leaves a prefix that :meth:`ChunkWriter.resume` checks and restores exactly.
"""

import contextlib
import hashlib
import io
import itertools
import json
import os
import tempfile
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from ..exceptions import DataError
from ..io.datasets.files import as_text

TEXT_SUFFIXES = (".csv", ".tsv", ".jsonl")
SUFFIXES = TEXT_SUFFIXES + (".parquet",)
TAIL_BYTES = 1 << 16  # how much of a text output's end a resume checks


def _suffix(path: Path, what: str) -> str:
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise DataError(f"{path}: unsupported {what} type {suffix!r}; use one of {list(SUFFIXES)}")
    return suffix


class ChunkReader:
    """The rows of a CSV, TSV, JSONL or Parquet file, ``chunk_rows`` at a time.

    Only ``column`` (the items) and ``keep`` (columns carried into the output, such as an id) are
    read; ``position`` and ``total`` are in bytes for text files and in rows for Parquet.

    Examples
    --------
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "in.jsonl"
    >>> _ = path.write_text('{"text": "good", "id": 1}\\n{"text": "bad", "id": 2}\\n{"text": "ok", "id": 3}\\n')
    >>> [chunk["text"].tolist() for chunk in ChunkReader(path, "text", chunk_rows=2)]
    [['good', 'bad'], ['ok']]
    """

    def __init__(
        self, path, column: str, *, keep=(), chunk_rows: int = 10_000, encoding: str = "utf-8", skip_rows: int = 0
    ):
        self.path, self.column, self.keep = Path(path), column, list(keep)
        self.chunk_rows, self.encoding, self.skip_rows = int(chunk_rows), encoding, int(skip_rows)
        if self.path.is_dir():
            raise DataError(f'{self.path}: is a folder, not a file (a folder of images needs modality = "image")')
        self.suffix = _suffix(self.path, "input")
        if not self.path.is_file():
            raise DataError(f"{self.path}: no such file")
        self.columns = [column] + [c for c in self.keep if c != column]
        self.position = 0
        self.total = self.path.stat().st_size if self.suffix != ".parquet" else self._parquet().metadata.num_rows

    def _parquet(self):
        try:
            return pq.ParquetFile(self.path)
        except Exception as exc:  # pyarrow raises several kinds for a file that is not Parquet
            raise DataError(f"{self.path}: could not be read as Parquet: {exc}") from None

    def __iter__(self):
        try:
            yield from (chunk for chunk in self._chunks() if len(chunk))  # a header alone makes no chunk
        except UnicodeDecodeError as exc:
            raise DataError(
                f"{self.path}: not valid {self.encoding} ({exc.reason}) near byte {self.position:,}; "
                "set the file's encoding, e.g. encoding = 'latin-1'"
            ) from None

    def _chunks(self):
        if self.suffix == ".parquet":
            yield from self._parquet_chunks()
            return
        with open(self.path, "rb") as raw, io.TextIOWrapper(raw, encoding=self.encoding, newline="") as handle:
            if self.suffix == ".jsonl":
                chunks = self._jsonl_chunks(handle)
            else:
                chunks = self._csv_chunks(handle)
            for chunk in chunks:
                self.position = raw.tell()
                yield chunk

    def _check(self, frame: pd.DataFrame) -> pd.DataFrame:
        missing = [c for c in self.columns if c not in frame.columns]
        if missing:
            raise DataError(f"{self.path}: missing column(s) {missing}; columns present: {list(frame.columns)}")
        frame = frame[self.columns].reset_index(drop=True)
        items = frame[self.column]
        odd = items.map(_unstorable).to_numpy(bool)
        if odd.any():  # strings pandas' own string type cannot hold stay as they are, for the model to flag
            items = items.astype(object)
            items[~odd] = as_text(items[~odd]).astype(object)
            frame[self.column] = items
        else:
            frame[self.column] = as_text(items)
        return frame

    def _csv_chunks(self, handle):
        sep = "\t" if self.suffix == ".tsv" else ","
        try:
            header = pd.read_csv(self.path, sep=sep, nrows=0, encoding=self.encoding).columns
            self._check(pd.DataFrame(columns=header))
            reader = pd.read_csv(
                handle,
                sep=sep,
                dtype={self.column: str},
                chunksize=self.chunk_rows,
                usecols=lambda c: c in self.columns,
                skiprows=range(1, self.skip_rows + 1),
            )
            for chunk in reader:
                yield self._check(chunk)
        except pd.errors.EmptyDataError:
            raise DataError(f"{self.path}: the file is empty") from None
        except (UnicodeDecodeError, DataError):
            raise  # a decoding error is said with its position by __iter__
        except (ValueError, pd.errors.ParserError) as exc:
            raise DataError(f"{self.path}: could not be read as {self.suffix}: {exc}") from None

    def _jsonl_chunks(self, handle):
        lines = (line for line in handle if line.strip())
        for _ in itertools.islice(lines, self.skip_rows):
            pass
        row = self.skip_rows
        while batch := list(itertools.islice(lines, self.chunk_rows)):
            records = []
            for line in batch:
                row += 1
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{self.path}: row {row} is not JSON ({exc.msg})") from None
                if not isinstance(record, dict):
                    raise DataError(f"{self.path}: row {row} is not a JSON object")
                records.append({c: record.get(c) for c in self.columns} if self.column in record else record)
            names = dict.fromkeys(name for record in records for name in record)
            yield self._check(pd.DataFrame({name: _column([r.get(name) for r in records]) for name in names}))

    def _parquet_chunks(self):
        source = self._parquet()
        names = source.schema_arrow.names
        missing = [c for c in self.columns if c not in names]
        if missing:
            raise DataError(f"{self.path}: missing column(s) {missing}; columns present: {names}")
        done = 0
        for batch in source.iter_batches(batch_size=self.chunk_rows, columns=self.columns):
            if done + batch.num_rows <= self.skip_rows:  # done by the run being resumed
                done += batch.num_rows
                continue
            frame = batch.slice(max(self.skip_rows - done, 0)).to_pandas()
            done += batch.num_rows
            self.position = done
            yield self._check(frame)


def _column(values: list) -> pd.Series:
    """A column of JSON values; one holding a lone surrogate (an escaped JSON string may) stays plain
    Python strings, which pandas' own string type cannot hold, so the row reaches the model to be flagged."""
    try:
        return pd.Series(values)
    except UnicodeEncodeError:
        return pd.Series(values, dtype=object)


class ChunkWriter:
    """Appends chunks to a CSV, TSV or JSONL file (flushed to disk each time) or, for ``.parquet``,
    writes each chunk as one part file of a folder (a Parquet dataset pandas, pyarrow and Ray read
    whole). :attr:`size` and :meth:`fingerprint` are what a resume checks and :meth:`resume` cuts back to.

    Text that cannot be stored as UTF-8 (a lone surrogate, read from an escaped JSON string) is
    written with that character as its escape (``\\ud800``), so the row is kept and the file stays valid.
    """

    def __init__(self, path):
        self.path = Path(path)
        self.suffix = _suffix(self.path, "output")
        self.parts = self.suffix == ".parquet"
        self._rows = 0  # rows in the parts written (Parquet)

    def start(self) -> None:
        """Begin a fresh output (an existing one is replaced)."""
        self._rows = 0
        if self.parts:
            if self.path.is_file() or self.path.is_symlink():
                self.path.unlink()
            self.path.mkdir(parents=True, exist_ok=True)
            for old in self.path.glob("part-*.parquet"):
                old.unlink()
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_bytes(b"")

    @property
    def size(self) -> int:
        """Bytes written (text files) or parts written (Parquet)."""
        if self.parts:
            return len(list(self.path.glob("part-*.parquet")))
        return self.path.stat().st_size

    def fingerprint(self) -> str:
        """What the output written so far ends with: the hash of a text file's last 64 KiB, or the rows
        in a Parquet folder's parts; a resume checks the output still has it."""
        return str(self._rows) if self.parts else self._tail(self.size)

    def _tail(self, size: int) -> str:
        with open(self.path, "rb") as handle:
            handle.seek(max(size - TAIL_BYTES, 0))
            return hashlib.sha256(handle.read(min(size, TAIL_BYTES))).hexdigest()

    def _rows_in(self, parts: int) -> int:
        return sum(pq.ParquetFile(self._part(i)).metadata.num_rows for i in range(parts))

    def resume(self, size: int, fingerprint: str = "") -> None:
        """Go on after ``size`` bytes (or parts) ending in ``fingerprint``: drop anything written after
        them (the tail of a chunk a killed run did not record). An output that no longer holds them, cut
        short or changed, is refused before anything is touched."""
        if not self.path.exists():
            raise DataError(f"{self.path}: the output of the run to resume is gone; start afresh with --restart")
        changed = (
            f"{self.path}: the output was changed after the run stopped (%s), so the run cannot go on from "
            "it; start afresh with --restart, or restore the output"
        )
        if self.parts:
            missing = [i for i in range(size) if not self._part(i).is_file()]
            if missing:
                raise DataError(changed % f"part {self._part(missing[0]).name} of the {size} written is gone")
        elif self.size < size:
            raise DataError(changed % f"it holds {self.size:,} bytes of the {size:,} written")
        try:
            if self.parts:
                self._rows = self._rows_in(size)
            ok = not fingerprint or fingerprint == (str(self._rows) if self.parts else self._tail(size))
        except (OSError, ValueError) as exc:  # pyarrow says a damaged part with these
            raise DataError(changed % f"it cannot be read back: {exc}") from None
        if not ok:
            raise DataError(
                changed
                % (
                    "its parts no longer hold the rows written"
                    if self.parts
                    else "its last rows differ from those written"
                )
            )
        if self.parts:
            for part in self.path.glob("part-*.parquet"):
                if int(part.stem.split("-")[1]) >= size:
                    part.unlink()
        else:
            with open(self.path, "r+b") as handle:
                handle.truncate(size)

    def _part(self, i: int) -> Path:
        return self.path / f"part-{i:06d}.parquet"

    def write(self, frame: pd.DataFrame) -> None:
        frame = _storable(frame)
        if self.parts:
            part = self._part(self.size)
            fd, tmp = tempfile.mkstemp(dir=self.path, prefix=f".{part.name}.", suffix=".tmp")
            try:
                with open(fd, "wb") as handle:
                    frame.to_parquet(handle, index=False)
                os.replace(tmp, part)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise
            self._rows += len(frame)
            return
        header = self.size == 0
        with open(self.path, "a", encoding="utf-8", newline="") as handle:
            if self.suffix == ".jsonl":
                frame.to_json(handle, orient="records", lines=True, force_ascii=False)
            else:
                frame.to_csv(handle, index=False, header=header, sep="\t" if self.suffix == ".tsv" else ",")
            handle.flush()
            os.fsync(handle.fileno())


def _unstorable(value) -> bool:
    """Whether ``value`` is a string UTF-8 cannot hold (it has a lone surrogate)."""
    if not isinstance(value, str) or value.isascii():
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _storable(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with every string UTF-8 cannot hold (lone surrogates) written with escapes instead."""

    def fix(value):
        return value.encode("utf-8", "backslashreplace").decode("utf-8") if _unstorable(value) else value

    columns = [c for c in frame.columns if pd.api.types.is_object_dtype(frame[c])]  # pandas' own strings are valid
    if not columns:
        return frame
    frame = frame.copy()
    for c in columns:
        frame[c] = frame[c].map(fix)
    return frame
