"""Evaluation throughput: the batched, packed native scorer vs naive one-item-one-option-at-a-time
scoring of the same items in the same process (and lm-evaluation-harness's `hf` backend on the
exported model, when `lm_eval` is installed). Prints one JSON object with `speedup`.

    python bench/eval_throughput.py                      # default preset's model shape, random weights
    python bench/eval_throughput.py --run runs/default   # a trained run's model
    python bench/eval_throughput.py --quick              # smoke shape, 40 items (CI)

Both scorers answer the same requests with the same model and dtype; the benchmark checks that every
prediction is identical (and reports the largest log-probability difference).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from benchlib import emit, parser

from cleanroom.evals.tasks import evaluate_items
from cleanroom.lm.native import NativeLM
from cleanroom.store import RunStore
from cleanroom.world.schema import TASKS
from cleanroom.world_store import load_items


def sample_items(store: RunStore, n: int, seed: int) -> list[dict]:
    """n items drawn evenly from every task (all when n <= 0)."""
    per_task = {t: load_items(store, t) for t in TASKS}
    if n <= 0:
        return [it for t in TASKS for it in per_task[t]]
    rng = np.random.default_rng(seed)
    out = []
    for i, t in enumerate(TASKS):
        pool = per_task[t]
        k = min(len(pool), n // len(TASKS) + (1 if i < n % len(TASKS) else 0))
        out += [pool[j] for j in sorted(rng.choice(len(pool), size=k, replace=False))]
    return out


def timed(adapter: NativeLM, items: list[dict], max_gen: int) -> tuple[list[dict], float]:
    evaluate_items(adapter, items[:8], max_gen_tokens=max_gen)  # warm-up: kernels, allocator
    t0 = time.perf_counter()
    rows = evaluate_items(adapter, items, max_gen_tokens=max_gen)
    return rows, time.perf_counter() - t0


def lm_eval_hf(model_dir: Path, items: list[dict], batch_size: int) -> dict:
    """items/s of lm-evaluation-harness's `hf` backend on the choice items (optional extra)."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=str(model_dir), batch_size=batch_size, device="cpu", dtype="float32")
    choice = [it for it in items if it["kind"] == "choice"]
    reqs = [Instance(request_type="loglikelihood", doc={}, arguments=(it["prompt"], " " + o), idx=j)
            for it in choice for j, o in enumerate(it["options"])]
    t0 = time.perf_counter()
    lm.loglikelihood(reqs)
    secs = time.perf_counter() - t0
    return {"items": len(choice), "items_per_s": round(len(choice) / secs, 1), "seconds": round(secs, 2)}


def main(argv: list[str] | None = None) -> dict:
    ap = parser(__doc__)
    ap.add_argument("--run", type=Path, help="a run directory with trained models (default: a random model)")
    ap.add_argument("--recipe", default="web")
    ap.add_argument("--preset", default="default", help="model shape and world when --run is not given")
    ap.add_argument("--items", type=int, default=400, help="items to score (0 = every item of every task)")
    ap.add_argument("--dtype", choices=["bf16", "fp32"], default=None, help="default: the config's eval.dtype")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args(argv)
    if args.quick:  # the smoke model shape and 40 items
        args.preset, args.items = "smoke", 40
    if args.threads:
        torch.set_num_threads(args.threads)

    tmp = None
    if args.run is not None:
        from cleanroom.config import saved_config

        store = RunStore(args.run)
        cfg = saved_config(args.run / "config.toml")
        source = f"trained model {args.run}/models/{args.recipe}"
    else:
        from doubles import tiny_run

        tmp = tempfile.TemporaryDirectory(prefix="eval-bench-")
        cfg, store = tiny_run(tmp.name, preset=args.preset, recipes=(args.recipe,))
        source = f"random-init model, {args.preset} preset shape"
    dtype = args.dtype or cfg.eval.dtype
    batch = args.batch_size or cfg.eval.batch_size
    model_dir = store.path(f"models/{args.recipe}")
    items = sample_items(store, args.items, cfg.seed)

    fast = NativeLM.load(model_dir, dtype=dtype, batch_size=batch, strategy="packed")
    naive = NativeLM.load(model_dir, dtype=dtype, strategy="naive")
    rows_fast, s_fast = timed(fast, items, cfg.eval.max_gen_tokens)
    rows_naive, s_naive = timed(naive, items, cfg.eval.max_gen_tokens)
    same = sum(a["prediction"] == b["prediction"] and a["prediction_text"] == b["prediction_text"]
               for a, b in zip(rows_fast, rows_naive, strict=True))
    diffs = [abs(x - y) for a, b in zip(rows_fast, rows_naive, strict=True)
             for x, y in zip(a["logprobs"], b["logprobs"], strict=True)]
    m = fast.model
    result = {
        "benchmark": "eval_throughput",
        "model": source,
        "params": sum(p.numel() for p in m.parameters()),
        "shape": {"d_model": m.cfg.d_model, "n_layers": m.cfg.n_layers, "vocab": m.vocab_size},
        "items": len(items),
        "loglikelihood_requests": sum(len(it["options"]) for it in items if it["kind"] == "choice"),
        "generate_requests": sum(it["kind"] == "exact" for it in items),
        "dtype": dtype,
        "threads": torch.get_num_threads(),
        "batched_items_per_s": round(len(items) / s_fast, 1),
        "naive_items_per_s": round(len(items) / s_naive, 1),
        "batched_seconds": round(s_fast, 3),
        "naive_seconds": round(s_naive, 3),
        "batched_token_positions": fast.counts.tokens,
        "naive_token_positions": naive.counts.tokens,
        "speedup": round(s_naive / s_fast, 2),
        "identical_predictions": same == len(items),
        "identical_count": same,
        "max_logprob_diff": float(max(diffs)) if diffs else 0.0,
        "cpu_count": os.cpu_count(),
    }
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        result["lm_eval_hf"] = "lm_eval not installed (pip install lm-eval to compare)"
    else:
        result["lm_eval_hf"] = lm_eval_hf(model_dir, items, batch)
        choice = [it for it in items if it["kind"] == "choice"]
        _, s_choice = timed(fast, choice, cfg.eval.max_gen_tokens)  # the same requests lm-eval answered
        result["lm_eval_hf"]["speedup_vs_lm_eval"] = round(result["lm_eval_hf"]["seconds"] / s_choice, 2)
    emit(result)
    if tmp is not None:
        tmp.cleanup()
    return result


if __name__ == "__main__":
    sys.exit(0 if main()["identical_predictions"] else 1)
