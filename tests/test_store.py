"""Run store: atomic writes, manifests, skip-by-fingerprint, corruption detection, bad directories."""

from __future__ import annotations

import os
import subprocess
import sys

import pyarrow as pa
import pytest

from cleanroom.config import load_config
from cleanroom.pipeline import Pipeline
from cleanroom.store import CorruptFileError, RunStore, StoreError, atomic_path, sha256_file


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half-writ")
            raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_write_parquet_is_deterministic(tmp_path):
    store = RunStore(tmp_path)
    t = pa.table({"x": [1, 2, 3], "y": ["a", "b", "c"]})
    store.write_parquet("a.parquet", t)
    store.write_parquet("b.parquet", t)
    assert sha256_file(store.path("a.parquet")) == sha256_file(store.path("b.parquet"))


def test_unwritable_output_dir_is_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="is not writable"):
        RunStore(blocker / "run")
    r = subprocess.run([sys.executable, "-m", "cleanroom.cli", "world", "--preset", "smoke", "--out",
                        str(blocker / "run")], capture_output=True, text=True)
    assert r.returncode == 2 and "is not writable" in r.stderr and "Traceback" not in r.stderr


def test_skip_rerun_force_and_config_change(tmp_path):
    cfg = load_config("smoke")
    store = RunStore(tmp_path)
    p1 = Pipeline(cfg, store)
    p1.ensure("generate")
    assert p1.ran == ["world", "generate"]
    p2 = Pipeline(cfg, store)
    p2.ensure("generate")
    assert p2.ran == [] and p2.skipped == ["world", "generate"]
    p3 = Pipeline(cfg, store, force={"generate"})
    p3.ensure("generate")
    assert p3.ran == ["generate"]
    # a recipe-only change redoes generate but not world
    p4 = Pipeline(load_config("smoke", overrides=["recipes.token_budget=30000"]), store)
    p4.ensure("generate")
    assert p4.ran == ["generate"] and p4.skipped == ["world"]


def test_corrupted_file_is_reported_and_nothing_else_touched(tmp_path):
    cfg = load_config("smoke")
    store = RunStore(tmp_path)
    Pipeline(cfg, store).ensure("generate")
    victim = store.path("corpora/web/part-00000.parquet")
    others = {p: sha256_file(p) for p in tmp_path.rglob("*") if p.is_file() and p != victim}
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])  # truncate
    with pytest.raises(CorruptFileError) as e:
        Pipeline(cfg, store).ensure("generate")
    assert str(victim) in str(e.value) and "truncated" in str(e.value)
    r = subprocess.run([sys.executable, "-m", "cleanroom.cli", "generate", "--out", str(tmp_path)],
                       capture_output=True, text=True)
    assert r.returncode == 2 and str(victim) in r.stderr and "Traceback" not in r.stderr
    assert {p: sha256_file(p) for p in others} == others
    assert victim.read_bytes() == data[: len(data) // 2]
    # same size, flipped byte: caught by the checksum
    victim.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    with pytest.raises(CorruptFileError, match="checksum mismatch"):
        Pipeline(cfg, store).ensure("generate")
    # --force on the stage that wrote it rebuilds it
    Pipeline(cfg, store, force={"generate"}).ensure("generate")
    assert victim.read_bytes() == data


def test_corrupted_manifest_is_reported(tmp_path):
    cfg = load_config("smoke")
    store = RunStore(tmp_path)
    Pipeline(cfg, store).ensure("world")
    store.path("manifests/world.json").write_text("{not json")
    with pytest.raises(StoreError, match="manifests/world.json"):
        Pipeline(cfg, store).ensure("world")


def test_stage_command_uses_saved_config(tmp_path):
    env = dict(os.environ)
    r = subprocess.run([sys.executable, "-m", "cleanroom.cli", "world", "--preset", "smoke", "--out", str(tmp_path)],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-m", "cleanroom.cli", "world", "--out", str(tmp_path)],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0 and "up to date" in r.stderr
