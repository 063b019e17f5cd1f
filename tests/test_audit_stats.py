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


def _lettered(golds: list[str], pick, n: int = 60) -> list[dict]:
    """MMLU-letter rows: originals with gold letter `golds[k % len]` and three rotations; `pick(k, gold,
    family, r)` is the model's letter for rotation r (0 = the original)."""
    rows = []
    for k in range(n):
        g0 = golds[k % len(golds)]
        for r in range(4):
            gold = "ABCD"[("ABCD".index(g0) + r) % 4]
            p = pick(k, gold, g0, r)
            rows.append({"task": "mmlu", "variant": "letter", "source_id": f"s{k}", "kind": "choice",
                         "family": "original" if r == 0 else "rot", "options": [" A", " B", " C", " D"],
                         "target": gold, "pred": p, "pred_text": p, "correct": p == gold,
                         "protocol": "loglikelihood", "correct_alt": None, "parsed": True})
    return rows


def test_the_letter_prior_is_taken_out_of_lettered_gaps():
    """A content-blind model that always answers "B" on a sample whose golds are mostly B has a large raw rotation
    gap and none beyond its letter prior; a model that memorised each original's gold letter keeps its gap."""
    from cleanroom.audit.stats import pair_family

    golds = ["B", "B", "A", "C", "D"]  # 40% B among the originals, 20% among the rotations
    always_b = _lettered(golds, lambda k, gold, g0, r: "B")
    pf = pair_family(always_b, "rot")
    assert pf.raw.mean() > 0.15
    g, low, high = pf.gap(500)
    assert abs(g) < 1e-9 and low <= 0 <= high
    res = [r for r in summarize_rows(always_b, n_boot=500)[1] if r.family == "rot"][0]
    assert res.gap_verdict == "inconclusive" and res.gap_raw > 0.15 and res.gap_letter_prior == res.gap_raw
    memorised = _lettered(golds, lambda k, gold, g0, r: g0)  # the original's letter, whatever the order
    g, low, high = pair_family(memorised, "rot").gap(500)
    assert g > 0.9 and low > 0.5
    text = _rows([1, 0] * 30, [[1, 1, 1], [0, 0, 0]] * 30)  # option texts, not letters: no adjustment
    assert pair_family(text, "rot").prior() is None
