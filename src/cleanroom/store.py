"""The run directory: atomic writes, manifests with checksums, corruption detection.

Layout (DESIGN.md section 5): `config.toml`, `world/`, `corpora/<recipe>/`, `curation/<recipe>/`,
`tokenizer.json`, `tokens/`, `models/<recipe>/`, `evals/<recipe>/`, `summary.json`, `report.*`,
`figures/`, and `manifests/<stage>[/<recipe>].json`, one per finished stage.

Every file is written to a temporary name in the same directory and renamed into place, so a crash
or a full disk never leaves a half-written file under a real name. A stage's manifest is written last:
a stage without a manifest is unfinished, whatever files it left behind. A write that fails for a
reason of the machine's (disk full, permission denied) becomes one `StoreError` line naming the path
(`os_error`). One command writes to a run directory at a time (`writer_lock`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import io
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, Field

from cleanroom.errors import CleanroomError, CorruptFileError, StoreError

_UMASK = os.umask(0)
os.umask(_UMASK)
_NO_ROOM = 1 << 20  # bytes free below which a failed write is put down to a full disk
_OS_ERRORS = {errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded", errno.EACCES: "permission denied",
              errno.EPERM: "permission denied", errno.EROFS: "read-only file system"}
_HINTS = {"disk full": "free some space, then rerun the same command to resume (finished work is kept)",
          "disk quota exceeded": "free some space, then rerun the same command to resume (finished work is kept)",
          "permission denied": "make it writable or choose another --out"}


def os_error(e: BaseException, path: str | os.PathLike | None) -> StoreError | None:
    """The one-line error for a failed read or write at `path`: "disk full: PATH — free some space, ...".

    An `OSError` names its own file if it has one. Any other exception (a library's writer, e.g.
    `torch.save`, fails with a RuntimeError on a full disk) counts only when the disk under `path` has
    no room left; otherwise None, and the caller re-raises `e` as it is."""
    if isinstance(e, OSError):
        what = _OS_ERRORS.get(e.errno or 0) or (e.strerror or str(e)).lower()
        where = e.filename if e.filename and not str(e.filename).endswith(".tmp") else path
    elif isinstance(e, Exception) and not isinstance(e, CleanroomError) and path is not None and _no_room(path):
        what, where = "disk full", path
    else:
        return None
    hint = _HINTS.get(what)
    return StoreError(what + (f": {where}" if where else "") + (f" — {hint}" if hint else ""))


def _no_room(path: str | os.PathLike) -> bool:
    """Whether the file system holding `path` (or its nearest existing parent) is full."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free < _NO_ROOM
    except OSError:
        return False


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it over `path` only if the block succeeds. If it
    fails for a machine reason (disk full, permission denied), raise `os_error`'s one line naming `path`;
    the temporary file is removed and whatever was at `path` before is left as it was."""
    path = Path(path)
    tmp_path = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        yield tmp_path
        if tmp_path.exists():
            os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; give files the usual permissions
        os.replace(tmp_path, path)
    except Exception as e:
        error = os_error(e, path)  # before the temporary file goes: it is what filled the disk
        if error is None:
            raise
        raise error from e
    finally:
        if tmp_path is not None and tmp_path.exists():
            tmp_path.unlink()


def replace_dir(new: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Put directory `new` where `dest` is, replacing `dest` whole: the old one is renamed aside, the new
    one renamed in, then the old one deleted (a crash in between leaves a complete directory at `dest`
    or at its `.old-*` sibling, never a mix of two)."""
    new, dest = Path(new), Path(dest)
    old = None
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dest, old)
    os.replace(new, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode())


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_parquet(path: str | os.PathLike, table: pa.Table) -> None:
    """Deterministic Parquet (no timestamps in metadata), so equal tables give equal bytes."""
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", write_statistics=False, store_schema=True)
    write_bytes(path, buf.getvalue())


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


class FileEntry(BaseModel):
    sha256: str
    bytes: int


class Manifest(BaseModel):
    """What a finished stage wrote, from which config and inputs."""

    stage: str
    fingerprint: str
    inputs: dict[str, str] = Field(default_factory=dict)
    outputs: dict[str, FileEntry] = Field(default_factory=dict)
    stats: dict[str, Any] = Field(default_factory=dict)
    seconds: float = 0.0
    finished_at: str = ""
    ended: float = 0.0  # Unix time the stage finished: with `seconds`, when it ran (parallel recipes overlap)
    # process CPU seconds (every thread, reaped children) the key used; keys running at once split what the
    # process used while they overlapped (pipeline.CpuMeter), so a stage's keys sum without double counting.
    # None in manifests from before it was recorded. `cores`: the cores the process could use.
    cpu_seconds: float | None = None
    cores: int = 0

    @property
    def digest(self) -> str:
        """One hash over the stage's outputs: downstream stages key their inputs on it."""
        return self.digest_of(None)

    def digest_of(self, prefixes: tuple[str, ...] | None) -> str:
        """One hash over the outputs whose paths start with one of `prefixes` (all outputs when None):
        what a downstream stage that reads only those files keys its inputs on."""
        h = hashlib.sha256()
        for rel in sorted(self.outputs):
            if prefixes is None or rel.startswith(prefixes):
                h.update(f"{rel}\0{self.outputs[rel].sha256}\n".encode())
        return h.hexdigest()[:16]


class RunStore:
    """A run directory. Paths given to its methods are relative to the run root."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".write-test-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            raise StoreError(f"output directory {self.root} is not writable: {e.strerror or e}") from None

    def path(self, rel: str | os.PathLike) -> Path:
        return self.root / rel

    def exists(self, rel: str) -> bool:
        return self.path(rel).exists()

    # writes (all atomic)
    def write_bytes(self, rel: str, data: bytes) -> Path:
        write_bytes(self.path(rel), data)
        return self.path(rel)

    def write_text(self, rel: str, text: str) -> Path:
        write_text(self.path(rel), text)
        return self.path(rel)

    def write_json(self, rel: str, obj: Any) -> Path:
        write_json(self.path(rel), obj)
        return self.path(rel)

    def write_parquet(self, rel: str, table: pa.Table) -> Path:
        write_parquet(self.path(rel), table)
        return self.path(rel)

    # reads
    def read_json(self, rel: str) -> Any:
        p = self.path(rel)
        try:
            return json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise StoreError(f"corrupted file {p}: not valid JSON ({e})") from None

    def read_parquet(self, rel: str, columns: list[str] | None = None) -> pa.Table:
        p = self.path(rel)
        if p.is_dir():
            files = sorted(p.glob("*.parquet"))
            if not files:
                raise StoreError(f"no Parquet files in {p}")
            tables = [self._read_one(f, columns) for f in files]
            return pa.concat_tables(tables)
        return self._read_one(p, columns)

    @staticmethod
    def _read_one(p: Path, columns: list[str] | None) -> pa.Table:
        try:
            return pq.read_table(p, columns=columns)
        except FileNotFoundError:
            raise StoreError(f"missing file {p}") from None
        except (pa.ArrowInvalid, OSError) as e:
            raise StoreError(f"corrupted file {p}: not readable as Parquet ({e})") from None

    # manifests
    def _manifest_path(self, key: str) -> Path:
        return self.root / "manifests" / f"{key}.json"

    def manifest(self, key: str) -> Manifest | None:
        p = self._manifest_path(key)
        if not p.exists():
            return None
        try:
            return Manifest.model_validate_json(p.read_text())
        except ValueError:
            raise StoreError(f"corrupted file {p}: not a valid stage manifest (delete it to redo `{key}`)") from None

    def files_under(self, rels: list[str]) -> list[str]:
        """Expand directories into the files below them (skipping temporaries), as sorted rel paths."""
        out: set[str] = set()
        for rel in rels:
            p = self.path(rel)
            if p.is_dir():
                out.update(
                    str(f.relative_to(self.root))
                    for f in p.rglob("*")
                    if f.is_file() and not f.name.startswith(".")
                )
            elif p.is_file():
                out.add(str(Path(rel)))
            else:
                raise StoreError(f"stage output {p} was not written")
        return sorted(out)

    def finish(
        self, key: str, fingerprint: str, inputs: dict[str, str], outputs: list[str], stats: dict, seconds: float,
        cpu_seconds: float | None = None, cores: int = 0,
    ) -> Manifest:
        entries = {
            rel: FileEntry(sha256=sha256_file(self.path(rel)), bytes=self.path(rel).stat().st_size)
            for rel in self.files_under(outputs)
        }
        m = Manifest(
            stage=key,
            fingerprint=fingerprint,
            inputs=inputs,
            outputs=entries,
            stats=stats,
            seconds=round(seconds, 3),
            finished_at=time.strftime("%Y-%m-%dT%H:%M:%S"),
            ended=round(time.time(), 3),
            cpu_seconds=None if cpu_seconds is None else round(cpu_seconds, 3),
            cores=cores,
        )
        write_text(self._manifest_path(key), m.model_dump_json(indent=2) + "\n")
        return m

    def invalidate(self, key: str) -> None:
        self._manifest_path(key).unlink(missing_ok=True)

    def verify(self, m: Manifest) -> None:
        """Check every output of a finished stage; raise CorruptFileError naming the first bad file."""
        for rel, entry in m.outputs.items():
            p = self.path(rel)
            if not p.exists():
                raise CorruptFileError(p, "file is missing", m.stage)
            size = p.stat().st_size
            if size != entry.bytes:
                raise CorruptFileError(p, f"size {size} != {entry.bytes} bytes recorded (truncated?)", m.stage)
            if sha256_file(p) != entry.sha256:
                raise CorruptFileError(p, "checksum mismatch", m.stage)


LOCK_FILE = ".writer.lock"


@contextlib.contextmanager
def writer_lock(root: str | os.PathLike, command: str) -> Iterator[None]:
    """Hold run directory `root`'s writer lock for the block: one writing command per run directory.

    An `fcntl.flock` on `root/.writer.lock`, which the kernel releases when the process ends however it
    ends (SIGKILL included), so a lock is never stale. The file records the holder's pid and command for
    the error a second writer gets; it is never deleted (a new file would be a new, unrelated lock)."""
    path = Path(root) / LOCK_FILE
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666 & ~_UMASK)
    except OSError as e:
        raise (os_error(e, path) or e) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StoreError(f"run directory {root} is in use by another cleanroom command ({_holder(fd)}); "
                             f"wait for it to finish or stop it, then rerun") from None
        try:  # who holds it, for the message above; the lock works without it (e.g. on a full disk)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()}: {command}\n".encode(), 0)
        except OSError:
            pass
        yield
    finally:
        os.close(fd)  # releases the lock


def _holder(fd: int) -> str:
    """The lock holder's "pid N: command" line (it writes it just after taking the lock: wait briefly)."""
    for _ in range(20):
        text = os.pread(fd, 4096, 0).decode(errors="replace").strip()
        if text:
            return text
        time.sleep(0.05)
    return "pid unknown"
