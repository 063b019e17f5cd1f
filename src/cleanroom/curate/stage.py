"""The `curate` stage: run the configured steps on every recipe, with lineage and a summary.

Sources and recipes (all cut at `recipes.token_budget` word units, like `generate` does):
- `web`: `sources/web_stream` through the configured steps (exact dedup, near dedup,
  decontamination, quality), refilled from the stream up to the budget. No safety filter: it is the
  broad-data baseline.
- `filtered_web`: the same pass plus the two-stage safety filter, refilled up to the budget. Web and
  filtered web therefore differ only by the safety filter.
- `textbook`: `corpora/textbook` through the configured steps (there is no stream to refill from).
- `mix`: `recipes.mix_textbook_share` of the budget from curated textbook, the rest from curated
  filtered web, shuffled as `generate` does.
- `diverse` (a control): `corpora/diverse` through the configured steps, like textbook.
- `leaky` (a control): curated textbook plus the benchmark items with their answers, which no step
  sees (the contamination is the point of this control); a recipe's replicates share its corpus.
- `[corpora.NAME]` (no world behind them): `corpora/NAME` through the configured steps, like textbook,
  filled to the corpus's own budget; no safety filter (it learns from the world's labels).

Outputs: `curated/<recipe>/part-*.parquet` (same columns as `corpora/`), `curation/<recipe>/removed.parquet`
(lineage: id, recipe, step, reason, score, matched, detail), `curation/decontamination.parquet`
(every confirmed document/item leak) and `curation/summary.json` (per-recipe per-step statistics,
safety recall and false-positive rate, decontamination by task).

`curate_parquet` runs the same steps on any Parquet corpus with a `text` column (the standalone
`cleanroom curate --input ... --output ... --eval-items ...`).
"""

from __future__ import annotations

import json
import math
import shutil
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from cleanroom.config import ExperimentConfig, RuntimeConfig
from cleanroom.contract import StageResult
from cleanroom.corpus import (
    STREAM,
    assemble_leaky,
    assemble_mix,
    corpus_rows,
    corpus_stats,
    leak_documents,
    lineage_path,
    take_budget,
    write_shards,
)
from cleanroom.curate.base import Document, Removal, Step
from cleanroom.curate.decontam import EvalItem, Leak, items_from_rows
from cleanroom.curate.executor import Executor, LocalExecutor, RunResult, build_steps
from cleanroom.errors import InputError
from cleanroom.store import RunStore, StoreError, write_json, write_parquet
from cleanroom.text_stats import TOKEN_UNIT
from cleanroom.ui import progress, say
from cleanroom.world_store import load_all_items, load_items, load_world

LINEAGE_SCHEMA = pa.schema([
    ("id", pa.string()), ("recipe", pa.string()), ("step", pa.string()), ("reason", pa.string()),
    ("score", pa.float64()), ("matched", pa.string()), ("detail", pa.string()),
])
LEAK_SCHEMA = pa.schema([
    ("source", pa.string()), ("task", pa.string()), ("item_id", pa.string()), ("doc_id", pa.string()),
    ("ratio", pa.float64()),
])


# ---------------------------------------------------------------- reading and writing


def read_documents(table: pa.Table, where: str) -> list[Document]:
    if "text" not in table.column_names:
        raise StoreError(f"{where} has no `text` column (columns: {', '.join(table.column_names)})")
    return [Document.from_row(row, i) for i, row in enumerate(table.to_pylist())]


def eval_items(store: RunStore) -> list[EvalItem]:
    """Every evaluation item of the run (`world/items/*.parquet`)."""
    return items_from_rows(load_all_items(store))


def lineage_table(removed: list[Removal], recipe: str) -> pa.Table:
    return pa.Table.from_pylist(
        [{"id": r.doc_id, "recipe": recipe, "step": r.step, "reason": r.reason,
          "score": None if math.isnan(r.score) else r.score, "matched": r.matched, "detail": r.detail}
         for r in removed], schema=LINEAGE_SCHEMA)


def leak_table(leaks: list[tuple[str, Leak]]) -> pa.Table:
    return pa.Table.from_pylist(
        [{"source": s, "task": lk.task, "item_id": lk.item_id, "doc_id": lk.doc_id, "ratio": lk.ratio}
         for s, lk in leaks], schema=LEAK_SCHEMA)


def write_docs(dir_path: Path, docs: list[Document], recipe: str | None, shard_docs: int) -> None:
    """Kept documents with their original columns (`recipe` set to the target recipe) as shards."""
    rows = [{**d.row, "recipe": recipe} if recipe is not None and "recipe" in d.row else d.row for d in docs]
    write_shards(dir_path, rows, shard_docs, None if rows else pa.schema([("id", pa.string()), ("text", pa.string())]))


def recipe_summary(source: str, result: RunResult, final: list[Document]) -> dict[str, Any]:
    return {
        "source": source,
        "docs_in": result.steps[0]["docs_in"] if result.steps else len(result.kept),
        "tokens_in": result.steps[0]["tokens_in"] if result.steps else sum(d.tokens for d in result.kept),
        "docs_kept": len(result.kept),
        "docs_out": len(final),
        "tokens_out": sum(d.tokens for d in final),
        "steps": result.steps,
    }


def decontamination_summary(items: list[EvalItem], leaks: list[tuple[str, Leak]],
                            sources_of: dict[str, list[str]]) -> dict[str, Any]:
    """Per task and recipe: items that leaked into the recipe's sources and documents removed for them."""
    totals: dict[str, int] = {}
    for it in items:
        totals[it.task] = totals.get(it.task, 0) + 1
    out: dict[str, Any] = {}
    for task, n in sorted(totals.items()):
        per_recipe = {}
        for recipe, sources in sources_of.items():
            hits = [lk for s, lk in leaks if s in sources and lk.task == task]
            per_recipe[recipe] = {"items_leaked": len({lk.item_id for lk in hits}),
                                  "docs_removed": len({lk.doc_id for lk in hits})}
        out[task] = {"items": n, "recipes": per_recipe}
    return out


# ---------------------------------------------------------------- the stage


def curate_source(cfg: ExperimentConfig, docs: list[Document], items: list[EvalItem], label: str,
                  safety: bool) -> tuple[RunResult, RunResult | None]:
    """The configured steps over `docs`; with `safety`, also the safety filter on what they keep.

    Returns (common result, safety result or None), so web and filtered web share one pass.
    """
    steps = build_steps(cfg.curate, items, seed=cfg.seed, safety=False)
    with progress(f"curate {label}", total=len(docs)) as task:
        common = make_executor(steps, cfg.runtime).run(docs)
        task.set(completed=len(docs), info=f"kept {len(common.kept):,}/{len(docs):,}")
    if not safety:
        return common, None
    with progress(f"safety filter {label}", total=len(common.kept)) as task:
        guarded = make_executor(build_steps(cfg.curate, items, seed=cfg.seed, safety=True, names=["safety"]),
                                cfg.runtime)
        safe = guarded.run(common.kept)
        task.set(completed=len(common.kept), info=f"recall {safe.safety.get('recall', float('nan')):.2f} · "
                                                  f"fpr {safe.safety.get('fpr', float('nan')):.3f}")
    return common, safe


def _chain(common: RunResult, safe: RunResult) -> RunResult:
    return RunResult(kept=safe.kept, removed=common.removed + safe.removed, steps=common.steps + safe.steps,
                     leaks=common.leaks, safety=safe.safety)


def make_executor(steps: list[Step], runtime: RuntimeConfig | None = None) -> Executor:
    """The executor `runtime.executor` names (local by default); both give the same result."""
    if runtime is not None and runtime.executor == "ray":
        from cleanroom.curate.ray_executor import RayExecutor

        return RayExecutor(steps, address=runtime.ray_address)
    return LocalExecutor(steps)


def executor_session(cfg: ExperimentConfig) -> AbstractContextManager[Any]:
    """Ray stays up for the whole stage when `runtime.executor = "ray"` (one start-up, not one per recipe)."""
    if cfg.runtime.executor == "ray":
        from cleanroom.ray_cluster import ray_session

        return ray_session(cfg.runtime.ray_address)
    return nullcontext()


def run_curate(cfg: ExperimentConfig, store: RunStore) -> StageResult:
    with executor_session(cfg):
        return _run_curate(cfg, store)


def _run_curate(cfg: ExperimentConfig, store: RunStore) -> StageResult:
    names = cfg.recipe_names()
    if not cfg.curate.enabled:
        say("  curation disabled (curate.enabled = false): recipes are used as generated")
        for recipe in names:  # a stale curated/ from an earlier run must not shadow corpora/
            if store.path(f"curated/{recipe}").is_dir():
                shutil.rmtree(store.path(f"curated/{recipe}"))
        store.write_json("curation/summary.json", {"enabled": False})
        return StageResult(outputs=["curation/summary.json"], stats={"enabled": False})
    budget = cfg.recipes.token_budget
    items = eval_items(store)
    has_stream = store.path(STREAM).is_dir()
    final: dict[str, list[Document]] = {}
    results: dict[str, RunResult] = {}
    sources: dict[str, str] = {}
    leaks: list[tuple[str, Leak]] = []

    if {"web", "filtered_web", "mix"} & set(names):
        src = STREAM if has_stream else "corpora/web"
        docs = read_documents(store.read_parquet(src), str(store.path(src)))
        need_safety = "filtered_web" in names or "mix" in names
        common, safe = curate_source(cfg, docs, items, Path(src).name, safety=need_safety)
        leaks += [("web_stream", lk) for lk in common.leaks]
        results["web"], sources["web"] = common, src
        if safe is not None:
            results["filtered_web"], sources["filtered_web"] = _chain(common, safe), src
    for recipe in ("textbook", "diverse"):
        if recipe in names or (recipe == "textbook" and {"mix", "leaky"} & set(names)):
            src = f"corpora/{recipe}"
            docs = read_documents(store.read_parquet(src), str(store.path(src)))
            results[recipe], _ = curate_source(cfg, docs, items, recipe, safety=False)
            sources[recipe] = src
            leaks += [(recipe, lk) for lk in results[recipe].leaks]
    for recipe in cfg.corpora:  # recipes without a world: like textbook (no stream to refill from, no labels
        src = f"corpora/{recipe}"  # for the safety classifier), each filled to its own budget
        docs = read_documents(store.read_parquet(src), str(store.path(src)))
        results[recipe], _ = curate_source(cfg, docs, items, recipe, safety=False)
        sources[recipe] = src
        leaks += [(recipe, lk) for lk in results[recipe].leaks]
        final[recipe] = take_budget(results[recipe].kept, cfg.budget(recipe))
    for recipe in ("web", "filtered_web", "textbook", "diverse"):
        if recipe in results:
            final[recipe] = take_budget(results[recipe].kept, budget)
            filled = sum(d.tokens for d in final[recipe]) / budget
            if recipe in ("web", "filtered_web") and filled < 0.98 and recipe in names:
                say(f"[yellow]  {recipe}: the source ran out at {filled:.1%} of the budget after curation "
                    f"(generate a longer sources/web_stream to refill it)[/]")
    if "mix" in names:
        final["mix"] = assemble_mix(final["textbook"], final["filtered_web"], cfg)
        results["mix"] = RunResult(kept=final["mix"], removed=results["textbook"].removed
                                   + results["filtered_web"].removed, steps=[], leaks=[])
        sources["mix"] = "curated/textbook + curated/filtered_web"
    if "leaky" in names:
        leak = [Document.from_row(r) for r in corpus_rows(
            leak_documents(load_items(store, "bench"), cfg.recipes.leak_copies), "leaky")]
        final["leaky"] = assemble_leaky(final["textbook"], leak, cfg)
        results["leaky"] = RunResult(kept=final["leaky"], removed=results["textbook"].removed, steps=[], leaks=[])
        sources["leaky"] = "curated/textbook + benchmark items"

    outputs, summary = [], {"token_budget": budget, "token_unit": TOKEN_UNIT, "recipes": {}}
    for recipe in names:
        write_docs(store.path(f"curated/{recipe}"), final[recipe], recipe, cfg.recipes.shard_docs)
        lineage = results[recipe].removed
        store.write_parquet(lineage_path(recipe), lineage_table(lineage, recipe))
        outputs += [f"curated/{recipe}", f"curation/{recipe}"]
        summary["recipes"][recipe] = recipe_summary(sources[recipe], results[recipe], final[recipe])
        summary["recipes"][recipe].update(_world_stats(store, final[recipe]))
    if "filtered_web" in results:
        summary["safety"] = results["filtered_web"].safety
    sources_of = {r: (["textbook", "web_stream"] if r == "mix" else ["textbook"] if r in ("textbook", "leaky")
                      else [r] if r in cfg.corpora
                      else [r] if r == "diverse" else ["web_stream"]) for r in names}
    summary["decontamination"] = decontamination_summary(items, leaks, sources_of)
    store.write_parquet("curation/decontamination.parquet", leak_table(leaks))
    # step timings go to the manifest only: summary.json stays byte-identical across reruns
    seconds = {r: {st["step"]: st.get("seconds") for st in rs["steps"]} for r, rs in summary["recipes"].items()}
    for rs in summary["recipes"].values():
        for st in rs["steps"]:
            st.pop("seconds", None)
    store.write_json("curation/summary.json", summary)
    outputs += ["curation/decontamination.parquet", "curation/summary.json"]
    _print_summary(summary)
    removed: dict[str, dict[str, int]] = {}
    for r, rs in summary["recipes"].items():
        removed[r] = {"docs_in": rs["docs_in"], **{st["step"]: st["removed"] for st in rs["steps"]},
                      "docs_out": rs["docs_out"], "tokens_out": rs["tokens_out"]}
    stats = {
        "token_budget": budget,
        "removed": removed,
        "corpora": {r: rs["corpus"] for r, rs in summary["recipes"].items() if "corpus" in rs},
        "safety": summary.get("safety", {}),
        "decontamination": {t: {r: v["items_leaked"] for r, v in d["recipes"].items()}
                            for t, d in summary["decontamination"].items()},
        "step_seconds": seconds,
    }
    return StageResult(outputs=sorted(set(outputs)), stats=stats)


def _world_stats(store: RunStore, docs: list[Document]) -> dict[str, Any]:
    """The same corpus statistics `generate` reports (domains, distinct n-grams, long-tail coverage),
    for the curated recipe, when the corpus carries the world's labels."""
    if not docs or not all("domain" in d.meta and "facts" in d.meta for d in docs):
        return {}
    rows = [{"text": d.text, "meta": json.dumps(d.meta), "tokens": d.tokens} for d in docs]
    stats = corpus_stats(rows, load_world(store))
    return {"domains": stats["domains"], "corpus": stats}


def _print_summary(summary: dict[str, Any]) -> None:
    for recipe, s in summary["recipes"].items():
        removed = {}
        for st in s["steps"]:
            if st["removed"]:
                removed[st["step"]] = st["removed"]
        detail = ", ".join(f"{k} {v:,}" for k, v in removed.items()) or "nothing removed"
        say(f"  {recipe:<13} {s['docs_out']:>6,} docs {s['tokens_out']:>9,} units  (removed: {detail})")
    sf = summary.get("safety")
    if sf:
        say(f"  safety filter (cross-fitted): recall {sf['recall']:.3f} on {sf['n_restricted']:,} restricted docs, "
            f"false-positive rate {sf['fpr']:.4f} on {sf['n_other']:,} others")


# ---------------------------------------------------------------- standalone


def _read_any(path: Path, what: str) -> pa.Table:
    if path.is_dir():
        files = sorted(path.glob("*.parquet"))
        if not files:
            raise InputError(f"{what} {path}: no Parquet files in this directory")
    elif path.is_file():
        files = [path]
    else:
        raise InputError(f"{what} {path} does not exist")
    try:
        return pa.concat_tables([pq.read_table(f) for f in files], promote_options="default")
    except (pa.ArrowInvalid, OSError) as e:
        raise InputError(f"{what} {path}: not readable as Parquet ({e})") from None


def read_eval_items(path: Path) -> list[EvalItem]:
    """Evaluation items from a Parquet file/dir with `prompt` (and optional `target`, `id`, `task`) or `text`."""
    table = _read_any(path, "--eval-items")
    rows = table.to_pylist()
    cols = set(table.column_names)
    if "prompt" not in cols and "text" not in cols:
        raise InputError(f"--eval-items {path} needs a `prompt` or `text` column (has: {', '.join(sorted(cols))})")
    out = []
    for i, r in enumerate(rows):
        r = {**r, "id": r.get("id", f"item-{i:06d}"), "task": r.get("task", Path(path).stem)}
        if "prompt" not in cols:
            r["prompt"], r["target"] = r["text"], ""
        out.append(r)
    return items_from_rows(out)


def curate_parquet(cfg: ExperimentConfig, input_path: Path, output: Path, items_path: Path | None) -> dict[str, Any]:
    """Run the configured steps on any Parquet corpus with a `text` column.

    Writes the kept rows (all columns) to `output` (a `.parquet` file, or a directory of shards),
    the lineage to `<output>.removed.parquet` / `output/removed.parquet`, and a summary JSON beside.
    Includes the safety filter when `curate.steps` lists `safety` (it needs `meta.domain` labels).
    """
    with executor_session(cfg):
        return _curate_parquet(cfg, input_path, output, items_path)


def _curate_parquet(cfg: ExperimentConfig, input_path: Path, output: Path, items_path: Path | None) -> dict[str, Any]:
    docs = read_documents(_read_any(input_path, "--input"), str(input_path))
    ids = [d.id for d in docs]
    if len(set(ids)) != len(ids):
        raise InputError(f"--input {input_path}: the `id` column has duplicate values")
    items = read_eval_items(items_path) if items_path is not None else []
    names = list(cfg.curate.steps)
    if "decontaminate" in names and not items:
        say("[yellow]no --eval-items given: decontamination is skipped[/]")
        names.remove("decontaminate")
    steps = build_steps(cfg.curate, items, seed=cfg.seed, safety="safety" in names, names=names)
    with progress("curate", total=len(docs)) as task:
        result = make_executor(steps, cfg.runtime).run(docs)
        task.set(completed=len(docs), info=f"kept {len(result.kept):,}/{len(docs):,}")
    if output.suffix == ".parquet":
        rows = [d.row for d in result.kept]
        table = pa.Table.from_pylist(rows) if rows else _read_any(input_path, "--input").slice(0, 0)
        write_parquet(output, table)
        base = output.with_suffix("")
        removed_path, summary_path = Path(f"{base}.removed.parquet"), Path(f"{base}.summary.json")
        leaks_path = Path(f"{base}.decontamination.parquet")
    else:
        write_docs(output, result.kept, None, cfg.recipes.shard_docs)
        removed_path, summary_path = output / "removed.parquet", output / "summary.json"
        leaks_path = output / "decontamination.parquet"
    write_parquet(removed_path, lineage_table(result.removed, input_path.stem))
    write_parquet(leaks_path, leak_table([(input_path.stem, lk) for lk in result.leaks]))
    summary = {
        "input": str(input_path), "output": str(output),
        "recipes": {input_path.stem: recipe_summary(str(input_path), result, result.kept)},
        "decontamination": decontamination_summary(items, [(input_path.stem, lk) for lk in result.leaks],
                                                   {input_path.stem: [input_path.stem]}),
    }
    if result.safety:
        summary["safety"] = result.safety
    write_json(summary_path, summary)
    _print_summary(summary)
    say(f"[bold]kept[/] {len(result.kept):,}/{len(docs):,} documents -> {output}; lineage -> {removed_path}")
    return summary


def summary_json(store: RunStore) -> dict[str, Any]:
    """The stage's `curation/summary.json` (for the report card)."""
    return json.loads(store.path("curation/summary.json").read_text())
