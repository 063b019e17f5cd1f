"""The stage runner's parallel per-recipe stages: recipes overlap, each gets its share of the cores,
the first error stops the others, and stage timings count overlapping recipes once."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from cleanroom import pipeline
from cleanroom.config import load_config
from cleanroom.contract import StageResult, check_cancelled
from cleanroom.pipeline import Pipeline, Stage
from cleanroom.report.summary import busy_seconds, stage_usage, timings
from cleanroom.runtime import parallel_jobs
from cleanroom.store import Manifest, RunStore

SEEN: dict[str, dict] = {}


def fake_train(cfg, store, recipe: str) -> StageResult:
    """Sleeps a little, recording when it ran, in which thread, with how many torch threads."""
    t0 = time.time()
    time.sleep(0.4)
    SEEN[recipe] = {"start": t0, "end": time.time(), "thread": threading.current_thread().name,
                    "torch_threads": torch.get_num_threads()}
    rel = f"out/{recipe}.txt"
    store.path(rel).parent.mkdir(parents=True, exist_ok=True)
    store.path(rel).write_text(recipe)
    return StageResult(outputs=[rel])


def burn_cpu(cfg, store, recipe: str) -> StageResult:
    """Uses 0.3 s of this thread's CPU time (however long that takes on a loaded machine)."""
    end = time.thread_time() + 0.3
    while time.thread_time() < end:
        pass
    return StageResult(outputs=[])


def failing_or_waiting(cfg, store, recipe: str) -> StageResult:
    """`web` fails at once; the other recipes would run for 20 s unless cancelled."""
    if recipe == "web":
        raise ValueError("planted failure")
    end = time.time() + 20
    while time.time() < end:
        check_cancelled()
        time.sleep(0.01)
    return StageResult(outputs=[])


@pytest.fixture
def fake_stage(monkeypatch):
    def install(fn_name: str) -> None:
        stage = Stage("train", f"{__name__}:{fn_name}", (), ("train",), over="trained", parallel=True)
        monkeypatch.setitem(pipeline.STAGES, "train", stage)
    SEEN.clear()
    return install


def test_parallel_recipes_overlap_and_split_the_cores(tmp_path, fake_stage):
    fake_stage("fake_train")
    cfg = load_config("smoke", overrides=["runtime.jobs=2", "runtime.threads=1"])
    store = RunStore(tmp_path)
    before = torch.get_num_threads()
    Pipeline(cfg, store).ensure("train")
    assert set(SEEN) == set(cfg.trained())
    assert all(s["thread"] != threading.main_thread().name for s in SEEN.values())
    assert all(s["torch_threads"] == 1 for s in SEEN.values())
    assert torch.get_num_threads() == before  # the main thread gets its cores back
    # every recipe x 0.4 s, two at a time (from the recorded spans, not a wall-clock bound that a loaded
    # machine could break): the first two overlap, and never more than `jobs` run at once
    spans = sorted((s["start"], s["end"]) for s in SEEN.values())
    assert spans[1][0] < spans[0][1], "the first two recipes should run at the same time"
    assert max(sum(a <= t < b for a, b in spans) for t, _ in spans) == 2
    t = timings(store, cfg)["train"]
    assert t < 0.75 * sum(s["end"] - s["start"] for s in SEEN.values())
    # up to date now: a second pipeline skips every recipe and starts no threads
    p = Pipeline(cfg, store)
    SEEN.clear()
    p.ensure("train")
    assert SEEN == {} and len(p.skipped) == len(cfg.trained())


def test_cpu_time_of_parallel_recipes_is_counted_once(tmp_path, fake_stage):
    """Recipes running at once in threads split the process's CPU time: their manifests sum to what the
    process used (not twice that), and the stage's core share is CPU / (wall x cores)."""
    fake_stage("burn_cpu")
    cfg = load_config("smoke", overrides=["runtime.jobs=2", "runtime.threads=1"])
    store = RunStore(tmp_path)
    cpu0 = pipeline.process_cpu_seconds()
    Pipeline(cfg, store).ensure("train")
    used = pipeline.process_cpu_seconds() - cpu0
    ms = [store.manifest(f"train/{r}") for r in cfg.trained()]
    total = sum(m.cpu_seconds for m in ms)
    assert 0.3 * len(ms) * 0.95 <= total <= used + 0.05
    u = stage_usage(store, cfg)["train"]
    assert u.cpu_seconds == pytest.approx(total, abs=0.01) and u.cores == pipeline.usable_cores()
    assert u.core_share == pytest.approx(u.cpu_seconds / (u.seconds * u.cores), abs=1e-3)
    # a manifest from before CPU accounting still loads; its stage has no core share
    old = ms[0].model_dump()
    del old["cpu_seconds"], old["cores"]
    assert Manifest.model_validate(old).cpu_seconds is None


def test_cpu_meter_splits_overlapping_blocks(monkeypatch):
    """Process CPU seconds at each event: a starts at 0, b at 2 (a alone used 2), b ends at 3 (1 s shared:
    0.5 each), a ends at 5 (alone again: 2 more)."""
    meter, clock = pipeline.CpuMeter(), iter([0.0, 2.0, 3.0, 5.0])
    monkeypatch.setattr(pipeline, "process_cpu_seconds", lambda: next(clock))
    with meter.measure() as a, meter.measure() as b:
        pass
    assert b["cpu_seconds"] == 0.5 and a["cpu_seconds"] == 4.5


def test_first_error_stops_the_other_recipes(tmp_path, fake_stage):
    fake_stage("failing_or_waiting")
    cfg = load_config("smoke", overrides=["runtime.jobs=2"])
    store = RunStore(tmp_path)
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match="planted failure"):
        Pipeline(cfg, store).ensure("train")
    assert time.perf_counter() - t0 < 10, "the waiting recipe should have been cancelled"
    assert all(store.manifest(f"train/{r}") is None for r in cfg.trained())
    check_cancelled()  # the flag is cleared for whatever runs next


def test_parallel_jobs_policy(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    cpu = load_config("smoke", overrides=["runtime.device=cpu", "runtime.threads=0"]).runtime
    assert parallel_jobs(cpu, 4) == (4, 2)  # auto: min(recipes, cores), cores split between them
    assert parallel_jobs(cpu, 1) == (1, 8)
    explicit = load_config("smoke", overrides=["runtime.device=cpu", "runtime.jobs=2", "runtime.threads=3"]).runtime
    assert parallel_jobs(explicit, 4) == (2, 3)
    monkeypatch.setenv("WORLD_SIZE", "2")  # torchrun: the process group trains one model at a time
    assert parallel_jobs(explicit, 4)[0] == 1


def test_busy_seconds_counts_overlap_once():
    assert busy_seconds([(0, 10), (5, 12), (20, 21)]) == 13
    assert busy_seconds([(0, 1), (1, 2)]) == 2
    assert busy_seconds([(3, 4), (0, 10)]) == 10
    assert busy_seconds([]) == 0
