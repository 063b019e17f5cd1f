"""Audit statistics: accuracy per family, the paired benchmark-twin gap, McNemar, cross-model verdicts.

**Clustered paired gap.** A source item (the cluster) has its original and one or more twins of a
family (3 rotations, 1 calc twin, ...). Per cluster c: d_c = correct(original_c) - mean(correct(twins_c)).
The gap is the mean of d_c over clusters, and its 95% CI a percentile bootstrap that resamples whole
clusters (`stats.paired_diff` on the cluster-level vectors: resampling cluster means is the
cluster bootstrap with equal cluster weights), so the rotations of one question never count as
independent evidence.

**The letter prior.** In a lettered format a model that ignores the content and prefers a letter (SmolLM2
answers "A" to 99% of lettered MMLU questions; one epoch of letter-format fine-tuning turns that into "B") still
shows a gap whenever the sample's gold letters sit unevenly: a constant "B" scores P(gold = B) on the
originals and P(gold moved to B) on their rotations (measured: 19 of 50 untouched originals have gold B,
31 of 150 rotations, so the raw rotation gap is +0.19 without any memorisation). `pair_family` therefore
subtracts, per cluster, the gap a content-blind chooser with the model's own answer-letter frequencies q
(over the originals and twins analysed) would show: e_c = q(gold letter of the original) - mean over
twins of q(gold letter of the twin). The verdict reads d_c - e_c ("the gap beyond the letter prior"); the
raw gap is kept beside it. q is held fixed in the bootstrap (it is estimated from every answer of the
family, hundreds for a 100-item audit). Items scored by option text (cloze), numbers (GSM8K) or with
non-letter options get no adjustment.

**McNemar's exact test** for families with exactly one twin per source: among discordant pairs,
b = original right / twin wrong, c = original wrong / twin right; p = two-sided binomial test of b in
b + c at 1/2 (`scipy.stats.binomtest`).

**Comparing two audits** (`compare_gaps`): over the clusters both audits answered, the per-cluster gap of
A minus that of B, bootstrapped the same way; `stats.verdict` turns the CI into "supported"
(A's gap is larger), "not supported" (B's is) or "inconclusive".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest

from cleanroom.stats import accuracy_ci, paired_diff, verdict

__all__ = ["PairedFamily", "accuracy_ci", "cluster_pairs", "compare_gaps", "difference_of_means", "mcnemar",
           "pair_family", "paired_gap", "verdict"]


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


def _letter(option: str) -> str | None:
    o = option.strip()
    return o if len(o) == 1 and o.isalpha() and o.isupper() else None


@dataclass
class PairedFamily:
    """One twin family's clusters: original and mean-twin correctness and, for lettered items, what the
    letter prior needs (module doc): per cluster the answer-letter counts and gold-letter offsets."""

    keys: list[str]
    orig: np.ndarray
    twin: np.ndarray
    one_to_one: bool
    answers: np.ndarray | None = None  # [clusters, letters]: how often each letter was answered
    golds: np.ndarray | None = None  # [clusters, letters]: 1[original's gold] - mean over twins of 1[twin's gold]

    @property
    def raw(self) -> np.ndarray:
        return self.orig - self.twin

    def prior(self, weights: np.ndarray | None = None) -> np.ndarray | None:
        """Per cluster, the gap a content-blind chooser with the answer-letter frequencies of the (weighted)
        clusters shows; rows of `weights` are bootstrap resamples ([B, clusters] -> [B, clusters])."""
        if self.answers is None or self.golds is None:
            return None
        w = np.ones(len(self.keys)) if weights is None else weights
        q = (w @ self.answers) / (w @ self.answers.sum(1))[..., None]
        return q @ self.golds.T

    def prior_mean(self) -> float | None:
        """The letter prior's gap over all clusters (None for items without letters)."""
        e = self.prior()
        return None if e is None else float(e.mean())

    @property
    def gaps(self) -> np.ndarray:
        """Per cluster: the raw gap, less the letter prior's where there is one."""
        e = self.prior()
        return self.raw if e is None else self.raw - e

    def gap(self, n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
        """(mean gap, 95% CI): the cluster bootstrap, re-estimating the letter frequencies in every resample."""
        if self.answers is None:
            return paired_gap(self.orig, self.twin, n_boot, seed)
        k = len(self.keys)
        w = np.random.default_rng(seed).multinomial(k, np.full(k, 1 / k), size=int(n_boot)).astype(float)
        boot = ((w * (self.raw[None] - self.prior(w))).sum(1)) / w.sum(1)
        low, high = np.percentile(boot, [2.5, 97.5])
        return float(self.gaps.mean()), float(low), float(high)


def pair_family(rows: Sequence[dict], family: str, original: str = "original") -> PairedFamily:
    """`family`'s clusters from item rows (`source_id`, `family`, `correct`; and for the letter prior
    `options`, `target`, `pred`), with the letter prior when every option of every paired row is a letter."""
    keys, o, t, one = cluster_pairs([r["source_id"] for r in rows], [r["family"] for r in rows],
                                    [bool(r["correct"]) for r in rows], family, original)
    out = PairedFamily(keys, o, t, one)
    row = {k: i for i, k in enumerate(keys)}
    used = [r for r in rows if r["family"] in (original, family) and r["source_id"] in row]
    if not keys or not all(r.get("options") and all(_letter(x) for x in r["options"]) for r in used):
        return out
    letters = sorted({_letter(x) for r in used for x in r["options"]})
    col = {letter: j for j, letter in enumerate(letters)}  # the last column: answers with no letter read
    answers = np.zeros((len(keys), len(letters) + 1))
    orig_gold = np.zeros((len(keys), len(letters) + 1))
    twin_gold = np.zeros((len(keys), len(letters) + 1))
    n_twins = np.zeros(len(keys))
    for r in used:
        i = row[r["source_id"]]
        answers[i, col.get((r.get("pred") or "").strip(), len(letters))] += 1
        gold = col.get(str(r["target"]).strip())
        if gold is None:
            continue
        if r["family"] == original:
            orig_gold[i, gold] = 1.0
        else:
            twin_gold[i, gold] += 1.0
            n_twins[i] += 1
    out.answers = answers
    out.golds = orig_gold - twin_gold / np.maximum(n_twins, 1)[:, None]
    return out


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
