"""The whole experiment (`cleanroom run --preset smoke`): summary schema, report in a real browser,
and a run killed mid-training that, restarted, ends with the same results."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import browser
import numpy as np
import pytest

from cleanroom.config import replicate_name
from cleanroom.report.summary import Summary

CLI = [sys.executable, "-m", "cleanroom.cli"]
pytestmark = pytest.mark.e2e  # whole `cleanroom run`s in subprocesses


def _run(out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + ["run", "--preset", "smoke", "--out", str(out), *extra],
                          capture_output=True, text=True, timeout=600)


def _results(out: Path) -> dict:
    data = json.loads((out / "summary.json").read_text())
    return {"results": data["results"], "claims": data["claims"], "tamper": data["tamper"]}


def test_smoke_run_summary_validates(smoke_run):
    s = Summary.model_validate_json((smoke_run / "summary.json").read_text())
    assert set(s.claims) == {"C1", "C2a", "C2b", "C3"}
    groups = {"web", "textbook", "filtered_web", "mix", "leaky", "diverse", "web+unlearn", "web+refusal"}
    assert set(s.recipes) == groups | {replicate_name(g, 1) for g in groups}  # every recipe and arm, twice
    assert set(s.tamper) == set(s.recipes) | {"scratch"}  # every model attacked, and the random-init floor
    assert "alternative" in s.claims["C3"].detail
    assert set(s.controls.all()) == {f"null {r}" for r in groups if "+" not in r} | {"leaky", "diverse"}
    assert len(s.controls.null["web"].comparisons) == 4 and s.controls.leaky.expected == "supported"
    assert all(c.replicates == 2 and c.item_se is not None for c in s.claims.values())
    for stage in ("world", "generate", "tokenize", "train", "safeguard", "eval", "tamper"):
        assert stage in s.timings
    for key in ("report.md", "report.html", "figures/bench_vs_reality.png", "figures/tamper.png"):
        assert (smoke_run / key).exists(), key


def test_rerun_is_a_noop_with_identical_results(smoke_run):
    before = (smoke_run / "summary.json").read_bytes()
    r = _run(smoke_run)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "▶" not in r.stderr, "nothing should be recomputed"
    assert (smoke_run / "summary.json").read_bytes() == before


def test_changing_the_recipe_list_never_redoes_the_other_recipes_models(smoke_run, tmp_path):
    """Each model's inputs are the files it reads (its token files, the tokenizer), not whole stages."""
    out = tmp_path / "run"
    shutil.copytree(smoke_run, out)
    r = _run(out, "--set", 'recipes.names=["web", "textbook", "filtered_web", "mix"]')
    assert r.returncode == 0, r.stderr[-2000:]
    assert "▶ generate" in r.stderr and "▶ tokenize" in r.stderr  # the corpora and token files are rebuilt...
    for stage in ("train", "eval", "tamper"):  # ...but no model is retrained, re-evaluated or attacked again
        assert f"▶ {stage}/" not in r.stderr, stage


def test_runtime_knobs_never_redo_a_finished_stage(smoke_run):
    """`runtime.*` says how to run, not what to compute: changing it re-runs nothing."""
    before = (smoke_run / "summary.json").read_bytes()
    r = _run(smoke_run, "--set", "runtime.jobs=1", "--set", "runtime.threads=2", "--set", "runtime.malloc=default",
             "--set", "runtime.batch_models=false", "--executor", "ray")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "▶" not in r.stderr and "up to date" in r.stderr
    assert (smoke_run / "summary.json").read_bytes() == before


def test_report_renders_in_headless_chromium(smoke_run, tmp_path):
    shot = tmp_path / "report.png"
    r = browser.run(smoke_run / "report.html", tmp_path / "profile", "--window-size=1100,1600", f"--screenshot={shot}")
    assert shot.exists(), r.stderr[-2000:]
    console_errors = [ln for ln in r.stderr.splitlines() if "CONSOLE" in ln and ("ERROR" in ln or "Uncaught" in ln)]
    assert not console_errors, console_errors
    import matplotlib.image as mpimg

    img = mpimg.imread(shot)
    assert img.shape[0] > 500 and img.shape[1] > 500
    assert float(np.std(img[..., :3])) > 0.05, "screenshot is blank"
    # figures are embedded: the page must not reference any external file
    html = (smoke_run / "report.html").read_text()
    assert "figures/" not in html.replace("data:image/png", "")
    text = browser.rendered_text(smoke_run / "report.html", tmp_path / "profile")
    assert "Verdicts" in text and not browser.RAW_MARKDOWN.findall(text)


def test_killed_mid_training_resumes_to_same_results(smoke_run, tmp_path):
    out = tmp_path / "killed"
    proc = subprocess.Popen(CLI + ["run", "--preset", "smoke", "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    try:
        while time.time() < deadline and proc.poll() is None:
            if any((out / "checkpoints").rglob("*.safetensors")) or any((out / "checkpoints").rglob("*.pt")):
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run finished before it could be killed mid-training"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert not (out / "summary.json").exists()
    r = _run(out)
    assert r.returncode == 0, r.stderr[-3000:]
    assert _results(out) == _results(smoke_run)


def test_report_command_records_what_it_rewrote(smoke_run, tmp_path, monkeypatch):
    """`cleanroom report` rewrites the report files (here: changed report code writes a different
    report.md); the next `cleanroom run` must find a valid run, not a checksum mismatch."""
    from typer.testing import CliRunner

    import cleanroom.report.stage as report_stage
    from cleanroom.cli import app
    from cleanroom.store import RunStore

    run = tmp_path / "run"
    shutil.copytree(smoke_run, run)
    md = report_stage.to_markdown
    monkeypatch.setattr(report_stage, "to_markdown", lambda *a, **k: md(*a, **k) + "\n<!-- newer code -->\n")
    r = CliRunner().invoke(app, ["report", str(run)])
    assert r.exit_code == 0, r.output
    store = RunStore(run)
    store.verify(store.manifest("report"))  # raises CorruptFileError if the manifest is stale
    monkeypatch.undo()
    r = _run(run)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "corrupted" not in r.stderr and "▶" not in r.stderr
