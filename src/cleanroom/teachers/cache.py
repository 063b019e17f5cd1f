"""Request-level cache: one SQLite (WAL) row per finished teacher request.

Keyed by sha256(teacher, model, prompt, params) (`protocol.request_key`). Each completion is
committed the moment it arrives, so a generation killed at any point and restarted finds every
finished request here and sends only the rest. WAL lets readers (progress, tests) look while the
writer works; `synchronous=NORMAL` keeps commits cheap and still survives a killed process.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

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
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)
        self._db.commit()

    def get_many(self, keys: list[str]) -> dict[str, Completion]:
        out: dict[str, Completion] = {}
        with self._lock:
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
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO requests VALUES (?,?,?,?,?,?,?,?,?,?)",
                (key, teacher, model, prompt, json.dumps(params.as_dict(), sort_keys=True), c.text,
                 c.prompt_tokens, c.completion_tokens, c.finish_reason, time.time()))
            self._db.commit()
        return key

    def count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM requests").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> RequestCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
