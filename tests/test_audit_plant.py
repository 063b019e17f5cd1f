"""The planted-leak control: the analysis on constructed rows (a family that sees the leak is evidence, one
that does not is named, the untouched part is the null), and the whole command on a tiny random Llama."""

from __future__ import annotations

import json

import pytest
from audit_helpers import make_tiny_llama, need_benchmarks

from cleanroom.audit.items import TaskOptions
from cleanroom.audit.plant import PlantConfig, analyse, leaked_sources, render_plant, run_plant
from cleanroom.audit.run import AuditConfig


def _rows(exposure: int, n: int = 40) -> list[dict]:
    """MMLU letter rows: originals, a `rot` twin that a memorised letter fails and a `twin_ok` family that the
    leak lifts as much as the original (a family that cannot see this leak)."""
    rows = []
    for i in range(n):
        s = f"q{i}"
        leaked = i < n // 2
        base_right = i % 4 == 0
        orig = base_right or (leaked and exposure > 0)
        rows += [{"task": "mmlu", "variant": "letter", "family": "original", "source_id": s, "correct": orig},
                 {"task": "mmlu", "variant": "letter", "family": "rot", "source_id": s, "correct": base_right},
                 {"task": "mmlu", "variant": "letter", "family": "twin_ok", "source_id": s, "correct": orig}]
    return rows


def test_analysis_names_the_families_that_see_the_leak():
    leaked = {"mmlu": {f"q{i}" for i in range(20)}}
    r = analyse({0: _rows(0), 2: _rows(2)}, leaked, n_boot=500)
    top = [b for b in r["benchmark"] if b["exposure"] == 2][0]
    assert top["detected"] and top["leak_effect"] == pytest.approx(0.75)
    assert top["acc_leaked"] == 1.0 and top["acc_untouched"] == 0.25
    v = {x["family"]: x for x in r["verdicts"]}
    assert v["rot"]["evidence"] and v["rot"]["detects_leak"] and v["rot"]["null_inconclusive"]
    assert v["twin_ok"]["benchmark_shows_leak"] and not v["twin_ok"]["detects_leak"] and not v["twin_ok"]["evidence"]
    rot2 = [f for f in r["families"] if f["exposure"] == 2 and f["family"] == "rot"][0]
    assert rot2["leaked"]["verdict"] == "supported" and rot2["untouched"]["verdict"] == "inconclusive"
    r["config"] = {"model": "m", "fraction": 0.5, "tasks": ["mmlu"], "limit": 40, "method": "lora", "lr": 1e-3,
                   "epochs": [2]}
    r["finetune"] = {}
    md = render_plant(r)
    assert "does NOT detect a leak the benchmark shows" in md and "evidence" in md
    # no leak (exposure 0 only): nothing is detected
    r0 = analyse({0: _rows(0)}, leaked, n_boot=200)
    assert not any(b["detected"] for b in r0["benchmark"]) and not any(v["evidence"] for v in r0["verdicts"])


def test_the_leaked_part_is_seeded_and_a_fraction():
    ids = [f"s{i}" for i in range(11)]
    a = leaked_sources(ids, 0.5, 0, "mmlu")
    assert len(a) == 6 and a == leaked_sources(list(reversed(ids)), 0.5, 0, "mmlu")
    assert a != leaked_sources(ids, 0.5, 1, "mmlu")


def test_planted_leak_on_a_tiny_model(tmp_path):
    need_benchmarks()
    tiny = make_tiny_llama(tmp_path / "tiny")
    opts = TaskOptions(limit=8, seed=0, formulations=("letter",), max_gen_tokens=4)
    cfg = AuditConfig(model=str(tiny), tasks=["mmlu"], out=tmp_path / "plant", options=opts, n_boot=200, threads=1)
    r = run_plant(cfg, PlantConfig(fraction=0.5, epochs=(5, 20), method="full", lr=3e-3, batch_size=1, max_len=512))
    for rel in ("plant.json", "plant.md", "leak/config.json", "leak/epoch-5/config.json",
                "exposure-0/summary.json", "exposure-5/summary.json", "exposure-20/summary.json"):
        assert (cfg.out / rel).is_file(), rel
    assert len(r["leaked"]["mmlu"]) == 4
    dose = [b for b in r["benchmark"] if b["variant"] == "letter"]
    assert [b["exposure"] for b in dose] == [0, 5, 20]
    leaked_acc = [b["acc_leaked"] for b in dose]
    assert leaked_acc == sorted(leaked_acc) and leaked_acc[-1] >= leaked_acc[0] + 0.5  # a dose-response
    assert dose[-1]["leak_effect"] > 0
    assert {f["family"] for f in r["families"]} >= {"rot", "wicked"}
    assert json.loads((cfg.out / "plant.json").read_text())["config"]["fraction"] == 0.5
