"""Faults name their cause, and nothing finished is lost (docs/reliability.md says which test checks what).

A full disk (a real tmpfs where this machine lets us mount one; everywhere an injected ENOSPC at the shard,
checkpoint and manifest writers), permission denied, SIGKILL / SIGTERM at stage boundaries and mid-stage,
a second writer, an endpoint that answers 429, 500, garbage or nothing, and a corrupt request cache. Each
test asserts the one line the user sees and that finished work is intact. Tests that run the CLI in
subprocesses are marked `e2e`; they are part of `make test` (deselect them with `-m 'not e2e'`).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from teacher_helpers import FakeEndpoint
from typer.testing import CliRunner

from cleanroom import pipeline
from cleanroom.cli import app
from cleanroom.config import load_config
from cleanroom.contract import StageResult, check_cancelled
from cleanroom.pipeline import Pipeline, Stage
from cleanroom.store import RunStore, StoreError, sha256_file

CLI = [sys.executable, "-m", "cleanroom.cli"]
ENV = {**os.environ, "COLUMNS": "200"}  # rich wraps at 80 columns off a terminal
PRE_TRAIN = ("config.toml", "world", "sources", "corpora", "curated", "curation", "tokenizer.json", "tokens",
             "manifests/world.json", "manifests/generate.json", "manifests/curate.json", "manifests/tokenize.json")
e2e = pytest.mark.e2e


def disk_full() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def cli(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + list(args), capture_output=True, text=True, timeout=600, env=ENV, **kw)


def invoke(*args: str):
    """The CLI in this process, so that a test can inject a fault with monkeypatch."""
    return CliRunner().invoke(app, list(args))


def error_line(output: str) -> str:
    """The one line the user is told (and there is exactly one, with no traceback)."""
    lines = [ln for ln in output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in output and "interrupted" not in output, output[-3000:]
    return lines[0]


def outputs(run: Path, prefix: str = "") -> dict[str, str]:
    """rel path -> sha256 of every output recorded by `run`'s manifests (under `prefix`), except the files that
    record timings (train logs, summary and report): equal runs have equal bytes in everything else."""
    out = {}
    for m in (run / "manifests").rglob("*.json"):
        for rel, entry in json.loads(m.read_text())["outputs"].items():
            if rel.startswith(prefix) and not rel.startswith(("logs/", "summary.json", "report.")):
                out[rel] = entry["sha256"]
    return out


def results(run: Path) -> dict:
    data = json.loads((run / "summary.json").read_text())
    return {k: data[k] for k in ("results", "claims", "controls", "tamper")}


def finished(run: Path) -> set[str]:
    """The stage keys `run` has manifests for, each checked against its outputs (raises if any is damaged)."""
    store = RunStore(run)
    keys = {str(p.relative_to(run / "manifests").with_suffix("")) for p in (run / "manifests").rglob("*.json")}
    for key in keys:
        store.verify(store.manifest(key))
    return keys


def on_disk(run: Path, prefix: str) -> dict[str, str]:
    """rel path -> sha256 of every file under `run/prefix` (temporaries excluded)."""
    return {str(p.relative_to(run)): sha256_file(p) for p in (run / prefix).rglob("*")
            if p.is_file() and not p.name.startswith(".")}


def copy_run(src: Path, dest: Path, only: tuple[str, ...] | None = None) -> Path:
    """A copy of run `src` (only the paths in `only`, when given)."""
    if only is None:
        shutil.copytree(src, dest)
    for rel in only or ():
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if (src / rel).is_dir() else shutil.copy2)(src / rel, dest / rel)
    return dest


def leftovers(run: Path) -> list[str]:
    """Temporary files or directories a failed write left behind."""
    return sorted(str(p) for p in run.rglob(".*") if p.name != ".writer.lock")


# --------------------------------------------------------------------------- the root cause, not an "interrupt"

def fails_or_waits(cfg, store, recipe: str) -> StageResult:
    """`web` waits until cancelled; `mix` fails on a full disk; the others finish."""
    if recipe == "mix":
        time.sleep(0.3)
        raise disk_full()
    end = time.time() + (0.05 if recipe != "web" else 20)
    while time.time() < end:
        check_cancelled()
        time.sleep(0.01)
    store.path(f"out/{recipe}.txt").parent.mkdir(parents=True, exist_ok=True)
    store.path(f"out/{recipe}.txt").write_text(recipe)
    return StageResult(outputs=[f"out/{recipe}.txt"])


def batch_fails_or_waits(cfg, store, recipes: list[str]) -> dict[str, StageResult]:
    """The group holding `mix` (the second) fails on a full disk; the first waits until cancelled."""
    if "mix" in recipes:
        time.sleep(0.3)
        raise disk_full()
    for _ in range(2000):
        check_cancelled()
        time.sleep(0.01)
    raise AssertionError("never cancelled")


@pytest.mark.parametrize("batched", [False, True])
def test_a_failure_in_a_parallel_stage_is_reported_not_its_siblings_cancellation(tmp_path, monkeypatch, batched):
    """The failing key or batched group is not the first in key order: its siblings get cancelled first in
    key order, which used to be raised as an "interrupt" (exit 130). The disk-full error wins now."""
    stage = Stage("train", f"{__name__}:fails_or_waits", (), ("train",), over="trained", parallel=True,
                  batch_func=f"{__name__}:batch_fails_or_waits" if batched else None)
    monkeypatch.setitem(pipeline.STAGES, "train", stage)
    # one model per recipe: the failing group (textbook, mix, diverse) is the second, as the test needs
    sets = ["runtime.jobs=2", f"runtime.batch_models={str(batched).lower()}", "train.replicates=1"]
    t0 = time.perf_counter()
    with pytest.raises(StoreError, match="disk full") as e:
        Pipeline(load_config("smoke", overrides=sets), RunStore(tmp_path / "api")).ensure("train")
    assert time.perf_counter() - t0 < 10, "the waiting sibling should have been cancelled"
    assert e.value.stage == ("train (textbook, mix, diverse)" if batched else "train/mix")
    check_cancelled()  # the flag is cleared for whatever runs next

    run = tmp_path / "cli"
    r = invoke("train", "--preset", "smoke", "--out", str(run), *[a for s in sets for a in ("--set", s)])
    assert r.exit_code == 2
    line = error_line(r.output)
    assert "stage `train" in line and "mix" in line and "disk full: " in line, line
    if not batched:  # a recipe that finished beside the failure keeps its manifest
        assert RunStore(run).manifest("train/textbook") is not None


# --------------------------------------------------------------------------- disk full

@pytest.fixture
def small_disk(tmp_path):
    """A 4 MB tmpfs; the test is skipped, saying why, where this machine does not allow mounting one."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no `mount` here; the injected-ENOSPC tests below cover each writer")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({(r.stderr or r.stdout).strip()}); the injected-ENOSPC tests "
                    f"below cover each writer")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


@e2e
def test_disk_full_while_recipes_train_side_by_side_is_one_line_and_resumes(smoke_run, small_disk):
    """The issue's case: the disk fills while recipes train beside each other. A copy of a finished run's
    tokens (2.2 MB) fills most of the 4 MB disk, so no model's first checkpoint fits. Two recipes, not all
    seven, to keep it cheap: their four models (two replicates each) train in two batched groups side by side,
    as the groups of a whole run do."""
    run = copy_run(smoke_run, small_disk / "run", PRE_TRAIN)
    before = finished(run)
    args = ["train", "--preset", "smoke", "--out", str(run), "--recipe", "web", "--recipe", "textbook"]
    r = cli(*args)
    assert r.returncode == 2, r.stderr[-3000:]
    line = error_line(r.stderr)
    assert "stage `train" in line and f"disk full: {run}/checkpoints/" in line and "free some space" in line, line
    assert finished(run) == before and not leftovers(run)  # nothing finished lost, nothing half-written kept

    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)  # free space
    r = cli(*args)
    assert r.returncode == 0, r.stderr[-3000:]
    trained = {rel: sha for rel, sha in outputs(smoke_run, "models/").items()
               if rel.startswith(("models/web/", "models/textbook/", "models/web~1/", "models/textbook~1/"))}
    assert outputs(run, "models/") == trained  # the models of the uninterrupted run, byte for byte


def _fsync_fails(monkeypatch, *markers: str) -> None:
    """ENOSPC from fsync of any file whose path contains every one of `markers`: the bytes are written, and
    the disk then reports that they do not fit (what a full disk does under delayed allocation)."""
    real = os.fsync

    def fsync(fd: int) -> None:
        if all(m in os.readlink(f"/proc/self/fd/{fd}") for m in markers):
            raise disk_full()
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def _torch_save_fails(monkeypatch, marker: str) -> None:
    """torch.save of a checkpoint writes half of it, then the disk is full."""
    real = torch.save

    def save(obj, f, *a, **kw):
        if marker in str(f):
            Path(f).write_bytes(b"half a checkpoint")
            raise disk_full()
        return real(obj, f, *a, **kw)

    monkeypatch.setattr(torch, "save", save)


WRITERS = {  # writer: (command, its stage key, how the disk fills, the path the error must name)
    "shard": (["generate"], "generate", lambda mp: _fsync_fails(mp, "/corpora/", "part-00001.parquet"),
              "/corpora/"),
    # `train --recipe web` trains web and web~1 at once: only web's checkpoint fails (web~1's dir is "web~1/")
    "checkpoint": (["train", "--recipe", "web"], "train/web", lambda mp: _torch_save_fails(mp, "/checkpoints/web/"),
                   "/checkpoints/web/last.pt"),
    "manifest": (["world"], "world", lambda mp: _fsync_fails(mp, "/manifests/.world.json."),
                 "/manifests/world.json"),
}


@e2e
@pytest.mark.parametrize("writer", list(WRITERS))
def test_disk_full_at_a_writer_keeps_the_previous_good_state(smoke_run, tmp_path, monkeypatch, writer):
    """Redo a finished stage (--force) while its shard / checkpoint / manifest writer hits a full disk: one line
    naming the stage and the file; the files from before are untouched, no temporary file is left, no
    manifest claims the unfinished stage; the rerun writes exactly what the uninterrupted run wrote."""
    command, key, fill_disk, path = WRITERS[writer]
    run = copy_run(smoke_run, tmp_path / "run")
    prefix = {"generate": "corpora/", "train/web": "models/web/", "world": "world/"}[key]
    args = [*command, "--preset", "smoke", "--out", str(run)]
    fill_disk(monkeypatch)
    r = invoke(*args, "--force")
    assert r.exit_code == 2, r.output
    line = error_line(r.output)
    assert f"stage `{key}`: disk full: {run}" in line and path in line and "free some space" in line, line
    assert RunStore(run).manifest(key) is None  # unfinished: never taken for finished
    assert on_disk(run, prefix) == outputs(smoke_run, prefix)  # every file from before, as it was
    assert not leftovers(run), leftovers(run)

    monkeypatch.undo()  # space freed
    r = invoke(*args)
    assert r.exit_code == 0, r.output
    finished(run)
    assert outputs(run) == outputs(smoke_run)


# --------------------------------------------------------------------------- permission denied

@e2e
def test_permission_denied_names_the_path_and_changes_nothing(smoke_run, tmp_path):
    """`world/` (then the whole run directory) read-only. Root ignores permission bits, so as root the
    command runs without the capabilities that let it (`setpriv`, util-linux)."""
    deny: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root, which permission bits do not stop, and `setpriv` (util-linux) is missing")
        caps = "-dac_override,-dac_read_search"
        deny = ["setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}", "--"]
    run = copy_run(smoke_run, tmp_path / "run", ("config.toml", "world", "manifests/world.json"))
    read_only = [run / "world", run / "world" / "items"]
    for d in read_only:
        d.chmod(0o555)
    try:
        r = subprocess.run(deny + CLI + ["world", "--force", "--preset", "smoke", "--out", str(run)],
                           capture_output=True, text=True, timeout=300, env=ENV)
        assert r.returncode == 2, r.stderr[-3000:]
        line = error_line(r.stderr)
        assert f"stage `world`: permission denied: {run}/world/" in line and "make it writable" in line, line
        assert on_disk(run, "world/") == outputs(smoke_run, "world/") and not leftovers(run)

        read_only.append(run)
        run.chmod(0o555)
        r = subprocess.run(deny + CLI + ["world", "--preset", "smoke", "--out", str(run)], capture_output=True,
                           text=True, timeout=300, env=ENV)
        assert r.returncode == 2 and f"{run} is not writable: Permission denied" in error_line(r.stderr), r.stderr
    finally:
        for d in read_only:
            d.chmod(0o755)


# --------------------------------------------------------------------------- kills

KILLS = [  # (signal, what must exist when it is sent), in the order a run reaches them
    (signal.SIGKILL, "manifests/world.json"),  # a stage boundary: world done, generate starting
    (signal.SIGTERM, "checkpoints/*/last.pt"),  # mid-train, the way Ctrl-C stops it (exit 130)
    (signal.SIGKILL, "manifests/train/*.json"),  # a boundary per model: one group done, the other mid-train
    (signal.SIGKILL, "manifests/tamper/*.json"),  # mid-tamper (eval before it finished whole)
]


@e2e
def test_killed_at_stage_boundaries_and_mid_stage_then_rerun_equals_an_uninterrupted_run(smoke_run, tmp_path):
    """One run killed at each point of KILLS in turn (each rerun resumes, then is killed at the next point):
    a finished stage key is never redone, every manifest on disk verifies after each kill, and the last
    rerun ends with the results and output bytes of the uninterrupted run."""
    run = tmp_path / "run"
    done: set[str] = set()
    for i, (sig, pattern) in enumerate(KILLS):
        log = tmp_path / f"log{i}.txt"
        with open(log, "w") as f:
            proc = subprocess.Popen(CLI + ["run", "--preset", "smoke", "--out", str(run)], stdout=f,
                                    stderr=subprocess.STDOUT, env=ENV, start_new_session=True)
            deadline = time.time() + 300
            while proc.poll() is None and time.time() < deadline and not any(run.glob(pattern)):
                time.sleep(0.02)
            assert proc.poll() is None, f"the run ended before {pattern} appeared:\n{log.read_text()[-3000:]}"
            os.killpg(proc.pid, sig)
            rc = proc.wait(timeout=120)
        text = log.read_text()
        redone = [k for k in done if f"▶ {k}:" in text]
        assert not redone, f"finished work was redone: {redone}"
        if sig == signal.SIGTERM:
            assert rc == 130 and "interrupted — finished work is kept" in text, text[-3000:]
        else:
            assert rc == -signal.SIGKILL
        done = finished(run)
        assert done >= {"world"}
    r = cli("run", "--preset", "smoke", "--out", str(run))
    assert r.returncode == 0, r.stderr[-3000:]
    assert not [k for k in done if f"▶ {k}:" in r.stderr]
    assert results(run) == results(smoke_run)
    assert outputs(run) == outputs(smoke_run)


# --------------------------------------------------------------------------- one writer per run directory

HOLD = """import sys, time
from cleanroom.store import writer_lock
with writer_lock(sys.argv[1], "cleanroom run --preset smoke --out " + sys.argv[1]):
    print("locked", flush=True)
    time.sleep(300)
"""


@e2e
def test_a_second_writer_is_refused_at_once_and_a_killed_writer_leaves_no_lock(smoke_run, tmp_path):
    run = copy_run(smoke_run, tmp_path / "run")
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        assert holder.stdout.readline().strip() == "locked"
        r = invoke("run", "--preset", "smoke", "--out", str(run))
        assert r.exit_code == 2
        line = error_line(r.output)
        assert f"run directory {run} is in use" in line and f"pid {holder.pid}: cleanroom run" in line, line
        assert "▶" not in r.output  # refused before doing anything
        assert "train" in invoke("config", "show", "--out", str(run)).output  # readers need no lock
        assert invoke("report", str(run)).exit_code == 0
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    r = invoke("world", "--preset", "smoke", "--out", str(run))  # the kernel released the dead holder's lock
    assert r.exit_code == 0 and "up to date" in r.output, r.output[-2000:]


# --------------------------------------------------------------------------- endpoints and the request cache

def _seeds(tmp_path: Path, n: int = 100) -> str:
    p = tmp_path / "seeds.jsonl"
    p.write_text("".join(json.dumps({"title": f"T{i}", "passage": f"T{i} is a topic. It is number {i}."}) + "\n"
                         for i in range(n)))
    return str(p)


def _cached_prompts(cache: Path, missing_ok: bool = False) -> set[str]:
    """The prompts a request cache holds answers to (`missing_ok`: none while it is not created yet)."""
    if missing_ok and not cache.exists():
        return set()
    try:
        with sqlite3.connect(cache) as db:
            return {r[0] for r in db.execute("SELECT prompt FROM requests")}
    except sqlite3.OperationalError:  # no table yet
        if missing_ok:
            return set()
        raise


FAILURES = {  # what the endpoint does after its first answers: (behaviour, what the error must say)
    "429": (("status", 429), "HTTP 429"),
    "500": (("status", 500), "HTTP 500"),
    "garbage": (("malformed", None), "malformed response"),
    "hang": (("hang", 4.0), "no answer within 1s"),
}


@pytest.mark.parametrize("failure", list(FAILURES))
def test_a_failing_endpoint_is_retried_then_named_and_its_answers_are_kept(tmp_path, failure):
    behaviour, cause = FAILURES[failure]
    out = tmp_path / "run"
    args = ["generate", "--teacher", "openai", "--model", "m", "--tokens", "600", "--source", _seeds(tmp_path),
            "--out", str(out), "--concurrency", "1", "--retries", "1", "--timeout", "1"]
    with FakeEndpoint(lambda n, body: ("ok", None) if n < 2 else behaviour) as ep:
        r = invoke(*args, "--base-url", ep.base_url)
        sent = len(ep.requests)
    assert r.exit_code == 2, r.output
    line = error_line(r.output)
    assert f"failed after 2 attempts: {cause}" in line and "finished requests are cached" in line, line
    assert sent == 4  # two answers, then one request tried twice: bounded
    kept = _cached_prompts(out / "cache" / "requests.sqlite")
    assert len(kept) == 2

    with FakeEndpoint() as ep:  # the endpoint is back: only what was not answered is asked
        r = invoke(*args, "--base-url", ep.base_url)
        asked = set(ep.answered)
    assert r.exit_code == 0, r.output
    assert asked and not asked & kept


def test_a_failing_endpoint_during_an_audit_is_named_and_its_answers_are_kept(tmp_path):
    from audit_helpers import need_benchmarks

    need_benchmarks()
    out = tmp_path / "audit"
    args = ["audit", "--model", "m", "--tasks", "mmlu", "--limit", "2", "--formulation", "letter", "--protocol",
            "chat", "--retries", "1", "--timeout", "1", "--concurrency", "1", "--out", str(out)]
    chats = [0]

    def behave(n, body):
        if "messages" not in body:
            return ("ok", None)  # the protocol probe
        chats[0] += 1
        return ("ok", "Answer: A") if chats[0] <= 3 else ("status", 500)

    with FakeEndpoint(behave) as ep:  # one URL throughout: it is part of the cache key
        r = invoke(*args, "--base-url", ep.base_url)
        assert r.exit_code == 2, r.output
        assert "failed after 2 attempts: HTTP 500" in error_line(r.output)
        kept = _cached_prompts(out / "cache" / "requests.sqlite")
        assert len(kept) == 4  # the probe and three answers

        before = len(ep.requests)
        ep.behave = lambda n, body: ("ok", "Answer: B")  # the endpoint is back
        r = invoke(*args, "--base-url", ep.base_url)
        asked = [b["messages"][-1]["content"] for b in ep.requests[before:]]
    assert r.exit_code == 0, r.output
    assert asked and not set(asked) & kept


@e2e
def test_an_audit_killed_mid_way_resumes_from_its_cache_to_the_same_results(tmp_path):
    from audit_helpers import need_benchmarks

    need_benchmarks()

    def behave(n, body):  # the answer depends on the prompt only, so any order of requests gets the same ones
        if "messages" not in body:
            return ("ok", None)  # the protocol probe
        return ("ok", "Answer: " + "ABCD"[len(body["messages"][-1]["content"]) % 4])

    args = ["audit", "--model", "m", "--tasks", "mmlu", "--limit", "3", "--formulation", "letter", "--protocol",
            "chat", "--concurrency", "1"]
    cache = tmp_path / "killed" / "cache" / "requests.sqlite"
    with FakeEndpoint(behave, delay=0.05) as ep:
        url = ["--base-url", ep.base_url]
        assert invoke(*args, *url, "--out", str(tmp_path / "whole")).exit_code == 0
        proc = subprocess.Popen(CLI + args + url + ["--out", str(cache.parents[1])], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env=ENV)
        deadline = time.time() + 120
        while proc.poll() is None and time.time() < deadline and len(_cached_prompts(cache, missing_ok=True)) < 6:
            time.sleep(0.02)
        assert proc.poll() is None, "the audit finished before it could be killed"
        proc.kill()
        proc.wait()
        kept = _cached_prompts(cache)
        before = len(ep.requests)
        r = invoke(*args, *url, "--out", str(cache.parents[1]))
        asked = {b["messages"][-1]["content"] for b in ep.requests[before:]}
    assert r.exit_code == 0, r.output[-3000:]
    assert asked and not asked & kept  # nothing answered before the kill was asked again
    whole, resumed = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("whole", "killed"))
    assert resumed["results"] == whole["results"]
    assert (pq.read_table(tmp_path / "killed" / "items" / "mmlu.parquet").to_pylist()
            == pq.read_table(tmp_path / "whole" / "items" / "mmlu.parquet").to_pylist())


@pytest.mark.parametrize("damage", ["not a database", "malformed"])
def test_a_corrupt_request_cache_is_one_line_and_is_left_as_it_is(tmp_path, damage):
    out = tmp_path / "run"
    cache = out / "cache" / "requests.sqlite"
    args = ["generate", "--teacher", "openai", "--model", "m", "--tokens", "300", "--source", _seeds(tmp_path),
            "--out", str(out), "--retries", "0"]
    if damage == "not a database":
        cache.parent.mkdir(parents=True)
        cache.write_bytes(b"this is not SQLite " * 300)
        expected = "file is not a database"
    else:
        with FakeEndpoint() as ep:
            assert invoke(*args, "--base-url", ep.base_url).exit_code == 0
        with sqlite3.connect(cache) as db:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        data = bytearray(cache.read_bytes())
        page = int.from_bytes(data[16:18], "big")
        data[page: page + 100] = b"\xff" * 100  # the table's first page after the schema
        cache.write_bytes(bytes(data))
        shutil.rmtree(out / "corpora")
        expected = "malformed"
    damaged = cache.read_bytes()
    with FakeEndpoint() as ep:
        r = invoke(*args, "--base-url", ep.base_url)
    assert r.exit_code == 2, r.output
    line = error_line(r.output)
    assert f"corrupted request cache {cache}" in line and expected in line and "move it aside" in line, line
    assert cache.read_bytes() == damaged  # the answers in it may still be recoverable: never touched
