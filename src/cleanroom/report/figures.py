"""Every figure of the project's reports (matplotlib, Agg), in one style, written to `figures/*.png`: the
run's report card (`make_figures`) and the audit's (`audit_families`, `audit_reality`).

One style: each model's colour is its recipe's (`COLORS`); in the audit, benchmark items are the textbook
blue and their fresh twins the filtered-web orange; chance is a grey dashed line, "benchmark = reality" a
grey dotted diagonal; every file is saved by `_save` (PNG, 110 dpi, no timestamp).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from cleanroom.config import base_recipe  # noqa: E402
from cleanroom.report.summary import Summary  # noqa: E402
from cleanroom.store import RunStore, write_bytes  # noqa: E402

COLORS = {"web": "#d62728", "textbook": "#1f77b4", "filtered_web": "#ff7f0e", "mix": "#2ca02c",
          "leaky": "#9467bd", "diverse": "#17becf"}
BENCHMARK, TWIN = COLORS["textbook"], COLORS["filtered_web"]  # the audit's originals and their fresh twins


def _color(recipe: str) -> str:
    """A model's colour: its recipe's (replicates and safeguarded arms share their recipe's colour; arms differ
    by line style, `_style`, replicates by `_alpha`); the random-init floor is black."""
    if recipe == "scratch":
        return "#000000"
    return COLORS.get(base_recipe(recipe), "#7f7f7f")


def _style(recipe: str) -> str:
    return {"unlearn": "--", "refusal": ":"}.get(recipe.partition("+")[2], "-")


def _save(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    write_bytes(path, buf.getvalue())


def _err(r) -> list[list[float]]:
    if r.acc is None or r.ci_low is None or r.ci_high is None:
        return [[0.0], [0.0]]
    return [[max(r.acc - r.ci_low, 0)], [max(r.ci_high - r.acc, 0)]]


def _chance_line(ax, chance: float, label: str = "chance") -> None:
    ax.axhline(chance, color="grey", ls="--", lw=0.8, label=label)


def _diagonal(ax, lo: float, label: str) -> None:
    ax.plot([lo, 1], [lo, 1], ls=":", color="grey", lw=1, label=label)


def bench_vs_reality(s: Summary, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    for recipe in s.recipes:
        b, lt = s.results[recipe]["bench"], s.results[recipe]["longtail"]
        ax.errorbar(b.acc, lt.acc, xerr=_err(b), yerr=_err(lt), fmt="o", ms=8, capsize=3, color=_color(recipe),
                    label=recipe)
    lo = min(0.0, *(s.results[r][t].chance for r in s.recipes for t in ("bench", "longtail")))
    _diagonal(ax, lo, "benchmark = long tail")
    _chance_line(ax, s.results[s.recipes[0]]["longtail"].chance, "chance (long tail)")
    ax.set_xlabel("benchmark accuracy")
    ax.set_ylabel("long-tail accuracy")
    ax.set_title("Benchmarks vs reality")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=8, loc="upper left")
    _save(fig, path)


def _curves(s: Summary, curves: dict[str, list[tuple]], chance_task: str):
    """One line per recipe through (x, acc) with its 95% CI band, and the task's chance level."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for recipe, pts in curves.items():
        if pts:
            x, acc, lo, hi = zip(*pts, strict=True)
            ax.plot(x, acc, marker="o", ls=_style(recipe), color=_color(recipe), label=recipe)
            ax.fill_between(x, lo, hi, color=_color(recipe), alpha=0.12)
    _chance_line(ax, s.results[s.recipes[0]][chance_task].chance)
    return fig, ax


def longtail_deciles(s: Summary, path: Path) -> None:
    fig, ax = _curves(s, {r: [(p.decile, p.acc, p.ci_low, p.ci_high) for p in s.longtail_by_decile.get(r, [])]
                          for r in s.recipes}, "longtail")
    ax.set_xticks(range(1, 11))
    ax.set_xlabel("popularity decile (1 = most popular)")
    ax.set_ylabel("long-tail accuracy")
    ax.set_title("Long-tail knowledge by popularity")
    ax.legend(fontsize=8)
    _save(fig, path)


def bench_twin_bars(s: Summary, path: Path) -> None:
    tasks = [t for t in ("bench", "twin", "format_shift") if all(t in s.results[r] for r in s.recipes)]
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(s.recipes)), 4))
    w = 0.8 / len(tasks)
    alpha = {"bench": 1.0, "twin": 0.55, "format_shift": 0.25}
    for i, recipe in enumerate(s.recipes):
        for j, task in enumerate(tasks):
            r = s.results[recipe][task]
            ax.bar(i + (j - (len(tasks) - 1) / 2) * w, r.acc, w, yerr=_err(r), capsize=3, color=_color(recipe),
                   alpha=alpha[task], label=task if i == 0 else None, edgecolor="black", lw=0.5)
    ax.set_xticks(range(len(s.recipes)), s.recipes, fontsize=8)
    ax.set_ylabel("accuracy")
    ax.set_title("Benchmark (solid), fresh twin, format shift (lightest)")
    _chance_line(ax, s.results[s.recipes[0]]["bench"].chance, "chance (bench)")
    ax.legend(fontsize=8)
    _save(fig, path)


def tamper_curves(s: Summary, path: Path) -> None:
    fig, ax = _curves(s, {r: [(p.steps, p.acc, p.ci_low, p.ci_high) for p in pts] for r, pts in s.tamper.items()},
                      "restricted")
    ax.set_xlabel("attack fine-tuning steps")
    ax.set_ylabel("held-out restricted accuracy (strongest attack)")
    ax.set_title("Recovery under attack")
    ax.legend(fontsize=8)
    _save(fig, path)


def loss_curves(store: RunStore, s: Summary, path: Path) -> bool:
    logs = {r: store.path(f"logs/train/{r}.jsonl") for r in s.recipes}
    logs = {r: p for r, p in logs.items() if p.exists()}
    if not logs:
        return False
    fig, ax = plt.subplots(figsize=(6, 4))
    for recipe, log in logs.items():
        rows = [json.loads(ln) for ln in log.read_text().splitlines() if ln.strip()]
        tr = [(r["step"], r["loss"]) for r in rows if r.get("loss") is not None]
        va = [(r["step"], r["val_loss"]) for r in rows if r.get("val_loss") is not None]
        if tr:
            ax.plot(*zip(*tr, strict=True), color=_color(recipe), lw=1, alpha=0.6, label=f"{recipe} train")
        if va:
            ax.plot(*zip(*va, strict=True), color=_color(recipe), lw=2, marker="s", ms=4, label=f"{recipe} val")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title("Training and validation loss")
    ax.legend(fontsize=7, ncol=2)
    _save(fig, path)
    return True


def coverage(s: Summary, path: Path) -> bool:
    gen = s.data.get("generate", {}).get("recipes", {})
    if not gen:
        return False
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for recipe in s.recipes:
        cov = gen.get(recipe, {}).get("longtail_covered_by_decile")
        if cov:
            ax.plot([int(k) for k in cov], list(cov.values()), marker="o", color=_color(recipe), label=recipe)
    ax.set_xticks(range(1, 11))
    ax.set_xlabel("popularity decile (1 = most popular)")
    ax.set_ylabel("share of entities mentioned")
    ax.set_title("Long-tail coverage of each corpus")
    ax.legend(fontsize=8)
    _save(fig, path)
    return True


def make_figures(store: RunStore, s: Summary) -> dict[str, str]:
    """Write every figure; return {name: path relative to the run directory}."""
    out = {}
    for name, fn in [("bench_vs_reality", bench_vs_reality), ("longtail_deciles", longtail_deciles),
                     ("bench_twin", bench_twin_bars), ("tamper", tamper_curves)]:
        fn(s, store.path(f"figures/{name}.png"))
        out[name] = f"figures/{name}.png"
    if loss_curves(store, s, store.path("figures/loss.png")):
        out["loss"] = "figures/loss.png"
    if coverage(s, store.path("figures/coverage.png")):
        out["coverage"] = "figures/coverage.png"
    return out


# ------------------------------------------------------------------------------------------ the audit


Interval = tuple[float, float, float]  # value, 95% CI low, high


def audit_families(bars: list[tuple[str, Interval, bool]], chance: float | None, title: str, path: Path) -> None:
    """Accuracy per twin family of one task formulation: (family, interval, is the benchmark itself) per
    bar, benchmark blue and twins orange, with 95% CIs and chance."""
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(bars) + 1.5), 3.2))
    xs = range(len(bars))
    ax.bar(xs, [v for _, (v, _, _), _ in bars], color=[BENCHMARK if bench else TWIN for *_, bench in bars],
           yerr=[[v - lo for _, (v, lo, _), _ in bars], [hi - v for _, (v, _, hi), _ in bars]], capsize=3,
           edgecolor="black", lw=0.5)
    if chance:
        _chance_line(ax, chance, f"chance {chance:.2f}")
        ax.legend(loc="upper right", fontsize=8)
    ax.set_xticks(list(xs), [name.replace("_", "\n") for name, *_ in bars], fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy (95% CI)")
    ax.set_title(f"{title}: benchmark (blue) vs fresh twins (orange)", fontsize=9)
    _save(fig, path)


def audit_reality(models: list[tuple[str, Interval, dict[str, Interval]]], path: Path) -> None:
    """Benchmark accuracy (x) against long-tail accuracy per popularity bucket (y), one colour per model:
    (model, benchmark interval, {"head" | "torso" | "tail": long-tail interval}) per model."""
    fig, ax = plt.subplots(figsize=(5.6, 4.4))
    markers = {"head": "o", "torso": "s", "tail": "^"}
    for k, (model, (x, xlo, xhi), buckets) in enumerate(models):
        color = f"C{k}"
        ys = []
        for b in markers:
            if b not in buckets:
                continue
            y, lo, hi = buckets[b]
            ys.append(y)
            ax.errorbar(x, y, xerr=[[x - xlo], [xhi - x]], yerr=[[y - lo], [hi - y]], fmt=markers[b], color=color,
                        capsize=3, ms=7, label=f"{model}: {b}" if k == 0 or b == "head" else None)
        ax.plot([x] * len(ys), ys, color=color, lw=1, alpha=0.5)
    _diagonal(ax, 0.0, "benchmark = real-world knowledge")
    _chance_line(ax, 0.25, "chance (4 options)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("MMLU accuracy (95% CI)")
    ax.set_ylabel("long-tail accuracy, 4 options (head o, torso s, tail ^)")
    ax.set_title("Benchmarks vs reality")
    ax.legend(fontsize=7, loc="upper left")
    _save(fig, path)
