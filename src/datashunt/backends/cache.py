"""A persistent on-disk cache of large-model answers (SQLite), so no prompt is paid for twice."""

import contextlib
import hashlib
import json
import os
import sqlite3
import threading
from pathlib import Path

from ..exceptions import CacheError


def default_cache_dir() -> Path:
    """``$DATASHUNT_CACHE_DIR`` if set, else ``~/.cache/datashunt``."""
    return Path(os.environ.get("DATASHUNT_CACHE_DIR") or Path.home() / ".cache" / "datashunt")


def call_key(*parts) -> str:
    """A stable key for a call: the sha256 of its JSON-encoded parts."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class CallCache:
    """Key-value store of finished calls; each answer is committed as soon as it arrives.

    Only answers are stored: never credentials or request headers. Several processes may share
    one file (SQLite serialises the writes); each process asks for what is not in the cache when
    it looks, so two runs that overlap on the same new items both pay for them once.

    Examples
    --------
    >>> import tempfile
    >>> cache = CallCache(Path(tempfile.mkdtemp()) / "calls.sqlite")
    >>> cache.put("k", {"proba": [0.2, 0.8]})
    >>> cache.get("k")
    {'proba': [0.2, 0.8]}
    """

    def __init__(self, path):
        self.path = Path(path)
        self._lock = threading.Lock()
        if self.path.is_dir():
            raise CacheError(f"the call cache {self.path} is a folder; give the path of a file (or cache=True)")
        with self._guard("open"):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
            with self._lock, self._conn:
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute("CREATE TABLE IF NOT EXISTS calls (key TEXT PRIMARY KEY, value TEXT NOT NULL)")

    @contextlib.contextmanager
    def _guard(self, action: str):
        """Report SQLite's failures as a CacheError that names the file and what to do."""
        try:
            yield
        except (sqlite3.DatabaseError, OSError) as exc:
            raise CacheError(
                f"cannot {action} the call cache {self.path}: {exc}; if it is corrupt, delete it "
                "(its answers will be asked again) or point cache= at another file"
            ) from None

    def get(self, key: str) -> dict | None:
        with self._guard("read"), self._lock:
            row = self._conn.execute("SELECT value FROM calls WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        try:
            return json.loads(row[0])
        except json.JSONDecodeError:
            return None  # a damaged entry is a miss: the call is made again and the entry replaced

    def put(self, key: str, value: dict) -> None:
        with self._guard("write"), self._lock, self._conn:
            self._conn.execute("INSERT OR REPLACE INTO calls VALUES (?, ?)", (key, json.dumps(value)))

    def __len__(self) -> int:
        with self._lock:
            return self._conn.execute("SELECT COUNT(*) FROM calls").fetchone()[0]

    def __getstate__(self):
        return {"path": str(self.path)}

    def __setstate__(self, state):
        self.__init__(state["path"])
