"""The request cache: one SQLite (WAL) row per answered request, and `CachedLM`, the one caching
wrapper around any `LM`.

Keyed by sha256(namespace, model identity, prompt, params) (`request_key`). Each answer is committed
as soon as its chunk returns, so a job killed at any point and restarted finds every finished request
here and sends only the rest. WAL lets readers (progress, tests) look while the
writer works; `synchronous=NORMAL` keeps commits cheap and still survives a killed process.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from cleanroom.lm.api import LM, Completion, GenerateRequest, GenParams, Loglikelihood, LoglikelihoodRequest
from cleanroom.store import StoreError, os_error


def request_key(namespace: str, model: str, prompt: str, params: GenParams) -> str:
    """The cache key of one request: sha256 over (namespace, model, prompt, params)."""
    blob = json.dumps([namespace, model, prompt, params.as_dict()], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


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
        """Hold the lock; an SQLite error becomes one line naming the file (which is left as it is: it may
        hold paid-for answers)."""
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


LL_PARAMS = GenParams(max_tokens=0, temperature=0.0, top_p=1.0)
Progress = Callable[[int], None]


class CachedLM:
    """Any `LM`, answered from the request cache first; what is missing goes to the model in chunks of
    about `chunk` requests (sorted by context, so prompts that share a prefix meet in one chunk, where
    the model runs the prefix once; never splitting the continuations of one context), each chunk
    committed as it returns.

    Keys: (`namespace`-loglikelihood | -completion | -chat, the model's `identity`, the request, its
    parameters), so a changed model or parameter never reuses an answer."""

    def __init__(self, lm: LM, cache: RequestCache, *, namespace: str = "lm", chunk: int = 64):
        self.lm, self.cache, self.namespace, self.chunk = lm, cache, namespace, max(1, chunk)
        self.counts = {"cached": 0, "computed": 0}

    @property
    def name(self) -> str:
        return self.lm.name

    @property
    def identity(self) -> str:
        return self.lm.identity

    def _run(self, kind: str, prompts: list[str], params: list[GenParams], send: Callable[[list[int]], list],
             decode: Callable[[str], Any], encode: Callable[[Any], str], progress: Progress | None,
             group: Callable[[int], str]) -> list:
        tag = f"{self.namespace}-{kind}"
        keys = [request_key(tag, self.lm.identity, p, q) for p, q in zip(prompts, params, strict=True)]
        found = self.cache.get_many(list(dict.fromkeys(keys)))
        out: list[Any] = [None] * len(keys)
        missing = []
        for i, k in enumerate(keys):
            if k in found:
                out[i] = decode(found[k].text)
            else:
                missing.append(i)
        self.counts["cached"] += len(keys) - len(missing)
        if progress:
            progress(len(keys) - len(missing))
        missing.sort(key=group)  # prompts sharing a prefix (a header, a question and its twins) share a chunk
        chunks: list[list[int]] = []
        for i in missing:
            if not chunks or (len(chunks[-1]) >= self.chunk and group(chunks[-1][-1]) != group(i)):
                chunks.append([])
            chunks[-1].append(i)
        for part in chunks:
            for i, value in zip(part, send(part), strict=True):
                out[i] = value
                self.cache.put(tag, self.lm.identity, prompts[i], params[i], Completion(encode(value), 0, 0))
            self.counts["computed"] += len(part)
            if progress:
                progress(len(part))
        return out

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest],
                      progress: Progress | None = None) -> list[Loglikelihood]:
        prompts = [json.dumps([r.context, r.continuation], ensure_ascii=False) for r in requests]
        return self._run("loglikelihood", prompts, [LL_PARAMS] * len(requests),
                         lambda part: self.lm.loglikelihood([requests[i] for i in part]),
                         lambda t: Loglikelihood(*json.loads(t)),
                         lambda v: json.dumps([v.logprob, v.n_tokens, v.is_greedy]), progress,
                         group=lambda i: requests[i].context)

    def generate_until(self, requests: Sequence[GenerateRequest], progress: Progress | None = None) -> list[str]:
        """Texts in request order; chat and raw requests are kept apart in the cache."""
        out: list[str | None] = [None] * len(requests)
        for chat in (False, True):
            idx = [i for i, r in enumerate(requests) if r.chat == chat]
            if not idx:
                continue
            texts = self._run("chat" if chat else "completion", [requests[i].context for i in idx],
                              [requests[i].params for i in idx],
                              lambda part, idx=idx: self.lm.generate_until([requests[idx[j]] for j in part]),
                              lambda t: t, lambda v: v, progress, group=lambda j, idx=idx: requests[idx[j]].context)
            for i, t in zip(idx, texts, strict=True):
                out[i] = t
        return out  # type: ignore[return-value]
