"""Request-level cache: one SQLite (WAL) row per finished teacher request.

Keyed by sha256(teacher, model, prompt, params) (`protocol.request_key`). Each completion is
committed the moment it arrives, so a generation killed at any point and restarted finds every
finished request here and sends only the rest. WAL lets readers (progress, tests) look while the
writer works; `synchronous=NORMAL` keeps commits cheap and still survives a killed process. A file that
is not a readable SQLite database, or a full disk, is one `StoreError` line naming the file; the file is
left as it is (it may hold paid-for answers).
"""

from __future__ import annotations

import contextlib
import errno
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from cleanroom.store import StoreError, os_error
from cleanroom.teachers.protocol import Completion, GenParams, request_key

_SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    key TEXT PRIMARY KEY,
    teacher TEXT NOT NULL,
    model TEXT NOT NULL,
    prompt TEXT NOT NULL,
    params TEXT NOT NULL,
    text TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    finish_reason TEXT NOT NULL,
    created REAL NOT NULL
)
"""


class RequestCache:
    """A thread-safe handle on the cache file (created on first use)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        with self._using():
            self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(_SCHEMA)
            self._db.commit()

    @contextlib.contextmanager
    def _using(self) -> Iterator[None]:
        """Hold the lock; an SQLite error becomes one line naming the file."""
        with self._lock:
            try:
                yield
            except sqlite3.Error as e:
                if "full" in str(e):  # "database or disk is full"
                    raise os_error(OSError(errno.ENOSPC, str(e)), self.path) from None
                if isinstance(e, sqlite3.OperationalError):  # locked, cannot open: the file may be fine
                    raise StoreError(f"request cache {self.path}: {e}") from None
                raise StoreError(f"corrupted request cache {self.path}: {e} — move it aside to start a new one "
                                 f"(its finished requests would be sent again)") from None

    def get_many(self, keys: list[str]) -> dict[str, Completion]:
        out: dict[str, Completion] = {}
        with self._using():
            for s in range(0, len(keys), 500):
                chunk = keys[s:s + 500]
                rows = self._db.execute(
                    f"SELECT key, text, prompt_tokens, completion_tokens, finish_reason FROM requests "
                    f"WHERE key IN ({','.join('?' * len(chunk))})", chunk).fetchall()
                for key, text, pt, ct, fr in rows:
                    out[key] = Completion(text, pt, ct, fr, cached=True)
        return out

    def put(self, teacher: str, model: str, prompt: str, params: GenParams, c: Completion) -> str:
        """Store one completion and commit at once (a kill right after loses nothing)."""
        key = request_key(teacher, model, prompt, params)
        with self._using():
            self._db.execute(
                "INSERT OR REPLACE INTO requests VALUES (?,?,?,?,?,?,?,?,?,?)",
                (key, teacher, model, prompt, json.dumps(params.as_dict(), sort_keys=True), c.text,
                 c.prompt_tokens, c.completion_tokens, c.finish_reason, time.time()))
            self._db.commit()
        return key

    def count(self) -> int:
        with self._using():
            return self._db.execute("SELECT COUNT(*) FROM requests").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> RequestCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
