"""Render a report as Markdown and as one self-contained HTML file (figures embedded).

Both are rendered from the same list of blocks (`Section`s, by `markdown` and `html_page`), so they always
say the same thing. Every report of the project is rendered by these two functions: the run's report card
(here), the seed sweep's (`report/sweep.py`) and the audit's (`audit/report.py`). Text may use three inline
Markdown marks, **bold**, *italic* and `code`; `inline_html` is the one place they become HTML.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path

from cleanroom.report.summary import Summary
from cleanroom.store import RunStore
from cleanroom.world.schema import TASKS

FIGURE_TEXT = {
    "bench_vs_reality": "Benchmark accuracy vs long-tail accuracy (held-out cloze) per recipe (95% CIs).",
    "longtail_deciles": "Long-tail accuracy (held-out cloze) by popularity decile (shaded: 95% CI).",
    "bench_twin": "Benchmark, its fresh twin (same facts, same format, unseen wording) and the format shift "
                  "(same facts, a task format no recipe renders), per recipe.",
    "tamper": "Held-out restricted accuracy after k steps of adversarial fine-tuning, the strongest attack "
              "(family and learning rate) at each k, for every model and a random init (black).",
    "loss": "Training (thin) and validation (thick) loss per recipe.",
    "coverage": "Share of long-tail entities each corpus mentions, by popularity decile.",
}
VERDICT_CSS = {"supported": "sup", "not supported": "nsup", "inconclusive": "inc"}


@dataclass
class Section:
    """A heading (`level` 2 or 3) and what follows it, in this order: paragraphs, bullet points, tables
    (header, rows), figures (names: the page's `figures` maps each to its file, `captions` to its caption)."""

    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[tuple[list[str], list[list[str]]]] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)
    bullets: list[str] = field(default_factory=list)
    level: int = 2


def _ci(acc: float | None, lo: float | None, hi: float | None) -> str:
    return "n/a" if acc is None else f"{acc:.3f} [{lo:.3f}, {hi:.3f}]"


def _signed(e: float | None, lo: float | None, hi: float | None) -> str:
    return "n/a" if e is None or lo is None or hi is None else f"{e:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def build_sections(s: Summary, figures: dict[str, str]) -> list[Section]:
    secs = []
    claims = Section("Verdicts")
    for key, c in s.claims.items():
        claims.paragraphs.append(
            f"**{key} — {c.claim}: {c.verdict.upper()}.** Effect {_signed(c.effect, c.ci_low, c.ci_high)} "
            f"(95% CI over models and items; positive = the claim's direction). {c.detail}." + _null_warning(s, key)
        )
    claims.paragraphs.append("A verdict is *supported* when the CI lies above zero, *not supported* when it lies "
                             "below, and *inconclusive* when it contains zero. Each recipe is its replicates (models "
                             "that differ only in their seed) and a CI carries both units: the items, resampling the "
                             "entities they are about (the same ones for both sides), and the models, through the "
                             "statistic's between-model variance pooled over the run's recipes.")
    rows = [[key, cmp.label, _signed(cmp.effect, cmp.ci_low, cmp.ci_high), str(cmp.n), cmp.verdict]
            for key, c in s.claims.items() for cmp in c.comparisons]
    claims.tables.append((["claim", "comparison", "effect [95% CI]", "n", "verdict"], rows))
    secs.append(claims)
    if s.controls:
        secs.append(_controls_section(s))

    res = Section("Results", ["Accuracy per recipe and task with 95% bootstrap CIs; `restricted` is before any "
                              "attack (k = 0). `longtail` asks each long-tail fact with a held-out cloze stem (\"By "
                              "trade, X is\"); `longtail_qa` asks the same facts as questions (\"Question: What is "
                              "the profession of X?\"), a format only the textbook recipe practises (in its "
                              "exercises), so it measures question answering as much as knowledge."])
    tasks = [t for t in TASKS if all(t in s.results[r] for r in s.recipes)]
    header = ["recipe"] + list(tasks)
    body = [[r] + [_ci(s.results[r][t].acc, s.results[r][t].ci_low, s.results[r][t].ci_high) for t in tasks]
            for r in s.recipes]
    first = s.results[s.recipes[0]]
    body.append(["chance"] + [f"{first[t].chance:.3f}" for t in tasks])
    body.append(["items"] + [str(first[t].n) for t in tasks])
    res.tables.append((header, body))
    if s.group_results:
        res.paragraphs.append("Per recipe, its replicates together (the unit the claims compare): mean accuracy with "
                              "a 95% CI over models and items.")
        groups = list(s.group_results)
        res.tables.append((header, [[g] + [_ci(s.group_results[g][t].acc, s.group_results[g][t].ci_low,
                                                s.group_results[g][t].ci_high) if t in s.group_results[g] else "–"
                                            for t in tasks] for g in groups]))
    res.figures += [f for f in ("bench_vs_reality", "longtail_deciles", "bench_twin", "tamper") if f in figures]
    if s.worldless:
        res.paragraphs.append(f"{', '.join(f'`{r}`' for r in s.worldless)}: no world behind the text, so these "
                              f"rows are floors (the task format alone), not knowledge; see \"Recipes without a "
                              f"world\".")
    secs.append(res)
    if s.worldless:
        secs.append(_worldless_section(s))

    if s.tamper:
        tam = Section("Tamper curves", ["Held-out restricted accuracy after k attack steps: the strongest attack "
                                        "at each k (family and learning rate in brackets). `scratch` is a randomly "
                                        "initialised model under the same attacks: what the attack text alone "
                                        "teaches."])
        tam.paragraphs.append(_tamper_in_words(s))
        ks = sorted({p.steps for pts in s.tamper.values() for p in pts})
        tam.tables.append((["model"] + [f"k={k}" for k in ks], [
            [r] + [next((f"{p.acc:.3f} ({p.attack}, lr {p.lr:g})" for p in pts if p.steps == k), "–") for k in ks]
            for r, pts in s.tamper.items()]))
        secs.append(tam)

    secs.append(_data_section(s, figures))
    if "loss" in figures:
        secs.append(Section("Training", figures=["loss"]))
    env = Section("Environment and timings")
    env.tables.append((["", "value"], [[k, str(v)] for k, v in s.environment.items()]))
    env.tables.append((["stage", "seconds", "core share"],
                       [[k, f"{v:.1f}", f"{s.core_share[k]:.0%}" if k in s.core_share else "–"]
                        for k, v in s.timings.items()] + [["total", f"{sum(s.timings.values()):.1f}", ""]]))
    secs.append(env)
    return secs


def _null_warning(s: Summary, claim: str) -> str:
    """A warning for a verdict whose statistic a null control decided between two seeds of one recipe."""
    hits = [(c.recipes, cmp) for c in s.controls.null.values() for cmp in c.comparisons
            if cmp.statistic == f"{claim} statistic" and cmp.verdict != "inconclusive"]
    if not hits:
        return ""
    which = "; ".join(f"{' vs '.join(r)} {_signed(cmp.effect, cmp.ci_low, cmp.ci_high)}" for r, cmp in hits)
    return (f" **Read with care:** the A/A control decided this statistic between replicates of one recipe "
            f"({which}): that recipe's models differ more than the between-model variance the interval carries, "
            f"so its CIs may be too narrow (\"Does the instrument work?\").")


def _tamper_in_words(s: Summary) -> str:
    """What was attacked, with what, and what came back, in plain words."""
    def best(model: str) -> str:
        pts = s.tamper.get(model, [])
        if not pts:
            return "n/a"
        top = max(pts, key=lambda p: (p.acc or 0.0, -p.steps))
        return (f"{pts[0].acc:.2f} before any attack and {top.acc:.2f} after its strongest "
                f"({top.attack}, {top.steps} steps)")

    chance = next(iter(s.results.values()))["restricted"].chance
    longest = max(p.steps for v in s.tamper.values() for p in v)
    parts = [f"Every model was fine-tuned by an attacker with two kinds of restricted-domain text: questions and "
             f"answers about other compounds (`qa_other`), and the domain's literature, which states a share of "
             f"the held-out facts in prose (`literature`), for up to {longest} "
             f"steps at each learning rate tried. Held-out restricted accuracy (chance {chance:.2f}):"]
    for model in s.tamper:
        parts.append(f"{model} {best(model)};")
    return " ".join(parts).rstrip(";") + "."


def _worldless_section(s: Summary) -> Section:
    names = ", ".join(f"`{r}`" for r in s.worldless)
    first = next(iter(s.worldless.values()))
    sec = Section("Recipes without a world", [
        f"{names}: text written by a teacher LLM or read from files, not rendered from this run's world. It was "
        f"curated, tokenized, trained, evaluated and attacked like every recipe. Measured for it: "
        + "; ".join(first.measured) + ".",
        "Not measurable for it, so no verdict above involves it: "
        + "; ".join(f"**{k}**: {why}" for k, why in first.not_measurable.items()) + "."])
    rows = []
    for r, w in s.worldless.items():
        curated = "–" if w.curated_tokens is None else f"{w.curated_docs:,} docs, {w.curated_tokens:,}"
        removed = ", ".join(f"{k} {v}" for k, v in w.removed.items() if v) or "nothing"
        diversity = "–" if w.distinct_2 is None else f"{w.distinct_2:.3f} / {w.distinct_3:.3f}"
        req = w.requests
        requests = "–" if not req else f"{req.get('sent_this_run', 0):,} sent, {req.get('cache_hits', 0):,} cached"
        bench = s.results.get(r, {}).get("bench")
        tamper = s.tamper.get(r) or []
        attacked = max(tamper, key=lambda p: p.steps) if tamper else None
        rows.append([r, w.origin, f"{w.docs:,} docs, {w.tokens:,} of {w.budget:,}", curated, removed,
                     str(w.leaked_items), diversity, requests, "–" if w.val_loss is None else f"{w.val_loss:.3f}",
                     "–" if bench is None else f"{bench.acc:.3f} (chance {bench.chance:.2f})",
                     "–" if attacked is None else f"{attacked.acc:.3f} after {attacked.steps} steps"])
    sec.tables.append((["recipe", "origin", "collected (word units of budget)", "after curation", "curation removed",
                        "eval items found", "distinct-2 / -3", "teacher requests", "held-out loss", "bench (floor)",
                        "restricted, attacked"], rows))
    return sec


def _controls_section(s: Summary) -> Section:
    sec = Section("Does the instrument work?", [
        "Controls, the way experimentation platforms validate themselves with A/A tests. A *null* control "
        "computes every claim's statistic between replicates of one recipe (models that differ only in their "
        "seed), with the between-model variance of the other recipes: each must come out inconclusive, or "
        "the instrument is seeing differences that are not there. "
        "The *leaky* control contaminates the textbook with the benchmark items themselves: the instrument "
        "must detect the bench - twin drop that contamination makes. The *diverse* control asks whether "
        "rendering every fact in many phrasings closes the twin gap (no answer expected)."])
    for name, c in s.controls.all().items():
        state = ("passed" if c.passed else "FAILED") if c.passed is not None else "an experiment"
        sec.paragraphs.append(f"**{name}** ({', '.join(c.recipes)}; expected: {c.expected or 'no expectation'}): "
                              f"{state}. {c.detail}.")
    rows = [[name, cmp.label, _signed(cmp.effect, cmp.ci_low, cmp.ci_high), str(cmp.n), cmp.verdict,
             c.expected or "–"] for name, c in s.controls.all().items() for cmp in c.comparisons]
    sec.tables.append((["control", "comparison", "effect [95% CI]", "n", "verdict", "expected"], rows))
    return sec


def _data_section(s: Summary, figures: dict[str, str]) -> Section:
    sec = Section("Data")
    gen = s.data.get("generate", {})
    recipes = gen.get("recipes", {})
    if recipes:
        sec.paragraphs.append(f"Every recipe was generated to {gen.get('token_budget', 0):,} "
                              f"{gen.get('token_unit', 'tokens')}.")
        tok = s.data.get("tokenize", {})
        bpe = tok.get("recipes", tok) if isinstance(tok, dict) else {}
        rows = []
        for r, st in recipes.items():
            bpe_tokens = bpe.get(r, {}).get("tokens") if isinstance(bpe.get(r), dict) else None
            rows.append([r, f"{st['docs']:,}", f"{st['tokens']:,}", f"{bpe_tokens:,}" if bpe_tokens else "–",
                         f"{st['distinct_2']:.3f}", f"{st['distinct_3']:.3f}", f"{st['longtail_covered']:,}",
                         f"{st['domains'].get('restricted', 0):,}"])
        sec.tables.append((["recipe", "docs", "word units", "BPE tokens", "distinct-2", "distinct-3",
                            "long-tail entities", "restricted docs"], rows))
    cur = s.data.get("curate")
    if cur:
        safety = cur.get("safety")
        if safety:
            sec.paragraphs.append(
                f"Safety filter (keywords, then a classifier; cross-fitted): recall "
                f"{safety.get('recall', float('nan')):.3f} on restricted-domain documents, false-positive rate "
                f"{safety.get('fpr', float('nan')):.3f} on the rest.")
        removed = cur.get("removed") or cur.get("recipes")
        if isinstance(removed, dict):
            rows = []
            for r, st in removed.items():
                if isinstance(st, dict):
                    rows.append([r, ", ".join(f"{k}: {v}" for k, v in st.items() if not isinstance(v, dict | list))])
            if rows:
                sec.tables.append((["recipe", "what curation removed"], rows))
    else:
        pf = gen.get("placeholder_filter")
        if pf:
            sec.paragraphs.append(f"filtered_web used the placeholder keyword filter: recall {pf['recall']:.3f}, "
                                  f"false-positive rate {pf['fpr']:.3f}.")
    if "coverage" in figures:
        sec.figures.append("coverage")
    return sec


def headline(s: Summary) -> str:
    return f"cleanroom report card — run `{s.name}` (preset {s.preset}, seed {s.seed})"


def to_markdown(s: Summary, figures: dict[str, str]) -> str:
    return markdown(headline(s), build_sections(s, figures), figures)


def markdown(title: str, sections: list[Section], figures: dict[str, str] | None = None,
             captions: dict[str, str] | None = None) -> str:
    """A page of sections as Markdown (`figures`: name -> path relative to the page)."""
    captions = FIGURE_TEXT if captions is None else captions
    out = [f"# {title}", ""]
    for sec in sections:
        out += [f"{'#' * sec.level} {sec.title}", ""]
        for p in sec.paragraphs:
            out += [p, ""]
        if sec.bullets:
            out += [f"- {b}" for b in sec.bullets] + [""]
        for header, rows in sec.tables:
            out.append("| " + " | ".join(header) + " |")
            out.append("|" + "|".join(" --- " for _ in header) + "|")
            out += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
            out.append("")
        for f in sec.figures:
            cap = captions.get(f, f)
            out += [f"![{plain_text(cap)}]({figures[f]})", "", f"*{cap}*", ""]
    return "\n".join(out)


_CODE = r"`([^`]+)`"
_BOLD = r"\*\*(.+?)\*\*"
_ITALIC = r"(?<![\w*])\*(?![\s*])(.+?)(?<![\s*])\*(?![\w*])"


def inline_html(text: str) -> str:
    """Text with the inline Markdown marks we use (**bold**, *italic*, `code`) as HTML, after escaping.
    Code spans are taken first, so a `*` inside one stays literal."""
    out = []
    for k, part in enumerate(re.split(_CODE, text)):
        t = html.escape(part)
        if k % 2:
            out.append(f"<code>{t}</code>")
        else:
            out.append(re.sub(_ITALIC, r"<em>\1</em>", re.sub(_BOLD, r"<strong>\1</strong>", t)))
    return "".join(out)


def plain_text(text: str) -> str:
    """Text without its inline marks (for `<title>` and `alt`, which show no HTML)."""
    for pattern in (_CODE, _BOLD, _ITALIC):
        text = re.sub(pattern, r"\1", text)
    return text



CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:980px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}h1{font-size:1.5em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.8em 0;font-size:.9em}
td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}
th{background:#f4f4f4}figure{margin:1em 0}figure img{max-width:100%}figcaption{font-size:.85em;color:#555}
.verdict{padding:.6em .8em;border-left:5px solid #999;background:#fafafa;margin:.6em 0}
.sup{border-color:#2ca02c}.nsup{border-color:#d62728}.inc{border-color:#bbb}
code{background:#f2f2f2;padding:0 .2em}
"""


def to_html(s: Summary, figures: dict[str, str], store: RunStore) -> str:
    verdicts = {f"**{k} — {c.claim}": c.verdict for k, c in s.claims.items()}
    return html_page(headline(s), build_sections(s, figures), verdicts, figures, store.root)


def html_page(title: str, sections: list[Section], verdicts: dict[str, str] | None = None,
              figures: dict[str, str] | None = None, root: Path | None = None,
              captions: dict[str, str] | None = None) -> str:
    """A page of sections as one self-contained HTML file: a paragraph that starts with a key of `verdicts`
    is boxed in that verdict's colour; figures (paths relative to `root`) are read and embedded."""
    verdicts = verdicts or {}
    captions = FIGURE_TEXT if captions is None else captions
    parts = ["<!doctype html><html lang='en'><head><meta charset='utf-8'>",
             f"<title>{html.escape(plain_text(title))}</title><style>{CSS}</style></head><body>",
             f"<h1>{inline_html(title)}</h1>"]
    for sec in sections:
        parts.append(f"<h{sec.level}>{inline_html(sec.title)}</h{sec.level}>")
        for p in sec.paragraphs:
            cls = next((VERDICT_CSS[v] for prefix, v in verdicts.items() if p.startswith(prefix)), None)
            parts.append(f"<div class='verdict {cls}'>{inline_html(p)}</div>" if cls else f"<p>{inline_html(p)}</p>")
        if sec.bullets:
            parts.append("<ul>" + "".join(f"<li>{inline_html(b)}</li>" for b in sec.bullets) + "</ul>")
        for header, rows in sec.tables:
            head = "".join(f"<th>{inline_html(h)}</th>" for h in header)
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>")
            parts += ["<tr>" + "".join(f"<td>{inline_html(c)}</td>" for c in row) + "</tr>" for row in rows]
            parts.append("</tbody></table>")
        for f in sec.figures:
            data = base64.b64encode((Path(root or ".") / figures[f]).read_bytes()).decode()
            cap = captions.get(f, f)
            parts.append(f"<figure><img alt='{html.escape(plain_text(cap), quote=True)}' "
                         f"src='data:image/png;base64,{data}'><figcaption>{inline_html(cap)}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts)
