"""Audit statistics: the cluster bootstrap gap, McNemar, and the cross-model verdict."""

from __future__ import annotations

import numpy as np
from scipy.stats import binomtest

from cleanroom.audit.stats import cluster_pairs, compare_gaps, mcnemar, paired_gap, verdict
from cleanroom.audit.summary import summarize_rows


def _rows(orig: list[int], twins: list[list[int]], family: str = "rot") -> list[dict]:
    rows = []
    for k, (o, ts) in enumerate(zip(orig, twins, strict=True)):
        base = {"task": "t", "variant": "letter", "source_id": f"s{k}", "kind": "choice", "options": ["a"] * 4,
                "protocol": "loglikelihood", "correct_alt": None, "parsed": True}
        rows.append({**base, "family": "original", "correct": bool(o), "pred_text": "x" if o else "y"})
        rows += [{**base, "family": family, "correct": bool(t), "pred_text": "x" if t else "y"} for t in ts]
    return rows


def test_gap_is_the_mean_cluster_difference():
    keys, o, t, one = cluster_pairs(["a", "a", "a", "b", "b", "b"], ["original", "rot", "rot"] * 2,
                                    [True, False, True, False, False, False], "rot")
    assert keys == ["a", "b"] and list(o) == [1.0, 0.0] and list(t) == [0.5, 0.0] and not one
    g, low, high = paired_gap(o, t)
    assert g == 0.25 and low <= g <= high


def test_twins_of_one_item_are_not_independent_evidence():
    """Three identical rotations per item must give the same CI as one: the cluster is the unit."""
    rng = np.random.default_rng(0)
    orig = rng.integers(0, 2, 60).tolist()
    twin = rng.integers(0, 2, 60).tolist()
    one = summarize_rows(_rows(orig, [[t] for t in twin], "calc"))[1][1]
    three = summarize_rows(_rows(orig, [[t, t, t] for t in twin], "rot"))[1][1]
    assert one.gap == three.gap and (one.gap_ci_low, one.gap_ci_high) == (three.gap_ci_low, three.gap_ci_high)


def test_a_benchmark_only_model_is_detected_and_a_null_is_not():
    n = 80
    contaminated = summarize_rows(_rows([1] * n, [[0]] * n, "calc"))[1]
    gap = next(r for r in contaminated if r.family == "calc")
    assert gap.gap == 1.0 and gap.gap_verdict == "supported" and gap.mcnemar_b == n and gap.mcnemar_p < 1e-10
    rng = np.random.default_rng(1)
    same = rng.integers(0, 2, n).tolist()
    null = next(r for r in summarize_rows(_rows(same, [[s] for s in same], "calc"))[1] if r.family == "calc")
    assert null.gap == 0.0 and null.gap_verdict == "inconclusive" and null.mcnemar_p == 1.0


def test_mcnemar_matches_scipy_on_discordant_pairs():
    o = [1, 1, 1, 1, 0, 0, 1, 0, 1, 1]
    t = [0, 0, 0, 1, 1, 0, 1, 0, 0, 0]
    b, c, p = mcnemar(o, t)
    assert (b, c) == (5, 1) and abs(p - binomtest(5, 6, 0.5).pvalue) < 1e-12


def test_consistency_over_rotations():
    rows = _rows([1, 1], [[1, 1, 1], [1, 0, 1]])
    rot = next(r for r in summarize_rows(rows)[1] if r.family == "rot")
    assert rot.consistency == 0.5


def test_compare_verdicts():
    a = {f"s{k}": 1.0 for k in range(50)}  # A loses every item on its twin
    b = {f"s{k}": 0.0 for k in range(50)}
    effect, low, high, n = compare_gaps(a, b)
    assert (effect, n) == (1.0, 50) and verdict(low, high) == "supported"
    effect, low, high, n = compare_gaps(b, a)
    assert verdict(low, high) == "not supported"
    rng = np.random.default_rng(2)
    noise = {f"s{k}": float(rng.integers(-1, 2)) for k in range(50)}
    assert verdict(*compare_gaps(noise, noise)[1:3]) == "inconclusive"
