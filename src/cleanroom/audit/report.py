"""The audit's report card: `report.md`, a self-contained `report.html` (figures inlined), `figures/*.png`,
and the `--compare` verdicts between audits. Sections are built from the `AuditSummary` and rendered by the
project's one renderer (`report/render.py`: the same blocks as Markdown and as HTML); figures come from the
one figure module (`report/figures.py`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from cleanroom.audit.items import ORIGINAL
from cleanroom.audit.stats import compare_gaps, difference_of_means, verdict
from cleanroom.audit.summary import AuditSummary, FamilyResult, benchmark_accuracy, cluster_gaps, load_rows
from cleanroom.report import figures
from cleanroom.report.render import Section, html_page, markdown
from cleanroom.stats import paired_diff
from cleanroom.store import write_json, write_text

REALITY = "benchmarks_vs_reality"


def _triple(t: dict | None) -> str:
    return "n/a" if not t or t.get("value") is None else f"{t['value']:.3f} [{t['ci_low']:.3f}, {t['ci_high']:.3f}]"


def _knowledge_sections(s: AuditSummary) -> list[Section]:
    k = s.knowledge
    bench = benchmark_accuracy(s)
    sec = Section("Real-world knowledge (`longtail`)", [
        f"Facts from {', '.join(k.get('sources', []))}, drawn with the audit's seed; buckets are thirds of "
        f"cumulative popularity (head / torso / tail) per source and relation. `mc`: 4 options of the same "
        f"kind, scored by log-likelihood (acc_norm: per character). `short`: a generated answer graded correct / "
        f"incorrect / not attempted (SimpleQA); F is the harmonic mean of accuracy and accuracy given "
        f"attempted. CIs resample facts. The slope is accuracy per bucket step within relations "
        f"(negative = the tail is known less); its verdict is on \"accuracy falls from head to tail\"."])
    if bench is not None:
        sec.paragraphs.append(f"Benchmark for comparison: MMLU ({bench.variant}) {bench.acc:.3f} "
                              f"[{bench.ci_low:.3f}, {bench.ci_high:.3f}].")
        sec.figures.append(REALITY)
    out = [sec]
    for fam, res in k.get("formats", {}).items():
        header = ["bucket", "facts", "accuracy [95% CI]"] + (
            ["acc_norm", "chance"] if fam == "mc" else ["attempted", "acc given attempted", "F", "grades"])
        rows = []
        for name, m in [("overall", res["overall"]), *res["buckets"].items()]:
            if not m.get("n"):
                continue
            if fam == "mc":
                extra = [_triple(m.get("acc_norm")), f"{m.get('chance', 0):.2f}"]
            else:
                g = m.get("grades", {})
                extra = [_triple(m.get("attempted")), _triple(m.get("acc_given_attempted")), _triple(m.get("f")),
                         f"{g.get('correct', 0)} / {g.get('incorrect', 0)} / {g.get('not_attempted', 0)}"]
            rows.append([name, str(m.get("n_facts", m["n"])), _triple(m.get("acc")), *extra])
        slope = res.get("slope", {})
        out.append(Section(fam, [
            f"Head-to-tail slope (within relations): {_triple(slope.get('slope'))} per bucket → "
            f"{slope.get('verdict', 'n/a')}; pooled {_triple(slope.get('slope_pooled'))}; head minus tail "
            f"{_triple(slope.get('head_minus_tail'))}."], tables=[(header, rows)], level=3))
    return out


def _row(r: FamilyResult) -> list[str]:
    gap = "" if r.gap is None else f"{r.gap:+.3f} [{r.gap_ci_low:+.3f}, {r.gap_ci_high:+.3f}] {r.gap_verdict}"
    mc = "" if r.mcnemar_p is None else f"b={r.mcnemar_b} c={r.mcnemar_c} p={r.mcnemar_p:.3g}"
    extra = []
    if r.alt_acc is not None:
        extra.append(f"alt {r.alt_acc:.3f}")
    if r.consistency is not None:
        extra.append(f"consistency {r.consistency:.3f}")
    if r.unparsed_rate:
        extra.append(f"unparsed {r.unparsed_rate:.1%}")
    if r.gap_raw is not None:
        extra.append(f"raw gap {r.gap_raw:+.3f}, letter prior {r.gap_letter_prior:+.3f}")
    return [r.family, str(r.n), f"{r.acc:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}]", str(r.n_pairs or ""), gap, mc,
            ", ".join(extra)]


def _figure_name(task: str, variant: str) -> str:
    return f"{task}_{variant}"


def title(s: AuditSummary) -> str:
    return f"Audit: `{s.model}`"


def build_sections(s: AuditSummary) -> list[Section]:
    """The audit's report card as sections (rendered as Markdown and as HTML by `report/render.py`)."""
    secs = [Section("How to read it", [
        f"Backend `{s.backend}`; protocols: choice items by **{s.protocols.get('choice')}**, generated answers by "
        f"**{s.protocols.get('generate')}**. Options: "
        + ", ".join(f"{k}={v}" for k, v in s.options.items() if k not in ("formulations",)) + ".",
        "Gap = accuracy on the benchmark items minus accuracy on their fresh twins, over paired source items, "
        "with a 95% cluster-bootstrap CI (cluster = source item). *supported* = the benchmark score runs ahead of "
        "the twin; *not supported* = the twin scores higher; *inconclusive* = the CI contains 0. With lettered "
        "options the gap is measured beyond the letter prior: less the gap a content-blind chooser with the "
        "model's own answer-letter frequencies would show on the same items (the notes give the raw gap and "
        "that prior). McNemar (exact, on the raw pairs) for families with one twin per item. `alt` = plain acc "
        "for the cloze format (primary: "
        "length-normalised), strict `#### N` match for GSM8K (primary: last number)."])]
    for t in s.tasks:
        if t.task == "longtail":
            continue  # its own section below, by popularity bucket
        sig = ("carries signal: the benchmark accuracy's CI is above chance" if t.signal else
               "**no signal**: the benchmark accuracy's CI reaches chance, so its twin gaps measure noise "
               "for this model")
        secs.append(Section(f"{t.task} · {t.variant}", [f"Chance {t.chance:.3f}; this formulation {sig}."],
                            tables=[(["family", "n", "accuracy [95% CI]", "pairs", "gap [95% CI] verdict", "McNemar",
                                      "notes"],
                                     [_row(r) for r in s.results if r.task == t.task and r.variant == t.variant])],
                            figures=[_figure_name(t.task, t.variant)]))
    if s.knowledge:
        secs += _knowledge_sections(s)
    req = s.requests
    secs.append(Section("Requests and timings", [
        f"Requests answered from the cache: {req.get('cached', 0)}; computed now: {req.get('computed', 0)}; "
        f"model calls (forward passes / generate calls / HTTP requests): {req.get('model_calls', 0)}.",
        "Timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in s.timings.items()) + ".",
        "Environment: " + ", ".join(f"{k} {v}" for k, v in s.environment.items()) + "."]))
    secs.append(Section("Data sources and licenses", tables=[(["source", "origin", "license", "install"], [
        [src["name"], src["origin"], src["license"], f"`{src['package']}`"] for src in s.sources])]))
    secs += [Section(f"Notes for {task}", bullets=_note_lines(note), level=3) for task, note in s.notes.items()]
    return secs


def _captions(s: AuditSummary) -> dict[str, str]:
    caps = {_figure_name(t.task, t.variant): f"{t.task} · {t.variant}: accuracy per family with 95% CIs, the "
            f"benchmark items (blue) and their fresh twins (orange); dashed: chance." for t in s.tasks}
    caps[REALITY] = ("MMLU accuracy against long-tail accuracy per popularity bucket (4 options), with 95% CIs; "
                     "dotted: benchmark = real-world knowledge.")
    return caps


def _note_lines(note: dict) -> list[str]:
    """A task's notes, readable: rejected twins as a count per family with its commonest reasons."""
    out = []
    for key, value in note.items():
        if key == "rejected_twins" and isinstance(value, dict):
            for family, reasons in value.items():
                top = sorted(reasons.items(), key=lambda kv: -kv[1])[:3]
                out.append(f"{family}: {sum(reasons.values())} source items without a twin (commonest: "
                           + "; ".join(f"{r} x{n}" for r, n in top) + ")")
        else:
            out.append(f"{key}: {value}")
    return out


def write_report(out: Path, summary: AuditSummary) -> None:
    """`report.md`, `report.html` and `figures/*.png` of an audit directory."""
    paths = {}
    bench, fmt = benchmark_accuracy(summary), (summary.knowledge or {}).get("formats", {}).get("mc")
    if bench is not None and fmt:
        buckets = {b: (a["value"], a["ci_low"], a["ci_high"]) for b, r in fmt["buckets"].items()
                   if (a := r.get("acc")) is not None}
        paths[REALITY] = f"figures/{REALITY}.png"
        figures.audit_reality([(summary.model, (bench.acc, bench.ci_low, bench.ci_high), buckets)],
                              out / paths[REALITY])
    for t in summary.tasks:
        if t.task != "longtail":
            name = _figure_name(t.task, t.variant)
            paths[name] = f"figures/{name}.png"
            bars = [(r.family, (r.acc, r.ci_low, r.ci_high), r.family == ORIGINAL) for r in summary.results
                    if r.task == t.task and r.variant == t.variant]
            figures.audit_families(bars, t.chance, f"{t.task} · {t.variant}", out / paths[name])
    sections, captions = build_sections(summary), _captions(summary)
    write_text(out / "report.md", markdown(title(summary), sections, paths, captions))
    write_text(out / "report.html", html_page(title(summary), sections, figures=paths, root=out, captions=captions))


def compare_audits(dirs: list[Path], n_boot: int = 2000) -> list[dict]:
    """For the first audit (A) against each other (B): per task/formulation, A's benchmark accuracy minus B's
    on the same items ("A scores higher"); per twin family, A's gap minus B's over the source items both
    answered, its CI, and the verdict on "A's gap is larger than B's"; the long-tail comparisons."""
    loaded = [(d, load_rows(d), AuditSummary.model_validate_json((d / "summary.json").read_text())) for d in dirs]
    (da, rows_a, sa), others = loaded[0], loaded[1:]
    out = []
    for db, rows_b, sb in others:
        fams_b = {(r.task, r.variant, r.family) for r in sb.results}
        for r in sa.results:
            key = (r.task, r.variant, r.family)
            if key not in fams_b or r.task == "longtail":  # long-tail facts: `_compare_knowledge`
                continue
            if r.family == ORIGINAL:  # the benchmark itself, on the items both answered
                out += _compare_benchmark(sa, rows_a, sb, rows_b, str(da), str(db), r.task, r.variant, n_boot)
                continue
            effect, low, high, n = compare_gaps(cluster_gaps(rows_a, *key), cluster_gaps(rows_b, *key), n_boot)
            out.append({"a": sa.model, "b": sb.model, "a_dir": str(da), "b_dir": str(db), "task": r.task,
                        "variant": r.variant, "family": r.family, "n": n, "effect": effect, "ci_low": low,
                        "ci_high": high, "verdict": verdict(low, high, expected_sign=1)})
        out += _compare_knowledge(sa, rows_a, sb, rows_b, str(da), str(db), n_boot)
    return out


def _compare_benchmark(sa: AuditSummary, rows_a: list[dict], sb: AuditSummary, rows_b: list[dict], da: str,
                       db: str, task: str, variant: str, n_boot: int) -> list[dict]:
    """A's benchmark accuracy minus B's on the original items both answered (paired), "A scores higher"."""
    pick = {"task": task, "variant": variant, "family": ORIGINAL}
    a = {r["id"]: r for r in rows_a if all(r[k] == v for k, v in pick.items())}
    b = {r["id"]: r for r in rows_b if all(r[k] == v for k, v in pick.items())}
    ids = sorted(set(a) & set(b))
    if not ids:
        return []
    effect, low, high = paired_diff(np.array([float(a[i]["correct"]) for i in ids]),
                                    np.array([float(b[i]["correct"]) for i in ids]), n_boot, 0,
                                    [a[i]["source_id"] for i in ids])
    return [{"a": sa.model, "b": sb.model, "a_dir": da, "b_dir": db, "task": task, "variant": variant,
             "family": "benchmark: A scores higher", "n": len(ids), "effect": effect, "ci_low": low, "ci_high": high,
             "verdict": verdict(low, high, 1)}]


def _compare_knowledge(sa: AuditSummary, rows_a: list[dict], sb: AuditSummary, rows_b: list[dict], da: str,
                       db: str, n_boot: int) -> list[dict]:
    """On the long-tail facts both audits asked (same seed and limit): A's accuracy minus B's per formulation
    and bucket ("A knows more"), and how much further A's benchmark score runs ahead of its real-world
    knowledge than B's ([MMLU - longtail](A) - [MMLU - longtail](B), "A's benchmark runs further ahead")."""
    out = []
    lt_a = {r["id"]: r for r in rows_a if r["task"] == "longtail"}
    lt_b = {r["id"]: r for r in rows_b if r["task"] == "longtail"}
    for variant in sorted({r["variant"] for r in lt_a.values()}):
        for bucket in (None, "head", "torso", "tail"):
            ids = sorted(i for i, r in lt_a.items() if i in lt_b and r["variant"] == variant and
                         (bucket is None or json.loads(r["meta"]).get("bucket") == bucket))
            if not ids:
                continue
            x = np.array([float(lt_a[i]["correct"]) for i in ids])
            y = np.array([float(lt_b[i]["correct"]) for i in ids])
            effect, low, high = paired_diff(x, y, n_boot, 0, [lt_a[i]["source_id"] for i in ids])
            out.append({"a": sa.model, "b": sb.model, "a_dir": da, "b_dir": db, "task": "longtail",
                        "variant": variant, "family": f"knows more ({bucket or 'all buckets'})", "n": len(ids),
                        "effect": effect, "ci_low": low, "ci_high": high, "verdict": verdict(low, high, 1)})
    bench_a, bench_b = benchmark_accuracy(sa), benchmark_accuracy(sb)
    if bench_a is None or bench_b is None or bench_a.variant != bench_b.variant:
        return out
    mm_a = {r["id"]: r for r in rows_a if r["task"] == "mmlu" and r["variant"] == bench_a.variant
            and r["family"] == ORIGINAL}
    mm_b = {r["id"]: r for r in rows_b if r["task"] == "mmlu" and r["variant"] == bench_a.variant
            and r["family"] == ORIGINAL}
    m_ids = sorted(set(mm_a) & set(mm_b))
    k_ids = sorted(i for i, r in lt_a.items() if i in lt_b and r["variant"] == "mc")
    if m_ids and k_ids:
        d_bench = np.array([float(mm_a[i]["correct"]) - float(mm_b[i]["correct"]) for i in m_ids])
        d_known = np.array([float(lt_a[i]["correct"]) - float(lt_b[i]["correct"]) for i in k_ids])
        effect, low, high = difference_of_means(d_bench, [mm_a[i]["source_id"] for i in m_ids], d_known,
                                                [lt_a[i]["source_id"] for i in k_ids], n_boot)
        out.append({"a": sa.model, "b": sb.model, "a_dir": da, "b_dir": db, "task": "mmlu vs longtail",
                    "variant": f"{bench_a.variant} vs mc", "family": "benchmark runs further ahead of knowledge",
                    "n": len(m_ids) + len(k_ids), "effect": effect, "ci_low": low, "ci_high": high,
                    "verdict": verdict(low, high, 1)})
    return out


def write_compare(out: Path, results: list[dict]) -> None:
    write_json(out / "compare.json", results)
    rows = [[c["a"], c["b"], c["task"], c["variant"], c["family"], str(c["n"]),
             f"{c['effect']:+.3f} [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}]", c["verdict"]] for c in results]
    sections = [Section("Verdicts", tables=[(["A", "B", "task", "formulation", "family", "pairs",
                                              "A - B [95% CI]", "verdict"], rows)])]
    write_text(out / "compare.md", markdown("Audit comparison: model A against model B (benchmark, twin gaps, "
                                            "long-tail knowledge)", sections))
