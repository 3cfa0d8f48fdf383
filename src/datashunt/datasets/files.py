"""The user's own labelled data: CSV, TSV, JSONL or Parquet, with named text and label columns."""

from pathlib import Path

import pandas as pd

from ..exceptions import DataError

READERS = {
    ".csv": lambda p, enc: pd.read_csv(p, encoding=enc),
    ".tsv": lambda p, enc: pd.read_csv(p, sep="\t", encoding=enc),
    ".jsonl": lambda p, enc: pd.read_json(p, lines=True, encoding=enc),
    ".json": lambda p, enc: pd.read_json(p, encoding=enc),
    ".parquet": lambda p, enc: pd.read_parquet(p),
}


def read_table(path, encoding: str = "utf-8") -> pd.DataFrame:
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
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise DataError(f"{path}: unsupported file type {path.suffix!r}; use one of {sorted(READERS)}")
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        frame = reader(path, encoding)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not valid {encoding} ({exc.reason} at byte {exc.start}); "
                        "set the file's encoding, e.g. encoding = 'latin-1'") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty") from None
    except (ValueError, OSError) as exc:
        raise DataError(f"{path}: could not be read as {path.suffix}: {exc}") from None
    if frame.empty:
        raise DataError(f"{path}: the file has no rows")
    return frame


def load_labeled(path, text_column: str = "text", label_column: str | None = "label",
                 encoding: str = "utf-8") -> tuple[pd.Series, pd.Series | None]:
    """Texts and labels (or None when ``label_column`` is None) from a table file.

    Rows whose label is missing are an error (drop them or fill them in); texts are checked later,
    per row, by the shunt.
    """
    frame = read_table(path, encoding)
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
