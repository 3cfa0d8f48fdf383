"""The files a job reads and writes, checked before any work: an input that is there, an output that is
not the input, an output folder that can hold a model; and the files a run keeps beside its output."""

import contextlib
import os
import tempfile
from pathlib import Path

import pandas as pd

from ..exceptions import ConfigError, DataError
from ..io.datasets.files import load_image_folder, write_csv


def state_path(output) -> Path:
    """Where the state of the run writing ``output`` is kept (removed once the run finishes)."""
    output = Path(output)
    return output.with_name(f".{output.name}.run.json")


def ledger_path(output) -> Path:
    """Where the run writing ``output`` records each paid call as it is paid (removed with the state)."""
    output = Path(output)
    return output.with_name(f".{output.name}.run.ledger")


def lock_path(output) -> Path:
    """The lock file a run holds while it writes ``output``."""
    output = Path(output)
    return output.with_name(f".{output.name}.lock")


def check_input(path) -> Path:
    """Refuse an input that is not there, naming it."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file; give the path of an existing input with -i")
    return path


def check_distinct(input_path, output) -> None:
    """Refuse an output that is the input or holds it: the same path, a symbolic or hard link to it, a
    Parquet output folder with the input inside, or a file the run keeps beside its output. Nothing is
    touched before this holds, so the input stays intact."""
    source, output = Path(input_path), Path(output)
    if not source.exists():
        return
    written = [output, state_path(output), ledger_path(output), lock_path(output)]
    if output.is_dir():  # a Parquet output is a folder of part files
        written += list(output.iterdir())
    for path in written:
        if _same(source, path):
            how = "the same path" if source.absolute() == path.absolute() else "the same file through a link"
            raise DataError(f"{output}: the output would overwrite the input {source} ({how}); write to another path")
    if output.exists() and _inside(source, output):
        raise DataError(f"{output}: the output folder holds the input {source}; write to another path")


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # not there (yet), or not reachable: not the same file
        return False


def _inside(path: Path, folder: Path) -> bool:
    try:
        return folder.is_dir() and path.resolve().is_relative_to(folder.resolve())
    except OSError:
        return False


def check_output_folder(folder, what: str = "[output] dir") -> Path:
    """Create ``folder`` (where a model and a report go), or say why it cannot be, before any training.

    ``what`` names the setting that gave the folder, for the message."""
    folder = Path(folder)
    for path in (folder, folder / "model"):
        if path.exists() and not path.is_dir():
            raise ConfigError(f"{what}: {path} is a file, not a folder; remove it or give another {what}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{what}: cannot create {folder}: {exc.strerror}; give another {what}") from None
    if not os.access(folder, os.W_OK):
        raise ConfigError(f"{what}: {folder} is not writable; give another {what}")
    return folder


def image_list(folder, output) -> Path:
    """A folder of images as a one-column table of paths (beside the output), for the chunked reader.

    The table is rewritten only when the folder changed: an unchanged one is the same job, so a killed
    run on images resumes."""
    paths, _ = load_image_folder(folder, labelled=False)
    output = Path(output)
    listing = output.with_name(f".{output.name}.images.csv")
    frame = pd.DataFrame({"path": paths.astype(str)})
    if not listing.is_file() or listing.read_text() != frame.to_csv(index=False):
        write_csv(frame, listing)  # atomic, through a temporary file of its own
    return listing


def write_atomically(path, text: str) -> None:
    """Write ``path`` whole through a new temporary file beside it, created for this write alone and
    moved into place, so a reader never sees half of it and a link planted at either name is never followed."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with open(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
