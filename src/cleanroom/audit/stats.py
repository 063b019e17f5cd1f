"""Audit statistics: accuracy per family, the paired benchmark-twin gap, McNemar, cross-model verdicts.

**Clustered paired gap.** A source item (the cluster) has its original and one or more twins of a
family (3 rotations, 1 calc twin, ...). Per cluster c: d_c = correct(original_c) - mean(correct(twins_c)).
The gap is the mean of d_c over clusters, and its 95% CI a percentile bootstrap that resamples whole
clusters (`stats.paired_diff` on the cluster-level vectors: resampling cluster means is the
cluster bootstrap with equal cluster weights), so the rotations of one question never count as
independent evidence.

**McNemar's exact test** for families with exactly one twin per source: among discordant pairs,
b = original right / twin wrong, c = original wrong / twin right; p = two-sided binomial test of b in
b + c at 1/2 (`scipy.stats.binomtest`).

**Comparing two audits** (`compare_gaps`): over the clusters both audits answered, the per-cluster gap of
A minus that of B, bootstrapped the same way; `stats.verdict` turns the CI into "supported"
(A's gap is larger), "not supported" (B's is) or "inconclusive".
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import binomtest

from cleanroom.stats import accuracy_ci, paired_diff, verdict

__all__ = ["accuracy_ci", "cluster_pairs", "compare_gaps", "difference_of_means", "mcnemar", "paired_gap",
           "verdict"]


def cluster_pairs(source_ids: Sequence[str], families: Sequence[str], correct: Sequence[bool], family: str,
                  original: str = "original") -> tuple[list[str], np.ndarray, np.ndarray, bool]:
    """(cluster ids, original correctness, mean twin correctness, one twin per cluster?) for `family`."""
    orig: dict[str, float] = {}
    twins: dict[str, list[float]] = {}
    for s, f, c in zip(source_ids, families, correct, strict=True):
        if f == original:
            orig[s] = float(c)
        elif f == family:
            twins.setdefault(s, []).append(float(c))
    keys = sorted(k for k in twins if k in orig)
    o = np.array([orig[k] for k in keys])
    t = np.array([np.mean(twins[k]) for k in keys])
    return keys, o, t, all(len(twins[k]) == 1 for k in keys)


def paired_gap(orig: np.ndarray, twin: np.ndarray, n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Mean of original - twin over clusters, with the cluster-bootstrap 95% CI."""
    return paired_diff(orig, twin, n_boot=n_boot, seed=seed)


def mcnemar(orig: Sequence[float], twin: Sequence[float]) -> tuple[int, int, float]:
    """(b, c, exact two-sided p) for 1:1 pairs of 0/1 outcomes."""
    o, t = np.asarray(orig, dtype=float), np.asarray(twin, dtype=float)
    b = int(((o == 1) & (t == 0)).sum())
    c = int(((o == 0) & (t == 1)).sum())
    p = 1.0 if b + c == 0 else float(binomtest(b, b + c, 0.5).pvalue)
    return b, c, p


def compare_gaps(a: dict[str, float], b: dict[str, float], n_boot: int = 2000,
                 seed: int = 0) -> tuple[float, float, float, int]:
    """A's gap minus B's over the clusters both have (`{cluster: d_c}` each): (effect, low, high, n)."""
    keys = sorted(set(a) & set(b))
    if not keys:
        return float("nan"), float("nan"), float("nan"), 0
    effect, low, high = paired_diff(np.array([a[k] for k in keys]), np.array([b[k] for k in keys]),
                                    n_boot=n_boot, seed=seed)
    return effect, low, high, len(keys)


def difference_of_means(x: np.ndarray, x_clusters: Sequence[str], y: np.ndarray, y_clusters: Sequence[str],
                        n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """mean(x) - mean(y) for two independent item sets, each resampled by its own clusters: (effect, low, high)."""
    def resampled(v: np.ndarray, clusters: Sequence[str], rng: np.random.Generator) -> np.ndarray:
        _, inv = np.unique(np.asarray(clusters), return_inverse=True)
        k = int(inv.max()) + 1
        sums, counts = np.bincount(inv, weights=v, minlength=k), np.bincount(inv, minlength=k).astype(float)
        w = rng.multinomial(k, np.full(k, 1 / k), size=int(n_boot)).astype(float)
        return (w @ sums) / (w @ counts)

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.size == 0 or y.size == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    boot = resampled(x, x_clusters, rng) - resampled(y, y_clusters, rng)
    low, high = np.percentile(boot, [2.5, 97.5])
    return float(x.mean() - y.mean()), float(low), float(high)
