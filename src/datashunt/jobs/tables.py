"""Tables of any size, read and written a chunk at a time (CSV, JSONL, Parquet).

A :class:`ChunkReader` yields the item column (and any columns to carry through) in chunks and
says how far it is, for an ETA; a :class:`ChunkWriter` appends chunks to the output so that a run
killed at any moment leaves a prefix that :meth:`ChunkWriter.truncate` restores exactly.
"""

import io
import itertools
import json
import os
from pathlib import Path

import pandas as pd

from ..exceptions import DataError
from ..io.datasets.files import as_text

TEXT_SUFFIXES = (".csv", ".tsv", ".jsonl")
SUFFIXES = TEXT_SUFFIXES + (".parquet",)


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

    def __init__(self, path, column: str, *, keep=(), chunk_rows: int = 10_000, encoding: str = "utf-8",
                 skip_rows: int = 0):
        self.path, self.column, self.keep = Path(path), column, list(keep)
        self.chunk_rows, self.encoding, self.skip_rows = int(chunk_rows), encoding, int(skip_rows)
        if self.path.is_dir():
            raise DataError(f"{self.path}: is a folder, not a file (a folder of images needs modality = \"image\")")
        self.suffix = _suffix(self.path, "input")
        if not self.path.is_file():
            raise DataError(f"{self.path}: no such file")
        self.columns = [column] + [c for c in self.keep if c != column]
        self.position = 0
        self.total = self.path.stat().st_size if self.suffix != ".parquet" else self._parquet().metadata.num_rows

    def _parquet(self):
        import pyarrow.parquet as pq

        try:
            return pq.ParquetFile(self.path)
        except Exception as exc:  # pyarrow raises several kinds for a file that is not Parquet
            raise DataError(f"{self.path}: could not be read as Parquet: {exc}") from None

    def __iter__(self):
        try:
            yield from (chunk for chunk in self._chunks() if len(chunk))  # a header alone makes no chunk
        except UnicodeDecodeError as exc:
            raise DataError(f"{self.path}: not valid {self.encoding} ({exc.reason}) near byte {self.position:,}; "
                            "set the file's encoding, e.g. encoding = 'latin-1'") from None

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
        frame[self.column] = as_text(frame[self.column])
        return frame

    def _csv_chunks(self, handle):
        sep = "\t" if self.suffix == ".tsv" else ","
        try:
            header = pd.read_csv(self.path, sep=sep, nrows=0, encoding=self.encoding).columns
            self._check(pd.DataFrame(columns=header))
            reader = pd.read_csv(handle, sep=sep, dtype={self.column: str}, chunksize=self.chunk_rows,
                                 usecols=lambda c: c in self.columns, skiprows=range(1, self.skip_rows + 1))
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
            yield self._check(pd.DataFrame.from_records(records))

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


class ChunkWriter:
    """Appends chunks to a CSV, TSV or JSONL file (flushed to disk each time) or, for ``.parquet``,
    writes each chunk as one part file of a folder (a Parquet dataset pandas, pyarrow and Ray read
    whole). :attr:`size` is what a resume must :meth:`truncate` back to."""

    def __init__(self, path):
        self.path = Path(path)
        self.suffix = _suffix(self.path, "output")
        self.parts = self.suffix == ".parquet"

    def start(self) -> None:
        """Begin a fresh output (an existing one is replaced)."""
        if self.parts:
            if self.path.is_file():
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

    def truncate(self, size: int) -> None:
        """Drop anything written after ``size`` (the tail of a chunk a killed run did not record)."""
        if not self.path.exists():
            raise DataError(f"{self.path}: the output of the run to resume is gone; start afresh with --restart")
        if self.parts:
            for part in self.path.glob("part-*.parquet"):
                if int(part.stem.split("-")[1]) >= size:
                    part.unlink()
        else:
            with open(self.path, "r+b") as handle:
                handle.truncate(size)

    def write(self, frame: pd.DataFrame) -> None:
        if self.parts:
            part = self.path / f"part-{self.size:06d}.parquet"
            tmp = part.with_name(f".{part.name}.tmp")
            frame.to_parquet(tmp, index=False)
            os.replace(tmp, part)
            return
        header = self.size == 0
        with open(self.path, "a", encoding="utf-8", newline="") as handle:
            if self.suffix == ".jsonl":
                frame.to_json(handle, orient="records", lines=True, force_ascii=False)
            else:
                frame.to_csv(handle, index=False, header=header, sep="\t" if self.suffix == ".tsv" else ",")
            handle.flush()
            os.fsync(handle.fileno())
