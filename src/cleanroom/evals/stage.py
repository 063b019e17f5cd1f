"""The `eval` stage: score one recipe's trained model on every task and write per-item results.

    evals/<recipe>/<task>.parquet   one row per item (see `cleanroom.evals.tasks.ROW_SCHEMA`)

`StageResult.stats[task] = {acc, acc_norm, ci_low, ci_high, n, chance}` (+ `deciles` for longtail),
plus `items_per_s`. The model is the exported `models/<recipe>/`, loaded into our native Transformer
(the fast packed scorer); any Hugging Face causal LM can be scored the same way with `HFLM`.
"""

from __future__ import annotations

import time

from cleanroom.config import ExperimentConfig
from cleanroom.contract import StageResult
from cleanroom.errors import StoreError
from cleanroom.evals.tasks import evaluate_items, rows_table, task_metrics
from cleanroom.lm.causal import CausalLM
from cleanroom.lm.native import NativeLM
from cleanroom.runtime import pick_device, set_threads
from cleanroom.store import RunStore
from cleanroom.ui import progress, say
from cleanroom.world.schema import TASKS
from cleanroom.world_store import load_items


def load_model(cfg: ExperimentConfig, store: RunStore, recipe: str) -> NativeLM:
    """The recipe's exported model as a batched native scorer."""
    model_dir = store.path(f"models/{recipe}")
    if not (model_dir / "config.json").exists():
        raise StoreError(f"no trained model for recipe `{recipe}` at {model_dir} (run `cleanroom train` first)")
    return NativeLM.load(model_dir, device=str(pick_device(cfg.runtime)), dtype=cfg.eval.dtype,
                              batch_size=cfg.eval.batch_size)


def score_tasks(cfg: ExperimentConfig, store: RunStore, model: CausalLM, recipe: str,
                tasks: tuple[str, ...] = TASKS) -> dict[str, tuple[list[dict], dict]]:
    """{task: (rows, metrics)} for one model."""
    items = {t: load_items(store, t) for t in tasks}
    out = {}
    with progress(f"eval {recipe}", total=sum(len(v) for v in items.values())) as bar:
        for task in tasks:
            rows = evaluate_items(model, items[task], max_gen_tokens=cfg.eval.max_gen_tokens)
            metrics = task_metrics(rows, items[task], n_boot=cfg.eval.bootstrap, seed=cfg.seed)
            out[task] = (rows, metrics)
            bar.advance(len(rows), info=f"{task} acc {metrics['acc']:.2f}")
    return out


def run_eval(cfg: ExperimentConfig, store: RunStore, recipe: str) -> StageResult:
    """Pipeline entry point for the per-recipe `eval` stage."""
    set_threads(cfg.runtime)
    model = load_model(cfg, store, recipe)
    t0 = time.perf_counter()
    results = score_tasks(cfg, store, model, recipe)
    seconds = time.perf_counter() - t0
    outputs, stats = [], {}
    for task, (rows, metrics) in results.items():
        rel = f"evals/{recipe}/{task}.parquet"
        store.write_parquet(rel, rows_table(rows))
        outputs.append(rel)
        stats[task] = metrics
    n = sum(m["n"] for m in stats.values())
    stats["items_per_s"] = round(n / seconds, 1) if seconds > 0 else None
    say("  " + recipe + ": " + " · ".join(
        f"{t} {m['acc']:.2f} [{m['ci_low']:.2f}, {m['ci_high']:.2f}] (chance {m['chance']:.2f})"
        for t, m in stats.items() if isinstance(m, dict)))
    return StageResult(outputs=outputs, stats=stats)


def score_hf_model(cfg: ExperimentConfig, store: RunStore, model_path: str, name: str,
                   tasks: tuple[str, ...] = TASKS) -> dict[str, dict]:
    """Score any local Hugging Face causal LM on the run's items, exactly as the eval stage scores
    our models; writes `evals/<name>/<task>.parquet` and returns the per-task metrics."""
    from cleanroom.lm.hf import HFLM

    model = HFLM.load(model_path, device=str(pick_device(cfg.runtime)), dtype=cfg.eval.dtype,
                           batch_size=cfg.eval.batch_size)
    results = score_tasks(cfg, store, model, name, tasks)
    for task, (rows, _) in results.items():
        store.write_parquet(f"evals/{name}/{task}.parquet", rows_table(rows))
    return {task: metrics for task, (_, metrics) in results.items()}


def main(argv: list[str] | None = None) -> None:
    """`python -m cleanroom.evals.stage --run DIR --hf-model PATH [--name N] [--task T ...]`."""
    import argparse
    import json
    import sys
    from pathlib import Path

    from cleanroom.config import saved_config
    from cleanroom.errors import CleanroomError

    ap = argparse.ArgumentParser(description="Score a local Hugging Face causal LM on a run's items.")
    ap.add_argument("--run", type=Path, required=True, help="a run directory with world/items")
    ap.add_argument("--hf-model", required=True, help="a local transformers model directory")
    ap.add_argument("--name", default=None, help="results go to evals/<name>/ (default: hf-<dir name>)")
    ap.add_argument("--task", action="append", choices=TASKS, help="repeatable; default: all tasks")
    args = ap.parse_args(argv)
    try:
        cfg = saved_config(args.run / "config.toml")
        store = RunStore(args.run)
        name = args.name or f"hf-{Path(args.hf_model).name}"
        stats = score_hf_model(cfg, store, args.hf_model, name, tuple(args.task or TASKS))
    except CleanroomError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(e.exit_code) from None
    print(json.dumps(stats, indent=2, default=float))


if __name__ == "__main__":
    main()
