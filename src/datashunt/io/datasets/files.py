"""The user's own labelled data: CSV, TSV, JSONL or Parquet with named item and label columns, or
a folder of images with one subfolder per class."""

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
        raise DataError(f'{path}: is a folder, not a file (a folder of images needs modality = "image")')
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise DataError(f"{path}: unsupported file type {path.suffix!r}; use one of {sorted(READERS)}")
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        frame = reader(path, encoding, dict.fromkeys(text_columns, str) or None)
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path}: not valid {encoding} ({exc.reason} at byte {exc.start}); "
            "set the file's encoding, e.g. encoding = 'latin-1'"
        ) from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty") from None
    except (ValueError, OSError) as exc:
        raise DataError(f"{path}: could not be read as {path.suffix}: {exc}") from None
    if frame.empty:
        raise DataError(f"{path}: the file has no rows")
    for column in text_columns:
        if column in frame.columns:
            frame[column] = as_text(frame[column])
    return frame


def as_text(items: pd.Series) -> pd.Series:
    """Numbers in a text column are texts ("42" is a fine review); the rest is left for the shunt
    to check per row.

    Examples
    --------
    >>> as_text(pd.Series([42, 4.5, "fine"])).tolist()
    ['42', '4.5', 'fine']
    """
    return items.map(lambda v: str(v) if isinstance(v, (int, float)) and v == v else v)


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
    with tempfile.NamedTemporaryFile(
        "w", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False, encoding="utf-8", newline=""
    ) as tmp:
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


IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})


def load_image_folder(root, labelled: bool = True) -> tuple[pd.Series, pd.Series | None]:
    """Image paths and labels from ``root/<label>/*.png|jpg|…`` (labels: the subfolder names).

    Unlabelled (``labelled=False``), every image file under ``root`` is taken, at any depth.
    Files are not opened here: an unreadable one is flagged per item when the batch is checked.

    Examples
    --------
    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> for name in ("cat/1.png", "cat/2.jpg", "dog/1.png", "dog/notes.txt"):
    ...     (root / name).parent.mkdir(exist_ok=True); _ = (root / name).write_bytes(b"")
    >>> paths, labels = load_image_folder(root)
    >>> [p.name for p in paths], labels.tolist()
    (['1.png', '2.jpg', '1.png'], ['cat', 'cat', 'dog'])
    """
    root = Path(root)
    if labelled:
        files = [
            (f, d.name)
            for d in sorted(p for p in root.iterdir() if p.is_dir())
            for f in sorted(d.rglob("*"))
            if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()
        ]
    else:
        files = [(f, None) for f in sorted(root.rglob("*")) if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()]
    if not files:
        where = "in its subfolders (one per class)" if labelled else "under it"
        raise DataError(f"{root}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) {where}")
    paths = pd.Series([f for f, _ in files], name="path", dtype=object)
    labels = pd.Series([label for _, label in files], name="label", dtype=object) if labelled else None
    return paths, labels


def load_labeled(
    path, text_column: str = "text", label_column: str | None = "label", encoding: str = "utf-8", images: bool = False
) -> tuple[pd.Series, pd.Series | None]:
    """Items and labels (or None when ``label_column`` is None) from a table file or an image folder.

    With ``images``, a folder is read by :func:`load_image_folder` and a table's ``text_column``
    holds image paths, relative ones resolved against the table's folder. Rows whose label is
    missing are an error (drop them or fill them in); items are checked later, per row, by the shunt.
    """
    if images and Path(path).is_dir():
        return load_image_folder(path, labelled=label_column is not None)
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
            raise DataError(f"{path}: {int(labels.isna().sum())} rows have no {label_column} (first rows: {rows})")
    items = frame[text_column]
    if images:
        base = Path(path).parent
        items = items.map(lambda v: base / v if isinstance(v, str) and v.strip() else v)  # an absolute v stays
    return items, labels
