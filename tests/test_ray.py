"""The Ray executor gives exactly the local executor's output: on planted corpora (duplicates that straddle
shards, leaked evaluation items, junk), through the curate stage on the smoke corpora (byte-identical
shards and lineage), and through `cleanroom curate --executor ray --input ...`.

One local Ray instance (`ray.init(num_cpus=2)`) serves the module and is shut down after it (~10 s to
start on a busy 2-core machine; the module takes ~40 s)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from synthetic_corpus import planted_corpus
from typer.testing import CliRunner

from cleanroom.cli import app
from cleanroom.config import CurateConfig
from cleanroom.curate import Document, LocalExecutor, build_steps
from cleanroom.curate.decontam import EvalItem
from cleanroom.curate.ray_executor import RayExecutor
from cleanroom.curate.stage import make_executor
from cleanroom.pipeline import Pipeline
from cleanroom.store import RunStore


@pytest.fixture(scope="module")
def ray_local():
    """One local Ray instance for the module (a test that uses it is end to end: mark it `e2e`)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, address="local")
    try:
        yield ray
    finally:
        ray.shutdown()


def _planted_docs() -> tuple[list[Document], list[EvalItem]]:
    planted = planted_corpus(n_base=700, n_exact=50, n_near=80, seed=5, min_words=60, max_words=160, max_edits=2)
    docs = list(planted.docs)
    items = [EvalItem(f"item-{i}", "bench", " ".join(docs[i].text.split()[:30])) for i in range(0, 60, 6)]
    # evaluation items leaked into later documents, junk documents the quality rules drop
    extra = [f"Some notes. {items[k].text} More words follow here about other things." for k in range(0, 10, 3)]
    extra += ["$$$ ### !!! click here", "buy buy buy buy buy buy buy buy buy buy buy"]
    docs += [Document(f"x{i}", t, {"kind": "planted"}, {"id": f"x{i}", "text": t}) for i, t in enumerate(extra)]
    return docs, items


def _fresh(docs: list[Document]) -> list[Document]:
    return [Document(d.id, d.text, dict(d.meta), dict(d.row)) for d in docs]


def _without_seconds(steps: list[dict]) -> list[dict]:
    return [{k: v for k, v in s.items() if k != "seconds"} for s in steps]


@pytest.mark.e2e
def test_ray_executor_equals_local_on_planted_corpus(ray_local):
    docs, items = _planted_docs()
    cfg = CurateConfig()
    local = LocalExecutor(build_steps(cfg, items)).run(_fresh(docs))
    # 4 shards of ~210 documents: copies straddle shard boundaries; small step batches: many batches
    steps = build_steps(cfg, items)
    for s in steps:
        s.batch_size = 97
    local_small = LocalExecutor(build_steps(cfg, items)).run(_fresh(docs))
    ray_result = RayExecutor(steps, shards=4).run(_fresh(docs))
    assert [d.id for d in local.kept] == [d.id for d in local_small.kept]  # batching never changes the result
    assert [d.id for d in ray_result.kept] == [d.id for d in local.kept]
    assert [dataclasses.astuple(r) for r in ray_result.removed] == [dataclasses.astuple(r) for r in local.removed]
    assert ray_result.leaks == local.leaks and len(local.leaks) >= 3
    assert _without_seconds(ray_result.steps) == _without_seconds(local.steps)
    # what the map/reduce split is for: the steps run naively shard by shard keep cross-shard copies
    fresh = _fresh(docs)
    naive = [d.id for i in range(4) for d in LocalExecutor(build_steps(cfg, items)).run(
        fresh[len(fresh) * i // 4: len(fresh) * (i + 1) // 4]).kept]
    assert len(naive) > len(local.kept) + 40
    removed_by = {s["step"]: s["removed"] for s in local.steps}
    assert removed_by["exact_dedup"] >= 40 and removed_by["near_dedup"] >= 40
    assert removed_by["decontaminate"] >= 3 and removed_by["quality"] >= 2


@pytest.mark.e2e
def test_ray_executor_with_the_safety_filter_and_ranks(ray_local, smoke_corpora):
    from cleanroom.curate.stage import eval_items, read_documents

    docs = read_documents(smoke_corpora.read_parquet("sources/web_stream"), "web_stream")
    items = eval_items(smoke_corpora)
    cfg = CurateConfig(steps=["exact_dedup", "near_dedup", "decontaminate", "quality", "safety"])
    for rank in (0, 1):
        local = LocalExecutor(build_steps(cfg, items, safety=True)).run(_fresh(docs), rank, 2)
        remote = RayExecutor(build_steps(cfg, items, safety=True), shards=3).run(_fresh(docs), rank, 2)
        assert [d.id for d in remote.kept] == [d.id for d in local.kept]
        assert [dataclasses.astuple(r) for r in remote.removed] == [dataclasses.astuple(r) for r in local.removed]
        assert remote.safety == local.safety and local.safety["n_restricted"] > 0


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.e2e
def test_curate_stage_on_ray_is_byte_identical(ray_local, smoke_corpora, smoke_cfg, tmp_path):
    out = {}
    for executor in ("local", "ray"):
        root = tmp_path / executor
        shutil.copytree(smoke_corpora.root, root)
        cfg = smoke_cfg.model_copy(deep=True)
        cfg.runtime.executor = executor
        store = RunStore(root)
        Pipeline(cfg, store).ensure("curate")
        out[executor] = (_files(root / "curated"), _files(root / "curation"), store.manifest("curate"))
    (cur_l, lin_l, m_l), (cur_r, lin_r, m_r) = out["local"], out["ray"]
    assert len(cur_l) >= 7 and cur_r == cur_l  # every shard of every recipe, byte for byte
    assert lin_r == lin_l  # lineage, decontamination and summary.json
    assert m_r.fingerprint == m_l.fingerprint  # the executor is a runtime choice: no fingerprint changes
    assert m_r.outputs == m_l.outputs


@pytest.mark.e2e
def test_cli_standalone_with_ray(ray_local, smoke_corpora, tmp_path):
    rows = smoke_corpora.read_parquet("sources/web_stream").to_pylist()[:1500]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "in.parquet")
    runner = CliRunner()
    for executor in ("local", "ray"):
        res = runner.invoke(app, ["curate", "--input", str(tmp_path / "in.parquet"), "--output",
                                  str(tmp_path / executor), "--eval-items", str(smoke_corpora.path("world/items")),
                                  "--preset", "smoke", "--executor", executor])
        assert res.exit_code == 0, res.output
    local, remote = _files(tmp_path / "local"), _files(tmp_path / "ray")
    summaries = [json.loads(f.pop("summary.json")) for f in (local, remote)]
    assert "part-00000.parquet" in local and remote == local  # kept rows, lineage, leaks: byte for byte
    for s in summaries:  # the summary differs only in where it was written and the step timings
        s.pop("output")
        s["recipes"]["in"]["steps"] = _without_seconds(s["recipes"]["in"]["steps"])
    assert summaries[0] == summaries[1]
    res = runner.invoke(app, ["curate", "--input", str(tmp_path / "in.parquet"), "--output", str(tmp_path / "x"),
                              "--executor", "spark"])
    assert res.exit_code == 2 and "--executor must be local or ray" in res.output


def test_local_is_the_default_executor(smoke_cfg):
    assert smoke_cfg.runtime.executor == "local"
    assert isinstance(make_executor([], smoke_cfg.runtime), LocalExecutor)
    ray_cfg = smoke_cfg.model_copy(deep=True)
    ray_cfg.runtime.executor = "ray"
    assert isinstance(make_executor([], ray_cfg.runtime), RayExecutor)
    assert ray_cfg.fingerprint() == smoke_cfg.fingerprint()


def test_missing_ray_names_the_package(monkeypatch):
    import sys

    from cleanroom.errors import CleanroomError
    from cleanroom.ray_cluster import ray_session

    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    with pytest.raises(CleanroomError, match=r"pip install 'cleanroom\[ray\]'"), ray_session():
        pass


@pytest.mark.e2e
def test_teacher_workers_on_ray_write_the_local_corpus(ray_local, tmp_path):
    """Two teacher replicas as Ray actors (one killed before it answers anything: its prompts go to the other)
    write the same corpus as one local teacher, and every completion lands in the one request cache."""
    from cleanroom.collect.stage import run_collect
    from cleanroom.config import load_config
    from cleanroom.teachers import GenParams
    from cleanroom.teachers.cache import RequestCache
    from cleanroom.teachers.pool import RayTeacher, TeacherPool

    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text("".join(json.dumps({"title": f"Topic{i}", "passage": f"Topic{i} has {i} parts. Each part is "
                                         f"small. People study Topic{i} at school. It is {i + 2} years old."}) + "\n"
                             for i in range(40)))
    sets = ["corpora.st.kind=teacher", "corpora.st.teacher=procedural", f"corpora.st.source={seeds}",
            "corpora.st.tokens=3000", "corpora.st.workers=2"]
    local_store, ray_store = RunStore(tmp_path / "local"), RunStore(tmp_path / "ray")
    run_collect(load_config("smoke", None, sets), local_store, "st")
    result = run_collect(load_config("smoke", None, [*sets, "runtime.executor=ray"]), ray_store, "st")
    assert _files(ray_store.path("corpora/st")) == _files(local_store.path("corpora/st"))
    with RequestCache(ray_store.path("cache/requests.sqlite")) as cache:
        assert cache.count() == result.stats["requests"]["sent_this_run"] > 10

    dead, alive = RayTeacher(ray_local, "procedural", None), RayTeacher(ray_local, "procedural", None)
    ray_local.kill(dead.actor)
    prompts = [f"prompt {i}" for i in range(30)]
    out = TeacherPool([dead, alive]).generate(prompts, GenParams(seed=0))
    assert [c.text for c in out] == [c.text for c in alive.generate(prompts, GenParams(seed=0))]
