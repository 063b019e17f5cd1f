"""Pooling runs over seeds: `stats.pool_runs` and scripts/seed_sweep.py's seed-pooled verdicts."""

import numpy as np
import pytest
from doubles import load_script
from scipy import stats

from cleanroom.evals.stats import pool_runs
from cleanroom.report.summary import Comparison

seed_sweep = load_script("scripts/seed_sweep.py")
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


def cmp(effect, half):
    return Comparison(label="x", effect=effect, ci_low=effect - half, ci_high=effect + half, n=100,
                      verdict="inconclusive")


@pytest.mark.parametrize("runs,expected", [
    ([cmp(0.463, 0.06), cmp(0.302, 0.05), cmp(0.41, 0.05)], "supported"),    # large against its spread
    ([cmp(-0.128, 0.055), cmp(-0.004, 0.07), cmp(0.05, 0.05)], "inconclusive"),  # null-like: signs disagree
    ([cmp(-0.30, 0.05), cmp(-0.25, 0.05), cmp(-0.35, 0.05)], "not supported"),  # consistently the other way
])
def test_seed_sweep_pooled_verdicts(runs, expected):
    assert seed_sweep.pooled(runs).startswith(expected + " (")


def test_seed_sweep_pooled_needs_two_seeds():
    assert seed_sweep.pooled([cmp(0.2, 0.05)]).startswith("n/a")
