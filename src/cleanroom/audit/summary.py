"""`summary.json` of an audit directory: its pydantic schema, and how it is computed from per-item rows."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, Field

from cleanroom.audit.items import ORIGINAL
from cleanroom.audit.stats import accuracy_ci, mcnemar, pair_family, verdict
from cleanroom.errors import StoreError


class FamilyResult(BaseModel):
    """Accuracy of one family of one task formulation, and (for twins) its gap to the originals."""

    task: str
    variant: str
    family: str
    protocol: str
    n: int
    acc: float
    ci_low: float
    ci_high: float
    alt_acc: float | None = None  # cloze: plain acc (primary is length-normalised); gsm8k: strict-match
    unparsed_rate: float = 0.0  # answers no letter / number could be read from (generation protocols)
    n_pairs: int = 0
    gap: float | None = None  # accuracy of the originals minus the twins', over paired clusters (beyond the
    # letter prior for lettered items: `audit.stats` module doc)
    gap_raw: float | None = None  # lettered items: the gap before the letter prior is taken out
    gap_letter_prior: float | None = None  # lettered items: the gap the model's letter preferences alone give
    gap_ci_low: float | None = None
    gap_ci_high: float | None = None
    gap_verdict: str | None = None  # "supported" = the benchmark runs ahead of its twin
    mcnemar_b: int | None = None  # original right, twin wrong (1:1 families; raw pairs)
    mcnemar_c: int | None = None
    mcnemar_p: float | None = None
    consistency: float | None = None  # rot: share of items answered with the same option text in all rotations


class TaskSummary(BaseModel):
    task: str
    variant: str
    chance: float
    signal: bool  # the originals' CI lies above chance: this formulation measures something for this model
    families: list[str]


class AuditSummary(BaseModel):
    model: str
    backend: str
    protocols: dict[str, str] = Field(default_factory=dict)  # item kind -> protocol used
    options: dict[str, Any] = Field(default_factory=dict)
    tasks: list[TaskSummary] = Field(default_factory=list)
    results: list[FamilyResult] = Field(default_factory=list)
    requests: dict[str, Any] = Field(default_factory=dict)
    timings: dict[str, float] = Field(default_factory=dict)
    environment: dict[str, Any] = Field(default_factory=dict)
    sources: list[dict[str, str]] = Field(default_factory=list)
    notes: dict[str, Any] = Field(default_factory=dict)
    # the `longtail` task: accuracy per popularity bucket in both formulations, SimpleQA grades, slope
    knowledge: dict[str, Any] = Field(default_factory=dict)


def benchmark_accuracy(s: AuditSummary) -> FamilyResult | None:
    """The model's MMLU accuracy for the benchmarks-vs-reality comparison: the originals of the formulation
    that carries signal (the option-text `cloze` before `letter` when both do), else of any formulation."""
    rows = [r for r in s.results if r.task == "mmlu" and r.family == ORIGINAL]
    signal = {(t.task, t.variant) for t in s.tasks if t.signal}
    rank = sorted(rows, key=lambda r: (("mmlu", r.variant) not in signal, r.variant != "cloze"))
    return rank[0] if rank else None


def _chance(rows: list[dict]) -> float:
    n_opts = [len(r["options"]) for r in rows if r["kind"] == "choice" and r["options"]]
    return float(np.mean([1.0 / k for k in n_opts])) if n_opts else 0.0


def summarize_rows(rows: list[dict], n_boot: int = 2000, seed: int = 0) -> tuple[list[TaskSummary], list[FamilyResult]]:
    """Per (task, variant): chance and signal; per family: accuracy, gap, McNemar, consistency."""
    by_variant: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in rows:
        by_variant[(r["task"], r["variant"])].append(r)
    tasks, results = [], []
    for (task, variant), rs in sorted(by_variant.items()):
        families = [ORIGINAL] + sorted({r["family"] for r in rs} - {ORIGINAL})
        chance = _chance([r for r in rs if r["family"] == ORIGINAL])
        signal = False
        for k, fam in enumerate(families):
            sub = [r for r in rs if r["family"] == fam]
            acc, low, high = accuracy_ci([r["correct"] for r in sub], n_boot, seed + k)
            alt = [r["correct_alt"] for r in sub if r["correct_alt"] is not None]
            res = FamilyResult(task=task, variant=variant, family=fam, protocol=sub[0]["protocol"], n=len(sub),
                               acc=acc, ci_low=low, ci_high=high,
                               alt_acc=float(np.mean(alt)) if alt else None,
                               unparsed_rate=float(np.mean([not r["parsed"] for r in sub])))
            if fam == ORIGINAL:
                signal = bool(low > chance) if chance else bool(low > 0)
            else:
                pf = pair_family(rs, fam)
                res.n_pairs = len(pf.keys)
                if pf.keys:
                    g, gl, gh = pf.gap(n_boot, seed + k)
                    res.gap, res.gap_ci_low, res.gap_ci_high = g, gl, gh
                    res.gap_verdict = verdict(gl, gh, expected_sign=1)
                    res.gap_letter_prior = pf.prior_mean()
                    if res.gap_letter_prior is not None:
                        res.gap_raw = float(pf.raw.mean())
                if pf.keys and pf.one_to_one:
                    res.mcnemar_b, res.mcnemar_c, res.mcnemar_p = mcnemar(pf.orig, pf.twin)
                if fam == "rot":
                    res.consistency = _consistency(rs)
            results.append(res)
        tasks.append(TaskSummary(task=task, variant=variant, chance=chance, signal=signal, families=families))
    return tasks, results


def _consistency(rows: list[dict]) -> float | None:
    """Share of sources whose chosen option *text* is the same in the original and every rotation."""
    chosen: dict[str, set[str]] = defaultdict(set)
    counts: dict[str, int] = defaultdict(int)
    for r in rows:
        if r["family"] in (ORIGINAL, "rot") and r["pred_text"] is not None:
            chosen[r["source_id"]].add(r["pred_text"])
            counts[r["source_id"]] += 1
    full = [s for s, n in counts.items() if n > 1]
    return float(np.mean([len(chosen[s]) == 1 for s in full])) if full else None


def cluster_gaps(rows: list[dict], task: str, variant: str, family: str) -> dict[str, float]:
    """{source id: original correctness - mean twin correctness (less the letter prior)} for one family
    (for `--compare`)."""
    pf = pair_family([r for r in rows if r["task"] == task and r["variant"] == variant], family)
    return {k: float(d) for k, d in zip(pf.keys, pf.gaps, strict=True)}


def load_rows(audit_dir: Path) -> list[dict]:
    """Every item row of a finished audit directory."""
    files = sorted((audit_dir / "items").glob("*.parquet"))
    if not files:
        raise StoreError(f"{audit_dir} is not an audit directory (no items/*.parquet)")
    rows: list[dict] = []
    for f in files:
        try:
            rows += pq.read_table(f).to_pylist()
        except (pa.ArrowInvalid, OSError) as e:
            raise StoreError(f"corrupted file {f}: not readable as Parquet ({e})") from None
    return rows
