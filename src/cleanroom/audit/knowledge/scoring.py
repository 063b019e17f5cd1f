"""The knowledge metrics of `longtail` answers by popularity bucket.

The audit answers the items (`cleanroom.audit.run.answer_items`: log-likelihood of " " + each option of an
`mc` item, greedy generation of a `short` one graded by `LongtailTask.grade`) and writes one row per item
(`items/longtail.parquet`, the audit's row shape). A choice row is right when the gold has the highest summed
log-probability (`correct`) and, lm-evaluation-harness's acc_norm, the highest log-probability per character
of the option (`correct_alt`). A generated answer's SimpleQA grade is `correct`, `not_attempted` (an
abstention: `parsed = False`) or `incorrect`.

`knowledge_metrics` gives, per format, overall and per bucket (and per bucket of every popularity
signal, and per relation): accuracy with 95% bootstrap CIs; for short answers also the SimpleQA
grades, accuracy given attempted and F (their harmonic mean, as SimpleQA reports). The head-to-tail
slope is the least-squares slope of correctness on the bucket index (head 0, torso 1, tail 2): the
change in accuracy per bucket step, negative when the tail is known less. It is computed *within*
relations (bucket index and correctness centred per source/relation, a fixed-effects slope), because
the buckets hold different mixes of relations (a relation whose head is two countries adds little to
the pooled head) and relations differ in difficulty; the pooled slope is reported beside it. The
verdict on "accuracy falls from head to tail" uses the within-relation slope. Every CI resamples facts
(`source_id`) with replacement, so items of one fact move together.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Sequence

import numpy as np

from cleanroom.audit.knowledge.facts import BUCKETS
from cleanroom.audit.knowledge.items import TASK
from cleanroom.stats import LEVEL, cluster_bootstrap, verdict

MAX_TOKENS = 24


def grade_of(row: dict) -> str:
    """The SimpleQA grade of a generated answer's row."""
    return "correct" if row["correct"] else "incorrect" if row["parsed"] else "not_attempted"


def correct_norm(row: dict) -> bool:
    """acc_norm's verdict on a choice row (the primary verdict where the protocol gave no other, e.g. chat)."""
    return bool(row["correct"] if row.get("correct_alt") is None else row["correct_alt"])


# ------------------------------------------------------------------------------------------ bootstrap


def _ratio(num: str, den: str) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
    def f(s):
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.asarray(s[num], dtype=float) / s[den]
    return f


def _f_score(s):
    """SimpleQA's F: harmonic mean of accuracy and accuracy given attempted; 0 when nothing is correct
    (a resample without a correct answer must count as 0, not be dropped as 0/0)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        acc, given = s["c"] / s["n"], s["c"] / s["a"]
        return np.where(np.asarray(s["c"]) == 0, 0.0, 2 * acc * given / (acc + given))


def _slope(s):
    with np.errstate(invalid="ignore", divide="ignore"):
        cov = s["xy"] - s["x"] * s["y"] / s["n"]
        var = s["xx"] - s["x"] ** 2 / s["n"]
        return cov / var


def _triple(v: tuple[float, float, float]) -> dict[str, float]:
    return {"value": v[0], "ci_low": v[1], "ci_high": v[2]}


def _summarise(rows: list[dict], family: str, n_boot: int, seed: int) -> dict:
    clusters = [r["source_id"] for r in rows]
    c = np.array([bool(r["correct"]) for r in rows], dtype=float)
    n = np.ones_like(c)
    out: dict = {"n": len(rows), "n_facts": len(set(clusters))}
    if not rows:
        return out
    if family == "mc":
        cn = np.array([correct_norm(r) for r in rows], dtype=float)
        out["acc"] = _triple(cluster_bootstrap(clusters, {"c": c, "n": n}, _ratio("c", "n"), n_boot, seed))
        out["acc_norm"] = _triple(cluster_bootstrap(clusters, {"c": cn, "n": n}, _ratio("c", "n"), n_boot, seed))
        out["chance"] = float(np.mean([1 / len(r["options"]) for r in rows]))
    else:
        grades = [grade_of(r) for r in rows]
        a = np.array([g != "not_attempted" for g in grades], dtype=float)
        cols = {"c": c, "n": n, "a": a}
        out["grades"] = {g: int(sum(x == g for x in grades)) for g in ("correct", "incorrect", "not_attempted")}
        out["empty_answers"] = int(sum(not (r.get("response") or "").strip() for r in rows))
        out["acc"] = _triple(cluster_bootstrap(clusters, cols, _ratio("c", "n"), n_boot, seed))
        out["attempted"] = _triple(cluster_bootstrap(clusters, cols, _ratio("a", "n"), n_boot, seed))
        out["acc_given_attempted"] = _triple(cluster_bootstrap(clusters, cols, _ratio("c", "a"), n_boot, seed))
        out["f"] = _triple(cluster_bootstrap(clusters, cols, _f_score, n_boot, seed))
    return out


def head_to_tail_slope(rows: Sequence[dict], n_boot: int = 2000, seed: int = 0, bucket_of: str | None = None,
                       norm: bool = False) -> dict:
    """Slope of correctness (0/1; acc_norm's with `norm`) on the bucket index (head 0, torso 1, tail 2),
    within relations and pooled, with fact-clustered CIs; the pooled head-minus-tail difference; and the
    lab's verdict on "accuracy falls from head to tail" (from the within-relation slope). `bucket_of` picks
    a popularity signal's buckets instead of the primary ones."""
    nan3 = (float("nan"),) * 3
    keep = []
    for r in rows:
        meta = json.loads(r["meta"])
        b = meta["bucket"] if bucket_of is None else meta.get("buckets", {}).get(bucket_of)
        if b in BUCKETS and r.get("correct") is not None:
            keep.append((r, BUCKETS.index(b), f"{meta['source']}/{meta['relation']}"))
    x = np.array([b for _, b, _ in keep], dtype=float)
    if len(set(x.tolist())) < 2:
        return {"slope": _triple(nan3), "slope_pooled": _triple(nan3), "head_minus_tail": _triple(nan3),
                "verdict": "inconclusive", "n": len(keep)}
    clusters = [r["source_id"] for r, _, _ in keep]
    y = np.array([correct_norm(r) if norm else bool(r["correct"]) for r, _, _ in keep], dtype=float)
    groups = sorted({g for _, _, g in keep})
    cols = {"n": np.ones_like(x), "x": x, "y": y, "xy": x * y, "xx": x * x}
    for j, g in enumerate(groups):  # per-relation sums: the within-relation slope centres each relation
        mask = np.array([gg == g for _, _, gg in keep], dtype=float)
        for k in ("n", "x", "y", "xy", "xx"):
            cols[f"{k}{j}"] = cols[k] * mask

    def within(s):
        with np.errstate(invalid="ignore", divide="ignore"):
            num = sum(np.nan_to_num(s[f"xy{j}"] - s[f"x{j}"] * s[f"y{j}"] / s[f"n{j}"]) for j in range(len(groups)))
            den = sum(np.nan_to_num(s[f"xx{j}"] - s[f"x{j}"] ** 2 / s[f"n{j}"]) for j in range(len(groups)))
            return num / den

    slope = cluster_bootstrap(clusters, cols, within, n_boot, seed)
    pooled = cluster_bootstrap(clusters, {k: cols[k] for k in ("n", "x", "y", "xy", "xx")}, _slope, n_boot, seed)
    h, t = (x == 0).astype(float), (x == 2).astype(float)

    def diff(s):
        with np.errstate(invalid="ignore", divide="ignore"):
            return s["hy"] / s["h"] - s["ty"] / s["t"]

    hmt = cluster_bootstrap(clusters, {"h": h, "t": t, "hy": h * y, "ty": t * y}, diff, n_boot, seed)
    return {"slope": _triple(slope), "slope_pooled": _triple(pooled), "head_minus_tail": _triple(hmt),
            "n": len(keep), "verdict": verdict(slope[1], slope[2], expected_sign=-1)}


def knowledge_metrics(rows: Sequence[dict], n_boot: int = 2000, seed: int = 0) -> dict:
    """Per format ("short", "mc") of the audit's `longtail` rows (the other tasks' rows are passed over):
    overall, per bucket, per signal's buckets, per relation, and the head-to-tail slope (module doc). Sources
    and relations present are listed too. {} when there is no `longtail` row."""
    rows = [r for r in rows if r["task"] == TASK]
    if not rows:
        return {}
    out: dict = {"n_boot": n_boot, "seed": seed, "level": LEVEL, "formats": {}}
    metas = [json.loads(r["meta"]) for r in rows]
    out["sources"] = sorted({m["source"] for m in metas})
    for family in ("short", "mc"):
        fam = [(r, m) for r, m in zip(rows, metas, strict=True) if r["variant"] == family]
        if not fam:
            continue
        items = [r for r, _ in fam]
        res: dict = {"overall": _summarise(items, family, n_boot, seed)}
        res["buckets"] = {b: _summarise([r for r, m in fam if m["bucket"] == b], family, n_boot, seed)
                          for b in BUCKETS}
        signals: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
        for r, m in fam:
            for sig, b in m.get("buckets", {}).items():
                signals[f"{m['source']}/{m['relation']}/{sig}"][b].append(r)
        res["by_signal"] = {
            name: {"buckets": {b: _summarise(by[b], family, n_boot, seed) for b in BUCKETS if by.get(b)},
                   "slope": head_to_tail_slope([r for b in BUCKETS for r in by.get(b, [])], n_boot, seed,
                                               bucket_of=name.rsplit("/", 1)[1])}
            for name, by in sorted(signals.items())}
        relations: dict[str, list[dict]] = defaultdict(list)
        for r, m in fam:
            relations[f"{m['source']}/{m['relation']}"].append(r)
        res["by_relation"] = {
            k: {**_summarise(v, family, n_boot, seed),
                "buckets": {b: _summarise(by, family, n_boot, seed) for b in BUCKETS
                            if (by := [r for r in v if json.loads(r["meta"])["bucket"] == b])}}
            for k, v in sorted(relations.items())}
        res["slope"] = head_to_tail_slope(items, n_boot, seed)
        if family == "mc":
            res["slope_norm"] = head_to_tail_slope(items, n_boot, seed, norm=True)
        out["formats"][family] = res
    return out
