"""scripts/seed_sweep.py: the seed-pooled verdict (seed as the unit, Student-t over seeds)."""

import importlib.util
from pathlib import Path

import pytest
from scipy import stats

spec = importlib.util.spec_from_file_location("seed_sweep", Path(__file__).parents[1] / "scripts" / "seed_sweep.py")
seed_sweep = importlib.util.module_from_spec(spec)
spec.loader.exec_module(seed_sweep)


def test_pooled_is_a_t_interval_over_seeds():
    effects = [0.463, 0.302, 0.41]
    mean = sum(effects) / 3
    half = stats.t.ppf(0.975, 2) * stats.tstd(effects) / 3 ** 0.5
    assert seed_sweep.pooled(effects) == f"supported ({mean:+.3f} [{mean - half:+.3f}, {mean + half:+.3f}])"


@pytest.mark.parametrize("effects,expected", [
    ([-0.128, -0.004, 0.05], "inconclusive"),     # null-control-like: signs disagree
    ([0.128, 0.075, 0.01], "inconclusive"),       # same sign, but the spread is as large as the mean
    ([-0.30, -0.25, -0.35], "not supported"),     # consistently the other way
])
def test_pooled_verdicts(effects, expected):
    assert seed_sweep.pooled(effects).startswith(expected + " (")


def test_pooled_needs_two_seeds():
    assert seed_sweep.pooled([0.2]).startswith("n/a")
