"""Statistics for the report card: cluster-bootstrap CIs, paired differences, per-decile accuracy, verdicts.

Every interval is a seeded percentile bootstrap at 95%, so a rerun gives the same numbers. Items about
the same entity are correlated (a model that knows a mineral tends to get all its facts right), so
the bootstrap resamples *clusters* (an item's `cluster`: the entity it is about), not items; without
clusters every item is its own. Differences between two recipes are *paired*: both models answered
the same items, so each resample draws the same clusters for both (far tighter than two independent
CIs, and the right test for "did recipe A beat recipe B on these items").

Models are a unit too: two models of one recipe that differ only in their seed can differ by more than
the items let an item-only interval see (whether a small model learns a format is decided by its seed).
`contrast_ci` compares recipes through their replicates: its variance is the items' (cluster
bootstrap of the per-item contrast of replicate means) plus the models' (the between-model variance of
the statistic, pooled over the run's groups by `between_model_variance`), with a Student-t quantile on
Welch-Satterthwaite degrees of freedom. `stats/calibration.py` checks its coverage by simulation.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

LEVEL = 0.95
Vector = Sequence[bool] | Sequence[float] | np.ndarray


def cluster_bootstrap(clusters: Sequence, columns: dict[str, np.ndarray], stat: Callable[[dict], np.ndarray],
                      n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """(statistic, ci_low, ci_high): a 95% percentile bootstrap that resamples whole clusters.

    `columns` are per-item quantities; `stat` maps their sums (scalars, or arrays of one sum per
    resample) to the statistic, so one matrix product gives every resample: a resample draws as many
    clusters as there are (multinomial counts) and a cluster's items move together. Resamples whose
    statistic is undefined (e.g. 0/0) are dropped; with fewer than two clusters the CI is NaN.

    `clusters` of shape (items, k) names k crossed groupings (e.g. entity and relation): the pigeonhole
    bootstrap (Owen 2007) resamples each grouping independently and weighs an item by the product of its
    groups' counts, which is conservative for crossed random effects.
    """
    keys = np.asarray(clusters)
    if keys.ndim == 2:
        return _multiway_bootstrap(keys, columns, stat, n_boot, seed)
    _, inv = np.unique(keys, return_inverse=True)
    n_clusters = int(inv.max()) + 1 if inv.size else 0
    sums = {k: np.bincount(inv, weights=np.asarray(v, dtype=float), minlength=n_clusters) for k, v in columns.items()}
    with np.errstate(invalid="ignore", divide="ignore"):
        point = float(stat({k: v.sum() for k, v in sums.items()}))
    if n_boot <= 0 or n_clusters < 2:
        return point, float("nan"), float("nan")
    draws = np.random.default_rng(seed).multinomial(n_clusters, np.full(n_clusters, 1 / n_clusters),
                                                    size=int(n_boot)).astype(float)
    return _percentile_ci(point, stat, {k: draws @ v for k, v in sums.items()})


def _multiway_bootstrap(keys: np.ndarray, columns: dict[str, np.ndarray], stat: Callable[[dict], np.ndarray],
                        n_boot: int, seed: int) -> tuple[float, float, float]:
    cols = {k: np.asarray(v, dtype=float) for k, v in columns.items()}
    with np.errstate(invalid="ignore", divide="ignore"):
        point = float(stat({k: v.sum() for k, v in cols.items()}))
    invs = [np.unique(keys[:, j].astype(str), return_inverse=True)[1] for j in range(keys.shape[1])]
    if n_boot <= 0 or min((int(i.max()) + 1 if i.size else 0) for i in invs) < 2:
        return point, float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    weights = np.ones((int(n_boot), keys.shape[0]))
    for inv in invs:
        g = int(inv.max()) + 1
        weights *= rng.multinomial(g, np.full(g, 1 / g), size=int(n_boot)).astype(float)[:, inv]
    return _percentile_ci(point, stat, {k: weights @ v for k, v in cols.items()})


def _percentile_ci(point: float, stat: Callable[[dict], np.ndarray], resampled: dict[str, np.ndarray]
                   ) -> tuple[float, float, float]:
    with np.errstate(invalid="ignore", divide="ignore"):
        boot = np.asarray(stat(resampled), dtype=float)
    boot = boot[np.isfinite(boot)]
    if boot.size == 0:
        return point, float("nan"), float("nan")
    tail = 100 * (1 - LEVEL) / 2
    low, high = np.percentile(boot, [tail, 100 - tail])
    return point, float(low), float(high)


def _mean_of(s: dict) -> np.ndarray:
    return np.asarray(s["y"], dtype=float) / s["n"]


def cluster_se(values: Vector, clusters: Sequence | np.ndarray | None = None, n_boot: int = 2000,
               seed: int = 0) -> tuple[float, int]:
    """(bootstrap SE of mean(values), number of clusters): the SD of the cluster-bootstrap means
    (`cluster_bootstrap`'s resampling, one grouping). NaN with fewer than two clusters."""
    x = np.asarray(values, dtype=float)
    keys = np.arange(x.size) if clusters is None else np.asarray(clusters)
    _, inv = np.unique(keys, return_inverse=True)
    g = int(inv.max()) + 1 if inv.size else 0
    if g < 2 or n_boot <= 0:
        return float("nan"), g
    y, n = np.bincount(inv, weights=x, minlength=g), np.bincount(inv, minlength=g).astype(float)
    draws = np.random.default_rng(seed).multinomial(g, np.full(g, 1 / g), size=int(n_boot)).astype(float)
    return float(np.std((draws @ y) / (draws @ n), ddof=1)), g


@dataclass(frozen=True)
class ModelVariance:
    """The between-model variance of a statistic (`between_model_variance`): `sigma2` beyond the models'
    per-item noise, `raw` the variance of model means it is read from (what its uncertainty scales with),
    `df` its degrees of freedom (0: no group had two models)."""

    sigma2: float
    df: int
    raw: float = float("nan")

    @property
    def sd(self) -> float:
        return float(np.sqrt(self.sigma2)) if self.df else float("nan")


NO_MODEL_VARIANCE = ModelVariance(float("nan"), 0)


def between_model_variance(groups: dict[str, np.ndarray]) -> ModelVariance:
    """How much models of one group (replicates that differ only in their seed) differ in a
    statistic beyond what their per-item noise explains, pooled over groups.

    `groups` maps a group to its (models, items) array of per-item values (every model on the same items).
    A model's mean varies by sigma_b^2 + sigma_e^2 / n, where sigma_e^2 is the model-by-item residual
    variance (two-way, per group); the item part is already in the contrast's item variance, so it is
    subtracted (method of moments, floored at 0). df = sum over groups of (K_g - 1); groups with one model
    add nothing; `NO_MODEL_VARIANCE` when no group has two."""
    ss_models = ss_resid = 0.0
    df = df_resid = 0
    n_items = 0
    for values in groups.values():
        y = np.atleast_2d(np.asarray(values, dtype=float))
        k, n = y.shape
        if k < 2 or n < 2:
            continue
        rows, cols = y.mean(axis=1, keepdims=True), y.mean(axis=0, keepdims=True)
        ss_models += float(((rows - rows.mean()) ** 2).sum())
        ss_resid += float(((y - rows - cols + y.mean()) ** 2).sum())
        df += k - 1
        df_resid += (k - 1) * (n - 1)
        n_items = n
    if not df:
        return NO_MODEL_VARIANCE
    return ModelVariance(max(0.0, ss_models / df - ss_resid / df_resid / n_items), df, ss_models / df)


def contrast_ci(groups: Sequence[np.ndarray], weights: Sequence[float], clusters: Sequence | np.ndarray,
                model_var: ModelVariance, n_boot: int = 2000, seed: int = 0) -> dict[str, float]:
    """A linear contrast of groups over replicates and items, with its 95% interval.

    `groups[j]` is a (models, items) array of one group's per-item values (every group on the same items,
    in the same order), `weights[j]` its weight (C1: textbook +1, web -1). Effect = sum_j w_j * mean of
    group j. Variance = V_items + V_models: V_items is the cluster-bootstrap variance of the per-item
    contrast of the groups' replicate means; V_models = sigma_b^2 * sum_j w_j^2 / K_j with `model_var` from
    `between_model_variance`. The interval is effect +- t(0.975, df) * sqrt(V) with Welch-Satterthwaite df
    (items: clusters - 1; models: `model_var.df` on the raw variance its estimate is read from), kept between
    the fewer of the two parts' df and their sum. Without a
    between-model estimate (df = 0) the models are not resampled and the interval is the items' alone
    (`models_resampled` False). Returns effect, ci_low, ci_high, item_se, between_model_sd, df, replicates
    (the smallest K_j).
    """
    from scipy import stats

    mats = [np.atleast_2d(np.asarray(g, dtype=float)) for g in groups]
    if len({m.shape[1] for m in mats}) != 1:
        raise ValueError(f"contrast_ci needs every group on the same items, got {[m.shape for m in mats]}")
    per_item = sum(w * m.mean(axis=0) for w, m in zip(weights, mats, strict=True))
    k = min(m.shape[0] for m in mats)
    nan = float("nan")
    if per_item.size == 0:
        return {"effect": nan, "ci_low": nan, "ci_high": nan, "item_se": nan, "between_model_sd": nan, "df": nan,
                "replicates": k, "models_resampled": False}
    effect = float(per_item.mean())
    item_se, n_clusters = cluster_se(per_item, clusters, n_boot, seed)
    v_item = item_se**2
    resampled = model_var.df > 0 and np.isfinite(model_var.sigma2)
    scale = sum(w**2 / m.shape[0] for w, m in zip(weights, mats, strict=True))
    v_model = float(model_var.sigma2 * scale) if resampled else 0.0
    v = v_item + v_model
    if not np.isfinite(v) or n_clusters < 2:
        lo = hi = df = nan
    else:
        df_items = max(n_clusters - 1, 1)
        terms = v_item**2 / df_items + ((model_var.raw * scale) ** 2 / model_var.df if resampled else 0.0)
        df = float(v**2 / terms) if terms > 0 else float("inf")
        if resampled:  # the noise term reads the raw variance (the floored estimate has none to read): never
            # fewer degrees of freedom than its fewest part, or a near-zero estimate would make t explode
            df = min(max(df, min(model_var.df, df_items)), model_var.df + df_items)
        half = float(stats.t.ppf(0.5 + LEVEL / 2, df) * np.sqrt(v)) if np.isfinite(df) else \
            float(stats.norm.ppf(0.5 + LEVEL / 2) * np.sqrt(v))
        lo, hi = effect - half, effect + half
    return {"effect": effect, "ci_low": lo, "ci_high": hi, "item_se": item_se,
            "between_model_sd": model_var.sd if resampled else nan, "df": df, "replicates": k,
            "models_resampled": bool(resampled)}


def two_level_bootstrap(groups: Sequence[np.ndarray], weights: Sequence[float], clusters: Sequence | np.ndarray,
                        n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """The same contrast as `contrast_ci` with a two-level percentile bootstrap: each resample draws every
    group's models with replacement, then the item clusters. Kept as the alternative the calibration
    simulation compares against (with two models per group it sees half the between-model variance)."""
    mats = [np.atleast_2d(np.asarray(g, dtype=float)) for g in groups]
    _, inv = np.unique(np.asarray(clusters), return_inverse=True)
    g = int(inv.max()) + 1
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(g, np.full(g, 1 / g), size=int(n_boot)).astype(float)[:, inv]  # (boot, items)
    per_item = np.zeros((int(n_boot), mats[0].shape[1]))
    for w, m in zip(weights, mats, strict=True):
        picks = rng.integers(0, m.shape[0], size=(int(n_boot), m.shape[0]))
        per_item += w * m[picks].mean(axis=1)
    boot = (counts * per_item).sum(axis=1) / counts.sum(axis=1)
    effect = float(sum(w * m.mean() for w, m in zip(weights, mats, strict=True)))
    tail = 100 * (1 - LEVEL) / 2
    low, high = np.percentile(boot, [tail, 100 - tail])
    return effect, float(low), float(high)


def cluster_ci(values: Vector, clusters: Sequence | np.ndarray | None = None, n_boot: int = 2000,
               seed: int = 0) -> tuple[float, float]:
    """95% percentile-bootstrap CI of mean(values), resampling whole clusters (`cluster_bootstrap`; each
    item its own cluster when none are given). With one item the CI is that value; with several items
    but a single cluster it is undefined (NaN)."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return float("nan"), float("nan")
    if x.size == 1:
        return float(x[0]), float(x[0])
    keys = np.arange(x.size) if clusters is None else np.asarray(clusters)
    if keys.ndim not in (1, 2) or keys.shape[0] != x.size:
        raise ValueError(f"{keys.shape[0] if keys.ndim else 0} cluster labels for {x.size} values")
    _, low, high = cluster_bootstrap(keys, {"y": x, "n": np.ones_like(x)}, _mean_of, n_boot, seed)
    return low, high


def accuracy_ci(correct: Vector, n_boot: int = 2000, seed: int = 0,
                clusters: Sequence | np.ndarray | None = None) -> tuple[float, float, float]:
    """(accuracy, ci_low, ci_high) of a 0/1 vector."""
    x = np.asarray(correct, dtype=float)
    if x.size == 0:
        return float("nan"), float("nan"), float("nan")
    low, high = cluster_ci(x, clusters, n_boot, seed)
    return float(x.mean()), low, high


def paired_diff(correct_a: Vector, correct_b: Vector, n_boot: int = 2000, seed: int = 0,
                clusters: Sequence | np.ndarray | None = None) -> tuple[float, float, float]:
    """Accuracy of A minus accuracy of B over the same items: (effect, ci_low, ci_high)."""
    a, b = np.asarray(correct_a, dtype=float), np.asarray(correct_b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired_diff needs the same items for both recipes, got {a.size} and {b.size}")
    if a.size == 0:
        return float("nan"), float("nan"), float("nan")
    low, high = cluster_ci(a - b, clusters, n_boot, seed)
    return float(a.mean() - b.mean()), low, high


def diff_of_diffs(bench_a: Vector, twin_a: Vector, bench_b: Vector, twin_b: Vector, n_boot: int = 2000,
                  seed: int = 0, clusters: Sequence | np.ndarray | None = None) -> tuple[float, float, float]:
    """C2b: recipe A's benchmark-to-twin drop minus recipe B's, over paired items.

    Position i of all four vectors is the same fact (bench item i and its fresh twin i; align them
    with `twin_pairs`). Effect = (acc(bench_a) - acc(twin_a)) - (acc(bench_b) - acc(twin_b)); a
    positive effect means A loses more than B when the surface form changes.
    """
    v = [np.asarray(x, dtype=float) for x in (bench_a, twin_a, bench_b, twin_b)]
    if len({x.size for x in v}) != 1:
        raise ValueError(f"diff_of_diffs needs four aligned vectors, got sizes {[x.size for x in v]}")
    per_item = (v[0] - v[1]) - (v[2] - v[3])
    if per_item.size == 0:
        return float("nan"), float("nan"), float("nan")
    low, high = cluster_ci(per_item, clusters, n_boot, seed)
    return float(per_item.mean()), low, high


_TWIN_KEY = re.compile(r"^(?:bench|twin)-(.+)$")


def twin_pairs(bench_ids: Sequence[str], twin_ids: Sequence[str]) -> list[tuple[int, int]]:
    """(bench index, twin index) for every benchmark item whose fresh twin exists.

    Twin ids mirror bench ids: `bench-0007` <-> `twin-0007`, `bench-a0003` <-> `twin-a0003`.
    """
    twin_at = {}
    for j, t in enumerate(twin_ids):
        m = _TWIN_KEY.match(t)
        if m:
            twin_at[m.group(1)] = j
    out = []
    for i, b in enumerate(bench_ids):
        m = _TWIN_KEY.match(b)
        if m and m.group(1) in twin_at:
            out.append((i, twin_at[m.group(1)]))
    return out


def per_decile(deciles: Sequence[int], correct: Sequence[bool], n_boot: int = 2000, seed: int = 0,
               clusters: Sequence | np.ndarray | None = None) -> list[dict[str, float]]:
    """Accuracy with a CI for each popularity decile present (1 = most popular)."""
    d = np.asarray(deciles, dtype=int)
    c = np.asarray(correct, dtype=float)
    keys = None if clusters is None else np.asarray(clusters)
    out = []
    for dec in sorted(set(d.tolist())):
        acc, low, high = accuracy_ci(c[d == dec], n_boot, seed + int(dec), None if keys is None else keys[d == dec])
        n = int((d == dec).sum())
        out.append({"decile": int(dec), "acc": acc, "ci_low": low, "ci_high": high, "n": n})
    return out


ZERO_TOL = 1e-9  # a bound this close to zero *is* zero: bootstrap means of 0/1 differences carry rounding


def pool_runs(effects: Sequence[float], ci_lows: Sequence[float], ci_highs: Sequence[float]
              ) -> tuple[float, float, float]:
    """(pooled effect, ci_low, ci_high) over independent runs (seeds): a random-effects meta-analysis.

    Each run contributes its effect and its within-run variance (read back from its 95% CI); the
    between-run variance tau^2 is DerSimonian-Laird's, the interval Student-t with k - 1 degrees of
    freedom around the inverse-variance weighted mean, with the larger of the random-effects variance
    and the Hartung-Knapp variance (the "modified" Knapp-Hartung rule, so equal effects do not give a
    zero-width interval). This is the interval that carries seed-to-seed variation, which a per-run
    bootstrap leaves out. With fewer than two runs, or an undefined run CI, the CI is NaN.
    """
    from scipy import stats

    y = np.asarray(effects, float)
    se = (np.asarray(ci_highs, float) - np.asarray(ci_lows, float)) / (2 * stats.norm.ppf(0.5 + LEVEL / 2))
    k = len(y)
    if k < 2 or not np.all(np.isfinite(se)) or not np.all(np.isfinite(y)):
        mean = float(y.mean()) if k else float("nan")
        return mean, float("nan"), float("nan")
    v = np.maximum(se**2, 1e-12)  # a run with a zero-width CI (e.g. all items equal) still weighs finitely
    w = 1 / v
    fixed = (w * y).sum() / w.sum()
    q = (w * (y - fixed) ** 2).sum()
    tau2 = max(0.0, (q - (k - 1)) / (w.sum() - (w**2).sum() / w.sum()))
    w_re = 1 / (v + tau2)
    mean = float((w_re * y).sum() / w_re.sum())
    var = max(1 / w_re.sum(), (w_re * (y - mean) ** 2).sum() / ((k - 1) * w_re.sum()))
    half = float(stats.t.ppf(0.5 + LEVEL / 2, k - 1) * np.sqrt(var))
    return mean, mean - half, mean + half


def verdict(ci_low: float, ci_high: float, expected_sign: int = 1) -> str:
    """"supported" if the CI excludes zero on the expected side, "not supported" if it excludes zero
    on the other side, "inconclusive" if it contains zero, touches it, or is undefined.

    A bound within `ZERO_TOL` of zero counts as zero: a percentile that is exactly 0 in exact arithmetic
    can come out as +2e-17 after floating-point means, and must not decide a claim.
    """
    if not (np.isfinite(ci_low) and np.isfinite(ci_high)):
        return "inconclusive"
    if ci_low > ZERO_TOL:
        return "supported" if expected_sign > 0 else "not supported"
    if ci_high < -ZERO_TOL:
        return "supported" if expected_sign < 0 else "not supported"
    return "inconclusive"
