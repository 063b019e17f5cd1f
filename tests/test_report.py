"""Report card: verdict logic on planted results, summary schema, Markdown/HTML, `cleanroom report`."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from cleanroom.cli import app
from cleanroom.config import load_config
from cleanroom.report.stage import write_report
from cleanroom.report.summary import Summary
from cleanroom.store import RunStore
from cleanroom.tamper.strongest import accuracies, attack_items, strongest_attack
from cleanroom.world.schema import TASKS

RECIPES = ("web", "textbook", "filtered_web", "mix")
N = 300


SAME_AS = {"longtail_qa": "longtail", "format_shift": "twin"}  # tasks planted with another task's probability


def plant(store: RunStore, p: dict[str, dict[str, float]], seed: int = 0, recipes=RECIPES) -> None:
    """Write eval and tamper per-item results where recipe r answers task t correctly with prob p[r][t]."""
    rng = np.random.default_rng(seed)
    for r in recipes:
        for task in TASKS:
            ids = [f"{task}-{i:04d}" for i in range(N)]
            acc = p[r][SAME_AS.get(task, task)]
            rows = [{"id": i, "correct": bool(rng.random() < acc), "options": ["a", "b", "c", "d"],
                     "kind": "choice", "decile": 1 + k % 10, "cluster": f"entity-{k // 2}"}
                    for k, i in enumerate(ids)]
            store.write_parquet(f"evals/{r}/{task}.parquet", pa.Table.from_pylist(rows))

        def prob(k, lr, r=r):  # the larger learning rate is the stronger attack
            return (p[r]["attacked"] if k else p[r]["restricted"]) * (1 if lr > 1e-3 else 0.8)

        tam = [{"steps": k, "lr": lr, "id": f"restricted-{i:04d}", "correct": bool(rng.random() < prob(k, lr))}
               for k in (0, 10) for lr in (1e-3, 3e-3) for i in range(N)]
        store.write_parquet(f"evals/{r}/tamper_items.parquet", pa.Table.from_pylist(tam))


def scenario(web: dict, textbook: dict) -> dict[str, dict[str, float]]:
    return {"web": web, "textbook": textbook, "filtered_web": textbook, "mix": textbook}


@pytest.fixture()
def run_dir(tmp_path):
    store = RunStore(tmp_path)
    store.write_text("config.toml", load_config("smoke").to_toml())
    return store


CLAIMED = scenario(web={"bench": 0.4, "twin": 0.35, "longtail": 0.6, "restricted": 0.5, "attacked": 0.8},
                   textbook={"bench": 0.9, "twin": 0.4, "longtail": 0.3, "restricted": 0.25, "attacked": 0.25})
REVERSED = scenario(web={"bench": 0.9, "twin": 0.4, "longtail": 0.3, "restricted": 0.25, "attacked": 0.25},
                    textbook={"bench": 0.4, "twin": 0.35, "longtail": 0.6, "restricted": 0.5, "attacked": 0.8})
SAME = {"bench": 0.5, "twin": 0.5, "longtail": 0.5, "restricted": 0.5, "attacked": 0.5}


@pytest.mark.parametrize("planted, expected", [(CLAIMED, "supported"), (REVERSED, "not supported")])
def test_verdicts_follow_the_data(run_dir, planted, expected):
    plant(run_dir, planted)
    summary, _ = write_report(load_config("smoke"), run_dir)
    assert {k: c.verdict for k, c in summary.claims.items()} == {k: expected for k in ("C1", "C2a", "C2b", "C3")}
    c1 = summary.claims["C1"]
    sign = 1 if expected == "supported" else -1
    assert sign * c1.effect > 0.3 and c1.ci_low <= c1.effect <= c1.ci_high


def test_identical_models_are_inconclusive(run_dir):
    plant(run_dir, scenario(SAME, SAME), seed=1)
    # identical per-item answers: plant the same vector for every recipe
    for r in RECIPES[1:]:
        for f in (*TASKS, "tamper_items"):
            run_dir.write_bytes(f"evals/{r}/{f}.parquet", run_dir.path(f"evals/web/{f}.parquet").read_bytes())
    summary, _ = write_report(load_config("smoke"), run_dir)
    assert all(c.verdict == "inconclusive" for c in summary.claims.values())
    assert all(c.ci_low <= 0 <= c.ci_high for c in summary.claims.values())


def test_missing_recipe_cannot_be_tested(run_dir):
    plant(run_dir, CLAIMED)
    cfg = load_config("smoke", overrides=['recipes.names=["web", "filtered_web"]'])
    summary, _ = write_report(cfg, run_dir)
    assert summary.claims["C1"].verdict == "inconclusive" and "cannot be tested" in summary.claims["C1"].detail
    assert summary.claims["C3"].verdict == "supported"  # web vs filtered_web still testable


def test_strongest_attack_is_the_best_point_of_the_grid_not_the_last_step(run_dir):
    rows = [{"steps": k, "lr": lr, "id": f"restricted-{i:04d}", "correct": i < n}
            for k, lr, n in [(0, 1e-3, 10), (0, 3e-3, 10), (10, 1e-3, 30), (10, 3e-3, 40), (20, 1e-3, 20),
                             (20, 3e-3, 40)]
            for i in range(100)]
    run_dir.write_parquet("evals/web/tamper_items.parquet", pa.Table.from_pylist(rows))
    by_attack = attack_items(run_dir, "web")
    best = strongest_attack(accuracies(by_attack))
    items = by_attack[best]
    assert best == ("qa_other", 10, 3e-3)  # the overfit k=20/lr=1e-3 point and the later tie both lose
    assert len(items) == 100 and sum(r["correct"] for r in items.values()) == 40
    # a second family: its better point wins whatever the family's name
    rows += [{**r, "attack": "literature", "correct": int(r["id"][-4:]) < 45} for r in rows if r["steps"] == 20]
    run_dir.write_parquet("evals/web/tamper_items.parquet", pa.Table.from_pylist(
        [{"attack": "qa_other", **r} if "attack" not in r else r for r in rows]))
    assert strongest_attack(accuracies(attack_items(run_dir, "web"))) == ("literature", 20, 1e-3)


def test_summary_schema_and_report_files(run_dir):
    plant(run_dir, CLAIMED)
    write_report(load_config("smoke"), run_dir)
    data = json.loads(run_dir.path("summary.json").read_text())
    s = Summary.model_validate(data)
    assert set(s.claims) == {"C1", "C2a", "C2b", "C3"}
    assert set(s.results["web"]) == set(TASKS)
    assert [c.label.split(":")[0] for c in s.claims["C2a"].comparisons] == [
        "longtail", "longtail, bottom half of popularity (deciles 6-10)",
        "the same facts asked as questions (longtail_qa)"]
    assert s.results["web"]["bench"].chance == pytest.approx(0.25)
    assert [d.decile for d in s.longtail_by_decile["web"]] == list(range(1, 11))
    assert [p.steps for p in s.tamper["web"]] == [0, 10] and s.tamper["web"][1].lr == 3e-3
    md = run_dir.path("report.md").read_text()
    assert "C1 — benchmarks go up: SUPPORTED" in md and "figures/bench_vs_reality.png" in md
    html = run_dir.path("report.html").read_text()
    assert html.count("data:image/png;base64,") >= 4
    assert "src='http" not in html and 'src="http' not in html


def test_report_command_regenerates_without_recompute(run_dir):
    plant(run_dir, CLAIMED)
    r = CliRunner().invoke(app, ["report", str(run_dir.root)])
    assert r.exit_code == 0, r.output
    assert "supported" in r.output and run_dir.path("report.html").exists()
    r = CliRunner().invoke(app, ["report", str(run_dir.root / "nope")])
    assert r.exit_code == 2 and "not a cleanroom run directory" in r.output


def _copy_model(store: RunStore, src: str, dst: str) -> None:
    """An exact copy of one model's answers under another model's name."""
    for f in (*TASKS, "tamper_items"):
        store.write_bytes(f"evals/{dst}/{f}.parquet", store.path(f"evals/{src}/{f}.parquet").read_bytes())


def test_controls_can_pass_and_can_fail(run_dir):
    """The A/A control passes for replicates that answer alike and fails for a replicate that differs by
    far more than the other recipes' replicates do; the leaky control passes when contamination inflates
    the benchmark and fails when it does not."""
    cfg = load_config("smoke", overrides=['recipes.names=["web", "textbook", "leaky"]'])
    textbook = {**CLAIMED["textbook"], "bench": 0.55}  # textbook drops 0.15 from bench to twin
    leaky = {**textbook, "bench": 0.95}  # contamination adds 0.4 to the benchmark and nothing to the twin
    plant(run_dir, {**CLAIMED, "textbook": textbook, "leaky": leaky}, recipes=("web", "textbook", "leaky"))
    for r in ("web", "textbook", "leaky"):  # replicates that answer exactly alike
        _copy_model(run_dir, r, f"{r}~1")
    summary, _ = write_report(cfg, run_dir)
    assert set(summary.controls.null) == {"web", "textbook", "leaky"}
    null, leak = summary.controls.null["web"], summary.controls.leaky
    assert null.passed and [c.verdict for c in null.comparisons] == ["inconclusive"] * 4
    assert null.recipes == ["web", "web~1"] and all(c.between_model_sd == 0 for c in null.comparisons)
    assert leak.passed and [c.verdict for c in leak.comparisons] == ["supported", "supported"]
    assert all(summary.claims[k].replicates == 2 and summary.claims[k].between_model_sd is not None
               and summary.claims[k].item_se > 0 for k in ("C1", "C2a", "C2b"))  # C3 needs filtered_web
    md = run_dir.path("report.md").read_text()
    assert "Does the instrument work?" in md and "null web" in md and "Read with care" not in md

    # a replicate of web that is much better on the benchmark
    plant(run_dir, {"web~1": {**CLAIMED["web"], "bench": 0.9}}, recipes=("web~1",), seed=5)
    summary, _ = write_report(cfg, run_dir)
    null = summary.controls.null["web"]
    assert not null.passed and null.comparisons[0].verdict != "inconclusive" and "too sure" in null.detail
    assert summary.controls.null["textbook"].passed  # the other recipes' replicates still agree
    # the claim's own interval now carries web's replicate spread: C1's between-model SD is far from zero
    assert summary.claims["C1"].between_model_sd > 0.1
    verdicts = run_dir.path("report.md").read_text().split("## Does the instrument work?")[0]
    c1 = next(p for p in verdicts.split("\n\n") if p.startswith("**C1"))
    assert "Read with care" in c1 and "web vs web~1" in c1  # the decided statistic flags its verdict
    assert not any("Read with care" in p for p in verdicts.split("\n\n") if p.startswith("**C2a"))  # longtail: same

    # contamination that changes nothing: its own drop (textbook's 0.15) is still seen, what it adds is not
    _copy_model(run_dir, "web", "web~1")
    plant(run_dir, {"leaky": textbook}, recipes=("leaky",), seed=5)
    _copy_model(run_dir, "leaky", "leaky~1")
    leak = write_report(cfg, run_dir)[0].controls.leaky
    assert not leak.passed and [c.verdict for c in leak.comparisons] == ["supported", "inconclusive"]
    assert "NOT the part contamination adds over textbook" in leak.detail
