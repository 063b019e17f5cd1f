"""The audit's `longtail` task end to end on a tiny model: items from (fixture) facts in both formulations,
SimpleQA grades, metrics by popularity bucket, the benchmarks-vs-reality figure, and `--compare`."""

from __future__ import annotations

import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from audit_helpers import make_tiny_llama, need_benchmarks
from test_knowledge import fixture_facts

from cleanroom.audit import longtail
from cleanroom.audit.items import TaskOptions
from cleanroom.audit.report import compare_audits
from cleanroom.audit.run import ITEM_SCHEMA, AuditConfig, run_audit


@pytest.fixture()
def facts(monkeypatch):
    monkeypatch.setattr(longtail, "load_facts", lambda: (fixture_facts(), {"wordnet": "not installed here"}))


def _cfg(model, out, limit=12) -> AuditConfig:
    return AuditConfig(model=str(model), tasks=["mmlu", "longtail"], out=out, n_boot=200, threads=1,
                       options=TaskOptions(limit=limit, seed=0, formulations=("cloze",)))


def test_longtail_in_the_audit(tmp_path, facts):
    need_benchmarks()
    tiny = make_tiny_llama(tmp_path / "tiny")
    s = run_audit(_cfg(tiny, tmp_path / "a"))
    k = s.knowledge
    assert set(k["formats"]) == {"mc", "short"} and k["sources"] == ["t"]
    mc, short = k["formats"]["mc"], k["formats"]["short"]
    assert mc["overall"]["n"] > 0 and set(mc["buckets"]) == {"head", "torso", "tail"}
    assert 0 <= mc["overall"]["acc"]["value"] <= 1 and "acc_norm" in mc["overall"] and mc["overall"]["chance"] == 0.25
    assert sum(short["overall"]["grades"].values()) == short["overall"]["n"]  # every answer graded
    assert "verdict" in mc["slope"]
    assert s.notes["longtail"]["skipped_sources"] == {"wordnet": "not installed here"}
    out = tmp_path / "a"
    md = (out / "report.md").read_text()
    assert "Real-world knowledge" in md and "figures/benchmarks_vs_reality.png" in md
    assert (out / "figures" / "benchmarks_vs_reality.png").stat().st_size > 1000
    rows = pq.read_table(out / "items" / "longtail.parquet").to_pylist()
    assert {r["variant"] for r in rows} == {"mc", "short"} and all(r["family"] == "original" for r in rows)
    assert all(r["protocol"] == "completion" for r in rows if r["kind"] == "generate")
    again = run_audit(_cfg(tiny, out))  # the same audit again: everything from the cache
    assert again.requests["computed"] == 0 and again.requests["model_calls"] == 0
    assert again.knowledge["formats"]["mc"]["overall"] == mc["overall"]


def _plant(audit_dir, knows: bool) -> None:
    """Rewrite an audit's long-tail answers: every fact known (right, attempted) or none (wrong, abstained)."""
    path = audit_dir / "items" / "longtail.parquet"
    rows = pq.read_table(path).to_pylist()
    rows = [{**r, "correct": knows, "correct_alt": None if r["correct_alt"] is None else knows,
             "parsed": knows or r["kind"] == "choice"} for r in rows]
    pq.write_table(pa.Table.from_pylist(rows, schema=ITEM_SCHEMA), path)


def test_compare_says_which_model_knows_more_and_whose_benchmark_runs_ahead(tmp_path, facts):
    """Two audits with the same benchmark answers; A knows every long-tail fact, B none. A knows more (in
    every bucket and format); B's benchmark score runs further ahead of its knowledge than A's."""
    need_benchmarks()
    run_audit(_cfg(make_tiny_llama(tmp_path / "m1", seed=1), tmp_path / "a"))
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    _plant(tmp_path / "a", knows=True)
    _plant(tmp_path / "b", knows=False)
    rows = compare_audits([tmp_path / "a", tmp_path / "b"], n_boot=200)
    knows = [r for r in rows if r["task"] == "longtail"]
    assert {r["variant"] for r in knows} == {"mc", "short"} and len(knows) >= 2 * 2  # all buckets + some bucket
    for r in knows:
        assert r["n"] > 0 and r["effect"] == 1.0 and r["verdict"] == "supported", r
    ahead = [r for r in rows if r["task"] == "mmlu vs longtail"]
    assert len(ahead) == 1 and ahead[0]["effect"] == -1.0 and ahead[0]["verdict"] == "not supported"
    reverse = compare_audits([tmp_path / "b", tmp_path / "a"], n_boot=200)
    assert all(r["verdict"] == "not supported" for r in reverse if r["task"] == "longtail")
    assert next(r for r in reverse if r["task"] == "mmlu vs longtail")["verdict"] == "supported"
