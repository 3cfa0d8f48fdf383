"""The user's own labelled data: CSV, TSV, JSONL or Parquet, with named text and label columns."""

import os
import tempfile
from pathlib import Path

import pandas as pd

from ...exceptions import DataError

READERS = {
    ".csv": lambda p, enc, text: pd.read_csv(p, encoding=enc, dtype=text),
    ".tsv": lambda p, enc, text: pd.read_csv(p, sep="\t", encoding=enc, dtype=text),
    ".jsonl": lambda p, enc, text: pd.read_json(p, lines=True, encoding=enc, dtype=False),
    ".json": lambda p, enc, text: pd.read_json(p, encoding=enc, dtype=False),
    ".parquet": lambda p, enc, text: pd.read_parquet(p),
}


def read_table(path, encoding: str = "utf-8", text_columns=()) -> pd.DataFrame:
    """Read a table by its file extension, with errors that say what to do.

    Examples
    --------
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "t.csv")
    >>> _ = open(path, "w").write("text,label\\nnice,pos\\n")
    >>> read_table(path).to_dict("records")
    [{'text': 'nice', 'label': 'pos'}]
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a folder, not a file")
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise DataError(f"{path}: unsupported file type {path.suffix!r}; use one of {sorted(READERS)}")
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        frame = reader(path, encoding, dict.fromkeys(text_columns, str) or None)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not valid {encoding} ({exc.reason} at byte {exc.start}); "
                        "set the file's encoding, e.g. encoding = 'latin-1'") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty") from None
    except (ValueError, OSError) as exc:
        raise DataError(f"{path}: could not be read as {path.suffix}: {exc}") from None
    if frame.empty:
        raise DataError(f"{path}: the file has no rows")
    for column in text_columns:  # numbers in a text column are texts ("42" is a fine review)
        if column in frame.columns:
            frame[column] = frame[column].map(lambda v: str(v) if isinstance(v, (int, float)) and v == v else v)
    return frame


def check_writable(path) -> None:
    """Refuse an output path that cannot be written, before any work (or any paid call) is done."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a folder; give the path of the file to write")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"{path}: cannot create its folder: {exc.strerror}") from None
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise DataError(f"{path}: not writable")


def write_csv(frame: pd.DataFrame, path) -> Path:
    """Write ``frame`` as CSV atomically: a reader never sees half a file, a crash never leaves one."""
    path = Path(path)
    check_writable(path)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False,
                                     encoding="utf-8", newline="") as tmp:
        try:
            frame.to_csv(tmp, index=False)
        except BaseException:
            os.unlink(tmp.name)
            raise
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o666 & ~_umask()
    os.chmod(tmp.name, mode)  # a temporary file is private; the output keeps the usual permissions
    os.replace(tmp.name, path)
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def load_labeled(path, text_column: str = "text", label_column: str | None = "label",
                 encoding: str = "utf-8") -> tuple[pd.Series, pd.Series | None]:
    """Texts and labels (or None when ``label_column`` is None) from a table file.

    Rows whose label is missing are an error (drop them or fill them in); texts are checked later,
    per row, by the shunt.
    """
    frame = read_table(path, encoding, text_columns=[text_column])
    needed = [text_column] + ([label_column] if label_column else [])
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; columns present: {list(frame.columns)}")
    labels = None
    if label_column:
        labels = frame[label_column]
        if labels.isna().any():
            rows = labels.index[labels.isna()].tolist()[:5]
            raise DataError(f"{path}: {int(labels.isna().sum())} rows have no label (first rows: {rows})")
    return frame[text_column], labels
