"""Bootstrap statistics: CIs, paired differences, difference of differences, deciles, verdicts."""

import numpy as np
import pytest

from cleanroom.stats import accuracy_ci, cluster_ci, diff_of_diffs, paired_diff, per_decile, twin_pairs, verdict


def test_accuracy_ci_contains_mean_is_seeded_and_shrinks_with_n():
    rng = np.random.default_rng(0)
    small = rng.random(50) < 0.6
    acc, lo, hi = accuracy_ci(small, 500, seed=1)
    assert lo <= acc <= hi and 0 < lo < hi < 1
    assert accuracy_ci(small, 500, seed=1) == (acc, lo, hi)  # seeded: same numbers again
    big = rng.random(2000) < 0.6
    _, blo, bhi = accuracy_ci(big, 500, seed=1)
    assert bhi - blo < (hi - lo) / 3


def test_accuracy_ci_degenerate_inputs():
    assert accuracy_ci([True] * 10, 200) == (1.0, 1.0, 1.0)
    assert accuracy_ci([False], 200) == (0.0, 0.0, 0.0)
    assert all(np.isnan(v) for v in accuracy_ci([], 200))


def test_paired_diff_detects_a_real_difference_and_not_a_fake_one():
    rng = np.random.default_rng(0)
    b = rng.random(400) < 0.5
    a = b | (rng.random(400) < 0.3)  # A right wherever B is, and on some more
    eff, lo, hi = paired_diff(a, b, 1000, seed=0)
    assert eff == pytest.approx(a.mean() - b.mean()) and 0 < lo <= eff <= hi
    assert verdict(lo, hi, +1) == "supported" and verdict(lo, hi, -1) == "not supported"
    assert paired_diff(b, b, 1000, seed=0) == (0.0, 0.0, 0.0)
    noise = rng.random(400) < 0.5
    eff, lo, hi = paired_diff(noise, rng.permutation(noise), 1000, seed=0)
    assert lo < 0 < hi and verdict(lo, hi) == "inconclusive"
    with pytest.raises(ValueError):
        paired_diff([1, 0], [1], 100)


def test_paired_ci_is_tighter_than_the_unpaired_one():
    rng = np.random.default_rng(3)
    skill = rng.random(300) < 0.5
    a = skill | (rng.random(300) < 0.1)
    b = skill & (rng.random(300) < 0.95)
    _, lo, hi = paired_diff(a, b, 1000, seed=0)
    _, alo, ahi = accuracy_ci(a, 1000, seed=0)
    assert hi - lo < ahi - alo


def test_diff_of_diffs_known_effect():
    # A: bench all right, twin half right (drop 0.5); B: bench and twin equal (drop 0)
    n = 200
    bench_a = np.ones(n, bool)
    twin_a = np.arange(n) % 2 == 0
    bench_b = twin_b = np.arange(n) % 3 == 0
    eff, lo, hi = diff_of_diffs(bench_a, twin_a, bench_b, twin_b, 1000, seed=0)
    assert eff == pytest.approx(0.5) and 0.35 < lo < 0.5 < hi < 0.65
    with pytest.raises(ValueError):
        diff_of_diffs([1], [1], [1], [1, 0], 100)


def test_twin_pairs_align_by_id_suffix():
    bench = ["bench-0000", "bench-0001", "bench-a0000", "bench-0002"]
    twin = ["twin-a0000", "twin-0001", "twin-0000"]
    assert twin_pairs(bench, twin) == [(0, 2), (1, 1), (2, 0)]


def test_per_decile():
    deciles = [1, 1, 1, 1, 2, 2, 10]
    correct = [1, 1, 1, 0, 0, 0, 1]
    out = per_decile(deciles, correct, 200, seed=0)
    assert [d["decile"] for d in out] == [1, 2, 10]
    assert [d["acc"] for d in out] == [0.75, 0.0, 1.0]
    assert [d["n"] for d in out] == [4, 2, 1]
    assert all(d["ci_low"] <= d["acc"] <= d["ci_high"] for d in out)


def test_verdict_undefined_is_inconclusive():
    assert verdict(float("nan"), 0.3) == "inconclusive"
    assert verdict(-0.3, -0.1, -1) == "supported"


def test_a_bound_at_zero_up_to_rounding_does_not_decide():
    # a real default run's C3 CI: [2.4e-17, 0.135], a lower percentile that is exactly 0 in exact arithmetic
    assert verdict(2.4313884239291122e-17, 0.135) == "inconclusive"
    assert verdict(-0.2, -3e-17) == "inconclusive"
    assert verdict(0.005, 0.135) == "supported"
    assert verdict(-0.2, -0.005) == "not supported"


def test_cluster_bootstrap_is_not_fooled_by_correlated_items():
    """Each entity asked 5 times, answered the same way each time: 5x the items, not 5x the evidence."""
    from cleanroom.stats import cluster_ci

    rng = np.random.default_rng(0)
    per_entity = rng.random(80) < 0.6
    items = np.repeat(per_entity, 5)
    clusters = np.repeat(np.arange(80), 5)
    lo_e, hi_e = cluster_ci(per_entity, None, 2000, seed=0)
    lo_c, hi_c = cluster_ci(items, clusters, 2000, seed=0)
    lo_i, hi_i = cluster_ci(items, None, 2000, seed=0)
    assert hi_c - lo_c == pytest.approx(hi_e - lo_e, rel=0.15)  # as wide as the entities themselves
    assert hi_i - lo_i < 0.6 * (hi_c - lo_c)  # the item bootstrap would claim ~sqrt(5) x more certainty
    assert all(np.isnan(cluster_ci([1, 0, 1], ["x", "x", "x"])))  # one cluster: no interval
    with pytest.raises(ValueError):
        cluster_ci([1, 0], ["a"])


def test_paired_diff_resamples_the_same_clusters_for_both_recipes():
    rng = np.random.default_rng(1)
    clusters = np.repeat(np.arange(60), 4)
    hard = np.repeat(rng.random(60) < 0.5, 4)  # entities both recipes find easy or hard
    a = hard | (rng.random(240) < 0.2)
    b = hard.copy()
    eff, lo, hi = paired_diff(a, b, 2000, seed=0, clusters=clusters)
    assert eff > 0 and 0 < lo <= eff <= hi  # A's extra answers are detected through the shared difficulty
    eff2, lo2, hi2 = diff_of_diffs(a, b, b, b, 2000, seed=0, clusters=clusters)
    assert (eff2, lo2, hi2) == (eff, lo, hi)  # the same per-item differences, the same clusters


def test_two_way_clusters_widen_the_interval_when_a_grouping_moves_together():
    """Items crossed by entity and relation: a shift shared by a relation's items is invisible to an
    entity-clustered bootstrap and widens the pigeonhole (entity x relation) one; no shift, little change."""
    rng = np.random.default_rng(0)
    n_ent, rels = 150, ["a", "b", "c", "d", "e"]
    ent = np.repeat(np.arange(n_ent), len(rels)).astype(str)
    rel = np.tile(rels, n_ent)
    shift = dict(zip(rels, [0.3, -0.3, 0.25, -0.2, 0.0], strict=True))
    noise = rng.normal(0, 0.5, ent.size)
    shifted = noise + np.array([shift[r] for r in rel])
    both = np.stack([ent, rel], axis=1)
    for y, wider in ((shifted, 3.0), (noise, None)):
        one = cluster_ci(y, ent, 2000, 1)
        two = cluster_ci(y, both, 2000, 1)
        ratio = (two[1] - two[0]) / (one[1] - one[0])
        if wider:
            assert ratio > wider
        else:
            assert 1.0 <= ratio < 2.5  # conservative: the item noise also counts once per grouping
    assert all(np.isnan(cluster_ci(noise, np.stack([ent, np.full(ent.size, "a")], axis=1), 200, 1)))
