"""The audit's report card: `report.md`, a self-contained `report.html` (figures inlined), `figures/*.png`,
and the `--compare` verdicts between audits."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import numpy as np

from cleanroom.audit.items import ORIGINAL
from cleanroom.audit.stats import compare_gaps, difference_of_means, verdict
from cleanroom.audit.summary import AuditSummary, FamilyResult, cluster_gaps, load_rows
from cleanroom.stats import paired_diff
from cleanroom.store import write_bytes, write_json, write_text


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _figure(summary: AuditSummary, task: str, variant: str) -> bytes:
    """Accuracy per family (original first) with 95% CIs and the chance line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rs = [r for r in summary.results if r.task == task and r.variant == variant]
    ts = next(t for t in summary.tasks if t.task == task and t.variant == variant)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(rs) + 1.5), 3.2))
    xs = range(len(rs))
    colors = ["#2b6cb0" if r.family == ORIGINAL else "#dd6b20" for r in rs]
    ax.bar(xs, [r.acc for r in rs], color=colors,
           yerr=[[r.acc - r.ci_low for r in rs], [r.ci_high - r.acc for r in rs]], capsize=3)
    if ts.chance:
        ax.axhline(ts.chance, color="grey", linestyle="--", linewidth=1, label=f"chance {ts.chance:.2f}")
        ax.legend(loc="upper right", fontsize=8)
    ax.set_xticks(list(xs), [r.family.replace("_", "\n") for r in rs], fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy (95% CI)")
    ax.set_title(f"{task} · {variant}: benchmark (blue) vs fresh twins (orange)", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def benchmark_accuracy(s: AuditSummary) -> FamilyResult | None:
    """The model's MMLU accuracy for the benchmarks-vs-reality comparison: the originals of the formulation
    that carries signal (the option-text `cloze` before `letter` when both do), else of any formulation."""
    rows = [r for r in s.results if r.task == "mmlu" and r.family == ORIGINAL]
    signal = {(t.task, t.variant) for t in s.tasks if t.signal}
    rank = sorted(rows, key=lambda r: (("mmlu", r.variant) not in signal, r.variant != "cloze"))
    return rank[0] if rank else None


def _reality_figure(audits: list[AuditSummary]) -> bytes:
    """Benchmark accuracy (x) against long-tail accuracy per popularity bucket (y), one line per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.6, 4.4))
    markers = {"head": "o", "torso": "s", "tail": "^"}
    for k, s in enumerate(audits):
        bench = benchmark_accuracy(s)
        fmt = s.knowledge.get("formats", {}).get("mc")
        if bench is None or not fmt:
            continue
        color = f"C{k}"
        ys = []
        for b in markers:
            acc = fmt["buckets"].get(b, {}).get("acc")
            if acc is None:
                continue
            y, lo, hi = acc["value"], acc["ci_low"], acc["ci_high"]
            ys.append(y)
            ax.errorbar(bench.acc, y, xerr=[[bench.acc - bench.ci_low], [bench.ci_high - bench.acc]],
                        yerr=[[y - lo], [hi - y]], fmt=markers[b], color=color, capsize=3, ms=7,
                        label=f"{s.model}: {b}" if k == 0 or b == "head" else None)
        ax.plot([bench.acc] * len(ys), ys, color=color, lw=1, alpha=0.5)
    ax.plot([0, 1], [0, 1], ls=":", color="grey", lw=1, label="benchmark = real-world knowledge")
    ax.axhline(0.25, color="grey", ls="--", lw=0.8, label="chance (4 options)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("MMLU accuracy (95% CI)")
    ax.set_ylabel("long-tail accuracy, 4 options (head o, torso s, tail ^)")
    ax.set_title("Benchmarks vs reality")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def _triple(t: dict | None) -> str:
    return "n/a" if not t or t.get("value") is None else f"{t['value']:.3f} [{t['ci_low']:.3f}, {t['ci_high']:.3f}]"


def _knowledge_md(s: AuditSummary) -> list[str]:
    k = s.knowledge
    bench = benchmark_accuracy(s)
    lines = ["## Real-world knowledge (`longtail`)", "",
             f"Facts from {', '.join(k.get('sources', []))}, drawn with the audit's seed; buckets are thirds of "
             f"cumulative popularity (head / torso / tail) per source and relation. `mc`: 4 options of the same "
             f"kind, scored by log-likelihood (acc_norm: per byte). `short`: a generated answer graded correct / "
             f"incorrect / not attempted (SimpleQA); F is the harmonic mean of accuracy and accuracy given "
             f"attempted. CIs resample facts. The slope is accuracy per bucket step within relations "
             f"(negative = the tail is known less); its verdict is on \"accuracy falls from head to tail\".", ""]
    if bench is not None:
        lines += [f"Benchmark for comparison: MMLU ({bench.variant}) {bench.acc:.3f} "
                  f"[{bench.ci_low:.3f}, {bench.ci_high:.3f}].", "", "![benchmarks vs reality](figures/"
                  "benchmarks_vs_reality.png)", ""]
    for fam, res in k.get("formats", {}).items():
        lines += [f"### {fam}", "", "| bucket | facts | accuracy [95% CI] | " +
                  ("acc_norm | chance |" if fam == "mc" else "attempted | acc given attempted | F | grades |"),
                  "| --- | --- | --- | --- | --- |" + (" --- | --- |" if fam == "short" else "")]
        for name, m in [("overall", res["overall"]), *res["buckets"].items()]:
            if not m.get("n"):
                continue
            if fam == "mc":
                extra = f"{_triple(m.get('acc_norm'))} | {m.get('chance', 0):.2f} |"
            else:
                g = m.get("grades", {})
                extra = (f"{_triple(m.get('attempted'))} | {_triple(m.get('acc_given_attempted'))} | "
                         f"{_triple(m.get('f'))} | {g.get('correct', 0)} / {g.get('incorrect', 0)} / "
                         f"{g.get('not_attempted', 0)} |")
            lines.append(f"| {name} | {m.get('n_facts', m['n'])} | {_triple(m.get('acc'))} | {extra}")
        slope = res.get("slope", {})
        lines += ["", f"Head-to-tail slope (within relations): {_triple(slope.get('slope'))} per bucket "
                      f"→ {slope.get('verdict', 'n/a')}; pooled {_triple(slope.get('slope_pooled'))}; "
                      f"head minus tail {_triple(slope.get('head_minus_tail'))}.", ""]
    return lines


def _row_md(r: FamilyResult) -> str:
    gap = "" if r.gap is None else f"{r.gap:+.3f} [{r.gap_ci_low:+.3f}, {r.gap_ci_high:+.3f}] {r.gap_verdict}"
    mc = "" if r.mcnemar_p is None else f"b={r.mcnemar_b} c={r.mcnemar_c} p={r.mcnemar_p:.3g}"
    extra = []
    if r.alt_acc is not None:
        extra.append(f"alt {r.alt_acc:.3f}")
    if r.consistency is not None:
        extra.append(f"consistency {r.consistency:.3f}")
    if r.unparsed_rate:
        extra.append(f"unparsed {r.unparsed_rate:.1%}")
    return (f"| {r.family} | {r.n} | {r.acc:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}] | {r.n_pairs or ''} | {gap} "
            f"| {mc} | {', '.join(extra)} |")


def render_markdown(s: AuditSummary) -> str:
    lines = [f"# Audit: `{s.model}`", "",
             f"Backend `{s.backend}`; protocols: choice items by **{s.protocols.get('choice')}**, generated "
             f"answers by **{s.protocols.get('generate')}**. Options: " +
             ", ".join(f"{k}={v}" for k, v in s.options.items() if k not in ("formulations",)) + ".", "",
             "Gap = accuracy on the benchmark items minus accuracy on their fresh twins, over paired source "
             "items, with a 95% cluster-bootstrap CI (cluster = source item). *supported* = the benchmark score "
             "runs ahead of the twin; *not supported* = the twin scores higher; *inconclusive* = the CI contains "
             "0. McNemar (exact) for families with one twin per item. `alt` = plain acc for the cloze format "
             "(primary: length-normalised), strict `#### N` match for GSM8K (primary: last number).", ""]
    for t in s.tasks:
        if t.task == "longtail":
            continue  # its own section below, by popularity bucket
        sig = ("carries signal: the benchmark accuracy's CI is above chance" if t.signal else
               "**no signal**: the benchmark accuracy's CI reaches chance, so its twin gaps measure noise "
               "for this model")
        lines += [f"## {t.task} · {t.variant}", "", f"Chance {t.chance:.3f}; this formulation {sig}.", "",
                  f"![{t.task} {t.variant}](figures/{t.task}_{t.variant}.png)", "",
                  "| family | n | accuracy [95% CI] | pairs | gap [95% CI] verdict | McNemar | notes |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        lines += [_row_md(r) for r in s.results if r.task == t.task and r.variant == t.variant]
        lines.append("")
    if s.knowledge:
        lines += _knowledge_md(s)
    req = s.requests
    lines += ["## Requests and timings", "",
              f"Requests answered from the cache: {req.get('cached', 0)}; computed now: {req.get('computed', 0)}; "
              f"model calls (forward passes / generate calls / HTTP requests): {req.get('model_calls', 0)}.", "",
              "Timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in s.timings.items()) + ".", "",
              "Environment: " + ", ".join(f"{k} {v}" for k, v in s.environment.items()) + ".", "",
              "## Data sources and licenses", ""]
    lines += [f"- {src['name']}: {src['origin']}; license {src['license']} (pip `{src['package']}`)"
              for src in s.sources]
    for task, note in s.notes.items():
        lines += ["", f"Notes for {task}:", ""] + [f"- {line}" for line in _note_lines(note)]
    return "\n".join(lines) + "\n"


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


def _md_to_html(md: str, images: dict[str, bytes]) -> str:
    """The report's small Markdown subset (headings, tables, images, paragraphs) as HTML."""
    out, table = [], []

    def flush() -> None:
        if table:
            rows = [r.strip("|").split("|") for r in table if not set(r.replace("|", "").strip()) <= {"-", " "}]
            head, body = rows[0], rows[1:]
            out.append("<table><tr>" + "".join(f"<th>{html.escape(c.strip())}</th>" for c in head) + "</tr>"
                       + "".join("<tr>" + "".join(f"<td>{html.escape(c.strip())}</td>" for c in r) + "</tr>"
                                 for r in body) + "</table>")
            table.clear()

    for line in md.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        flush()
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            out.append(f"<h{level}>{html.escape(line.lstrip('#').strip())}</h{level}>")
        elif line.startswith("![") and "](" in line:
            path = line.split("](", 1)[1].rstrip(")")
            data = base64.b64encode(images.get(path, b"")).decode()
            out.append(f'<p><img alt="{html.escape(path)}" src="data:image/png;base64,{data}"></p>')
        elif line.strip():
            out.append(f"<p>{html.escape(line)}</p>")
    flush()
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.4}"
             "table{border-collapse:collapse;font-size:90%}td,th{border:1px solid #ccc;padding:3px 6px}")
    return f"<!doctype html><html><head><meta charset='utf-8'><title>audit</title><style>{style}</style></head>" \
           f"<body>{''.join(out)}</body></html>\n"


def write_report(out: Path, summary: AuditSummary) -> None:
    images = {}
    if summary.knowledge and benchmark_accuracy(summary) is not None:
        images["figures/benchmarks_vs_reality.png"] = _reality_figure([summary])
        write_bytes(out / "figures/benchmarks_vs_reality.png", images["figures/benchmarks_vs_reality.png"])
    for t in summary.tasks:
        if t.task == "longtail":
            continue
        rel = f"figures/{t.task}_{t.variant}.png"
        images[rel] = _figure(summary, t.task, t.variant)
        write_bytes(out / rel, images[rel])
    md = render_markdown(summary)
    write_text(out / "report.md", md)
    write_text(out / "report.html", _md_to_html(md, images))


def compare_audits(dirs: list[Path], n_boot: int = 2000) -> list[dict]:
    """For the first audit (A) against each other (B): per task/formulation/twin family, A's gap minus B's
    over the source items both answered, its CI, and the verdict on "A's gap is larger than B's"."""
    loaded = [(d, load_rows(d), AuditSummary.model_validate_json((d / "summary.json").read_text())) for d in dirs]
    (da, rows_a, sa), others = loaded[0], loaded[1:]
    out = []
    for db, rows_b, sb in others:
        fams_b = {(r.task, r.variant, r.family) for r in sb.results}
        for r in sa.results:
            key = (r.task, r.variant, r.family)
            if r.family == ORIGINAL or key not in fams_b:
                continue
            effect, low, high, n = compare_gaps(cluster_gaps(rows_a, *key), cluster_gaps(rows_b, *key), n_boot)
            out.append({"a": sa.model, "b": sb.model, "a_dir": str(da), "b_dir": str(db), "task": r.task,
                        "variant": r.variant, "family": r.family, "n": n, "effect": effect, "ci_low": low,
                        "ci_high": high, "verdict": verdict(low, high, expected_sign=1)})
        out += _compare_knowledge(sa, rows_a, sb, rows_b, str(da), str(db), n_boot)
    return out


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
    lines = ["# Audit comparison: is model A's benchmark-twin gap larger than model B's?", "",
             "| A | B | task | formulation | family | pairs | A gap - B gap [95% CI] | verdict |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {c['a']} | {c['b']} | {c['task']} | {c['variant']} | {c['family']} | {c['n']} | "
              f"{c['effect']:+.3f} [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}] | {c['verdict']} |" for c in results]
    write_text(out / "compare.md", "\n".join(lines) + "\n")
