"""Does an interval cover the truth when models, not only items, vary? A simulation with known answers.

A simulated run has `n_groups` recipes of `replicates` models each, all answering the same items (about
`n_clusters` entities, a few items each). Model k of group g answers item i correctly with probability
base_g + u_gk + e_c(i) + e_i: u_gk ~ N(0, between_sd) (truncated at +-2.5 SD) is the model's luck, the
part a seed decides; e_c and e_i make entities and items easier or harder for every model alike. The truth
of the contrast "group 0 - group 1" is base_0 - base_1, known exactly. Each method's 95% interval is
computed on every run; `calibrate` counts how often it covers the truth and, with a zero effect, how often
it decides (its false-positive rate), for the claim's contrast (K vs K models) and for the A/A control
(replicate 0 vs replicate 1 of one group, the between-model variance from the other groups).

Methods: `contrast` (`stats.contrast_ci`: item variance + pooled between-model variance, Student-t),
`two_level` (`stats.two_level_bootstrap`: models, then clusters), `item_only` (`stats.paired_diff` on the
per-item contrast of replicate means: the interval before replicates, which sees no model variance).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cleanroom.stats import (
    ModelVariance,
    between_model_variance,
    cluster_se,
    contrast_ci,
    paired_diff,
    two_level_bootstrap,
    verdict,
)

METHODS = ("contrast", "two_level", "item_only")


@dataclass(frozen=True)
class Design:
    n_groups: int = 5
    replicates: int = 2
    n_clusters: int = 100
    items_per_cluster: int = 4
    base: float = 0.5
    effect: float = 0.0  # base_0 - base_1: the truth of the claim's contrast
    between_sd: float = 0.0


def simulate_run(d: Design, rng: np.random.Generator) -> tuple[list[np.ndarray], np.ndarray]:
    """One run: per group a (replicates, items) 0/1 array, and the items' cluster labels."""
    n = d.n_clusters * d.items_per_cluster
    clusters = np.repeat(np.arange(d.n_clusters), d.items_per_cluster)
    ease = rng.uniform(-0.15, 0.15, d.n_clusters)[clusters] + rng.uniform(-0.1, 0.1, n)
    groups = []
    for g in range(d.n_groups):
        base = d.base + (d.effect / 2 if g == 0 else -d.effect / 2 if g == 1 else 0.0)
        luck = np.clip(rng.normal(0, d.between_sd, d.replicates), -2.5 * d.between_sd, 2.5 * d.between_sd)
        p = np.clip(base + luck[:, None] + ease[None, :], 0, 1)
        groups.append((rng.random((d.replicates, n)) < p).astype(float))
    return groups, clusters


def interval(method: str, groups: list[np.ndarray], weights: list[float], clusters: np.ndarray,
             model_var: ModelVariance, n_boot: int, seed: int) -> tuple[float, float]:
    if method == "contrast":
        r = contrast_ci(groups, weights, clusters, model_var, n_boot, seed)
        return r["ci_low"], r["ci_high"]
    if method == "two_level":
        return two_level_bootstrap(groups, weights, clusters, n_boot, seed)[1:]
    if method == "item_only":
        per = [w * g.mean(axis=0) for w, g in zip(weights, groups, strict=True)]
        pos = sum(p for p, w in zip(per, weights, strict=True) if w > 0)
        neg = -sum(p for p, w in zip(per, weights, strict=True) if w < 0)
        return paired_diff(pos, neg, n_boot, seed, clusters)[1:]
    raise ValueError(f"unknown method `{method}` (allowed: {', '.join(METHODS)})")


def calibrate(d: Design, runs: int = 200, n_boot: int = 400, seed: int = 0,
              methods: tuple[str, ...] = METHODS) -> dict[str, dict[str, float]]:
    """Per method: coverage of the claim's contrast (group 0 - group 1) and of the A/A contrast (replicate 0
    - replicate 1 of group 0; truth 0), and the share of runs in which each was decided."""
    rng = np.random.default_rng(seed)
    hits = {m: {"claim_covered": 0, "claim_decided": 0, "aa_covered": 0, "aa_decided": 0} for m in methods}
    item_se = []
    for r in range(runs):
        groups, clusters = simulate_run(d, rng)
        by_group = {str(g): m for g, m in enumerate(groups)}
        pooled = between_model_variance(by_group)
        others = between_model_variance({k: v for k, v in by_group.items() if k != "0"})
        item_se.append(cluster_se(groups[0].mean(0) - groups[1].mean(0), clusters, n_boot, r)[0])
        for m in methods:
            lo, hi = interval(m, groups[:2], [1.0, -1.0], clusters, pooled, n_boot, r)
            hits[m]["claim_covered"] += lo <= d.effect <= hi
            hits[m]["claim_decided"] += verdict(lo, hi) != "inconclusive"
            if d.replicates >= 2:
                aa = [groups[0][:1], groups[0][1:2]]
                lo, hi = interval(m, aa, [1.0, -1.0], clusters, others, n_boot, r)
                hits[m]["aa_covered"] += lo <= 0 <= hi
                hits[m]["aa_decided"] += verdict(lo, hi) != "inconclusive"
    out = {m: {k: v / runs for k, v in h.items()} for m, h in hits.items()}
    for m in out:
        out[m]["item_se"] = float(np.nanmean(item_se))
    return out
