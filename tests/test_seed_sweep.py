"""Pooling runs over seeds: `stats.pool_runs`, and `cleanroom sweep` (report/sweep.py) on synthetic runs."""

import json

import numpy as np
import pytest
from scipy import stats
from typer.testing import CliRunner

from cleanroom.cli import app
from cleanroom.errors import CleanroomError
from cleanroom.report.summary import Claim, Comparison, Control, Controls, Summary
from cleanroom.report.sweep import SweepSummary, pool, run_dir, sweep
from cleanroom.stats import pool_runs, verdict

Z = stats.norm.ppf(0.975)


def test_pool_runs_reduces_to_a_t_interval_when_runs_are_exact():
    """Runs with (near) zero within-run error: the plain Student-t interval over the seeds' effects."""
    y = [0.463, 0.302, 0.41]
    mean, lo, hi = pool_runs(y, y, y)
    half = stats.t.ppf(0.975, 2) * stats.tstd(y) / 3 ** 0.5
    assert mean == pytest.approx(np.mean(y)) and (lo, hi) == pytest.approx((mean - half, mean + half))


def test_pool_runs_equal_effects_keep_their_within_run_error():
    """Two seeds with the same effect: not a zero-width interval (the modified Knapp-Hartung rule)."""
    mean, lo, hi = pool_runs([-0.005, -0.005], [-0.057, -0.057], [0.047, 0.047])
    se = 0.104 / (2 * Z) / 2 ** 0.5  # two equal runs: the fixed-effect standard error
    assert mean == pytest.approx(-0.005)
    assert hi - mean == pytest.approx(stats.t.ppf(0.975, 1) * se)


def test_pool_runs_heterogeneous_seeds_widen_the_interval():
    """Per-run CIs that exclude zero but disagree with each other: tau^2 > 0 and a wider interval."""
    mean, lo, hi = pool_runs([0.128, -0.01, 0.30], [0.08, -0.05, 0.25], [0.18, 0.03, 0.35])
    assert lo < 0 < hi
    assert np.isnan(pool_runs([0.1], [0.0], [0.2])[1])


def test_pool_runs_between_seed_variance_evens_out_the_weights():
    """A precise run and a noisy one that disagree: the fixed-effect mean would sit on the precise run
    (~0.003); tau^2 gives both runs nearly equal weight, so the pooled mean moves toward their average."""
    mean, lo, hi = pool_runs([0.0, 0.3], [-0.01, 0.2], [0.01, 0.4])
    assert 0.1 < mean < 0.2 and lo < 0 < hi


def cmp(effect, half, label="x", sd=0.02, se=0.01):
    lo, hi = (None, None) if half is None else (effect - half, effect + half)
    return Comparison(label=label, effect=effect, ci_low=lo, ci_high=hi, n=100,
                      verdict="inconclusive" if half is None else verdict(lo, hi), replicates=2,
                      between_model_sd=sd, item_se=se)


@pytest.mark.parametrize("runs,expected", [
    ([cmp(0.463, 0.06), cmp(0.302, 0.05), cmp(0.41, 0.05)], "supported"),    # large against its spread
    ([cmp(-0.128, 0.055), cmp(-0.004, 0.07), cmp(0.05, 0.05)], "inconclusive"),  # null-like: signs disagree
    ([cmp(-0.30, 0.05), cmp(-0.25, 0.05), cmp(-0.35, 0.05)], "not supported"),  # consistently the other way
])
def test_pooled_verdicts(runs, expected):
    p = pool("C1", list(enumerate(runs)))
    assert p.verdict == expected and p.seeds == [0, 1, 2]
    assert (p.effect, p.ci_low, p.ci_high) == pytest.approx(pool_runs(*zip(*[(c.effect, c.ci_low, c.ci_high)
                                                                              for c in runs], strict=True)))


def test_pooled_needs_two_seeds_and_skips_seeds_without_an_effect():
    assert pool("C1", [(0, cmp(0.2, 0.05))]).verdict == "inconclusive"
    p = pool("C1", [(0, cmp(0.5, 0.02)), (1, cmp(None, None)), (2, cmp(0.52, 0.02))])
    assert p.seeds == [0, 2] and p.verdict == "supported"


# ------------------------------------------------------------------------------ synthetic runs

NAMES = {"C1": "benchmarks go up", "C2a": "long-tail knowledge goes down", "C2b": "fresh-twin drop is larger",
         "C3": "filtering resists tampering better than the alternative"}
# per seed: each claim's (effect, CI half-width); C1 large, C2a signs disagree, C3 consistently reversed
EFFECTS = {0: {"C1": (0.30, 0.05), "C2a": (-0.13, 0.05), "C2b": (0.08, 0.04), "C3": (-0.30, 0.05)},
           1: {"C1": (0.47, 0.05), "C2a": (0.00, 0.07), "C2b": (0.09, 0.04), "C3": (-0.25, 0.05)},
           2: {"C1": (0.50, 0.05), "C2a": (0.05, 0.05), "C2b": (0.08, 0.04), "C3": (-0.35, 0.05)}}
RECIPES = ("web", "textbook")


def fake_summary(seed: int, preset: str = "default") -> Summary:
    """A run's summary.json: seed 1's web A/A test decides C3, and its leaky control is missed."""
    claims = {}
    for k, (e, h) in EFFECTS[seed].items():
        c = cmp(e, h, f"{k} main", sd=0.01 * (seed + 1), se=0.02)
        claims[k] = Claim(claim=NAMES[k], verdict=c.verdict, effect=e, ci_low=c.ci_low, ci_high=c.ci_high, detail="",
                          comparisons=[c], replicates=2, between_model_sd=c.between_model_sd, item_se=c.item_se)
    null = {}
    for i, r in enumerate(RECIPES):
        comps = [cmp(0.2 if (seed, r, k) == (1, "web", "C3") else 0.01, 0.05, f"{k} statistic: {r} - {r}~1",
                     sd=0.03 + 0.01 * i) for k in NAMES]
        null[r] = Control(name="null", recipes=[r, f"{r}~1"], expected="inconclusive", comparisons=comps,
                          passed=all(c.verdict == "inconclusive" for c in comps), detail="")
    own = cmp(0.02 if seed == 1 else 0.13, 0.04, "leaky: bench - twin")
    leaky = Control(name="leaky", recipes=["leaky", "textbook"], expected="supported", passed=None, detail="",
                    comparisons=[own, cmp(0.04, 0.05, "contamination's share")])
    return Summary(name=preset, seed=seed, preset=preset, recipes=[*RECIPES], results={}, claims=claims,
                   longtail_by_decile={}, tamper={}, controls=Controls(null=null, leaky=leaky), data={},
                   timings={"train": 60.0 * (seed + 1), "eval": 30.0}, environment={})


def write_run(out, seed: int, preset: str = "default") -> None:
    d = run_dir(out, seed)
    d.mkdir(parents=True, exist_ok=True)
    (d / "summary.json").write_text(fake_summary(seed, preset).model_dump_json())


def test_sweep_command_pools_finished_runs_and_records_the_controls(tmp_path):
    for seed in (0, 1, 2):
        write_run(tmp_path, seed)
    r = CliRunner().invoke(app, ["sweep", "--seeds", "0", "1", "2", "--no-run", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    printed = " ".join(r.output.split())
    assert "benchmarks go up: supported" in printed and "per seed: supported, supported, supported" in printed
    assert "A/A tests decided 1 of 24 statistics (seed 1 web: C3 statistic)" in printed
    assert "leaky detected in 2 of 3 runs" in printed

    s = SweepSummary.model_validate_json((tmp_path / "summary.json").read_text())
    assert {k: p.verdict for k, p in s.claims.items()} == {
        "C1": "supported", "C2a": "inconclusive", "C2b": "supported", "C3": "not supported"}
    c1 = [EFFECTS[x]["C1"] for x in (0, 1, 2)]
    assert (s.claims["C1"].effect, s.claims["C1"].ci_low, s.claims["C1"].ci_high) == pytest.approx(
        pool_runs([e for e, _ in c1], [e - h for e, h in c1], [e + h for e, h in c1]))
    assert s.claims["C1"].label == "benchmarks go up" and s.seeds == [0, 1, 2] and s.preset == "default"
    # the controls' record: per seed and recipe the A/A statistics decided, in all, and pooled over seeds
    assert (s.null_decided, s.null_total, s.leaky_detected, s.leaky_runs) == (1, 24, 2, 3)
    assert s.runs[1].null["web"].decided == ["C3 statistic"] and s.runs[1].null["web"].total == 4
    assert s.runs[1].null["web"].models == ["web", "web~1"] and not s.runs[0].null["web"].decided
    assert [r.leaky_detected for r in s.runs] == [True, False, True]
    assert s.null_pooled["web"]["C3 statistic"].seeds == [0, 1, 2]
    assert all(p.verdict == "inconclusive" for stats_ in s.null_pooled.values() for p in stats_.values())
    # the between-model SD per statistic and seed: the claim's, and each A/A test's (the other recipes')
    spread = s.runs[2].spread["C2b"]
    assert (spread.between_model_sd, spread.item_se, spread.replicates) == pytest.approx((0.03, 0.02, 2))
    assert spread.leave_one_out == pytest.approx({"web": 0.03, "textbook": 0.04})
    assert s.runs[0].minutes == pytest.approx(1.5)

    md = (tmp_path / "report.md").read_text()
    assert "**C1 — benchmarks go up: SUPPORTED.** Pooled over seeds 0, 1, 2" in md
    assert "**C3 — filtering resists tampering better than the alternative: NOT SUPPORTED.**" in md
    assert "1 of 24 decided over 3 runs" in md and "detected in 2 of 3 runs" in md
    assert "| 1 | 1 of 4: C3 statistic | 0 of 4 | NOT detected (+0.020 [-0.020, +0.060])" in md
    assert "| C2b | 2 | 2 | 0.030 | 0.020 | 0.030 – 0.040 |" in md
    html = (tmp_path / "report.html").read_text()
    assert "<div class='verdict sup'><strong>C1 — benchmarks go up: SUPPORTED.</strong>" in html
    assert "<div class='verdict nsup'>" in html and "<table>" in html and "<script" not in html
    assert json.loads((tmp_path / "summary.json").read_text())["claims"]["C1"]["verdict"] == "supported"


def test_no_run_with_a_missing_seed_is_a_one_line_error(tmp_path):
    write_run(tmp_path, 0)
    r = CliRunner().invoke(app, ["sweep", "--seeds", "0", "1", "--no-run", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert f"--no-run: no finished run at {tmp_path / 'seed-1'}" in " ".join(r.output.split())
    assert not (tmp_path / "summary.json").exists()


def test_sweep_runs_each_seed_and_starts_from_a_finished_run(tmp_path):
    """`run` is called per seed with the seed as the last override; a seed with a finished run under
    `start_from` starts from a copy of it, one without starts empty."""
    base, out = tmp_path / "default", tmp_path / "validate"
    write_run(base, 0)
    (run_dir(base, 0) / "models").mkdir()
    calls = []

    def run(d, sets):
        calls.append((d.name, sets, (d / "models").exists()))
        write_run(out, int(sets[-1].removeprefix("seed=")), preset="validate")

    s = sweep(out, [0, 1], run, ["train.steps=5"], start_from=base)
    assert calls == [("seed-0", ["train.steps=5", "seed=0"], True), ("seed-1", ["train.steps=5", "seed=1"], False)]
    assert s.preset == "validate" and (out / "report.html").exists()
    with pytest.raises(CleanroomError, match="conflicts with --seeds"):
        sweep(out, [0], run, ["seed=3"])


def test_sweep_refuses_runs_it_cannot_pool(tmp_path):
    write_run(tmp_path, 0)
    write_run(tmp_path, 1, preset="smoke")
    with pytest.raises(CleanroomError, match="mix presets"):
        sweep(tmp_path, [0, 1], None)
    (run_dir(tmp_path, 2)).mkdir()
    (run_dir(tmp_path, 2) / "summary.json").write_text(fake_summary(0).model_dump_json())
    with pytest.raises(CleanroomError, match="is a run of seed 0, not 2"):
        sweep(tmp_path, [2], None)
    with pytest.raises(CleanroomError, match="distinct seeds"):
        sweep(tmp_path, [0, 0], None)


@pytest.mark.slow
def test_sweep_end_to_end_on_smoke_runs(tmp_path):
    """Two real smoke runs through `cleanroom run`'s stages, then pooled (5-10 minutes on 2 cores)."""
    r = CliRunner().invoke(app, ["sweep", "--preset", "smoke", "--seeds", "0", "1", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    s = SweepSummary.model_validate_json((tmp_path / "summary.json").read_text())
    assert s.seeds == [0, 1] and s.preset == "smoke" and set(s.claims) == {"C1", "C2a", "C2b", "C3"}
    assert s.null_total == sum(len(Summary.model_validate_json((run_dir(tmp_path, x) / "summary.json").read_text())
                                   .controls.null) * 4 for x in (0, 1))
    assert s.leaky_runs == 2 and (tmp_path / "report.html").exists()
    # a second call reuses both runs: no stage runs again
    manifests = {p: p.stat().st_mtime_ns for p in tmp_path.glob("seed-*/manifests/**/*.json")}
    r = CliRunner().invoke(app, ["sweep", "--preset", "smoke", "--seeds", "0", "1", "--out", str(tmp_path)])
    assert r.exit_code == 0 and "up to date, skipped" in r.output
    assert {p: p.stat().st_mtime_ns for p in manifests} == manifests
