"""glibc malloc tuning (`cleanroom.malloc`): training step time with and without it.

    .venv/bin/python bench/malloc.py [--steps 16] [--rounds 2] [--preset default]   # --quick: smoke shape (CI)

What `cleanroom train` does on this machine (`jobs` models stepping at once in threads, the cores split
between them, the preset's dtype), timed in child processes that alternate: glibc defaults
(`CLEANROOM_MALLOC=default`), tuned, defaults, tuned, ... The baseline cannot run in this process:
`M_ARENA_MAX` only takes effect before a second thread allocates, so each setting needs a fresh process;
alternating them spreads load from other processes over both. Prints one JSON object:

    {"malloc_tuned_vs_default": steps/s ratio, "faults_per_step_default", "faults_per_step_tuned",
     "same_losses": whether every child computed bit-identical losses, ...}
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time

from benchlib import emit, parser


def child(preset: str, steps: int) -> dict:
    from cleanroom.malloc import tune_malloc

    state = tune_malloc()  # first, like the CLI (CLEANROOM_MALLOC picks the setting)
    import torch
    from train_throughput import make_step  # this directory: the same step as the throughput bench

    from cleanroom.config import load_config
    from cleanroom.runtime import parallel_jobs, resolve_dtype
    from cleanroom.train.model import Transformer
    from cleanroom.train.trainer import make_optimizer

    cfg = load_config(preset)
    jobs, threads_each = parallel_jobs(cfg.runtime, len(cfg.recipes.names))
    dtype = resolve_dtype("cpu", cfg.train.dtype)
    B, T, V = cfg.train.batch_size, cfg.model.seq_len, cfg.tokenizer.vocab_size
    out: dict[int, dict] = {}

    def run(j: int) -> None:
        torch.set_num_threads(threads_each)
        model = Transformer(cfg.model, V, seed=j)
        opt = make_optimizer(model, cfg.train.lr, cfg.train.weight_decay)
        gen = torch.Generator().manual_seed(j)
        x, y = torch.randint(0, V, (B, T), generator=gen), torch.randint(0, V, (B, T), generator=gen)
        step = make_step(model, opt, x, y, dtype, cfg.train.grad_clip)
        times, losses, warm = [], [], 3
        for s in range(warm + steps):
            if s == warm:
                faults = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
            t = time.perf_counter()
            losses.append(step().item())
            if s >= warm:
                times.append(time.perf_counter() - t)
        out[j] = {"step_s": statistics.median(times), "losses": losses,
                  "faults": (resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - faults) / steps}

    threads = [threading.Thread(target=run, args=(j,)) for j in range(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"malloc": state, "jobs": jobs, "threads_each": threads_each, "tokens_per_step": B * T,
            "step_s": statistics.mean(r["step_s"] for r in out.values()),
            "faults_per_step": statistics.mean(r["faults"] for r in out.values()),
            "losses": [out[j]["losses"] for j in sorted(out)],
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--steps", type=int, default=16, help="timed steps per model per child")
    ap.add_argument("--rounds", type=int, default=2, help="children per setting (alternating)")
    ap.add_argument("--preset", default="default")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.quick:  # the smoke shape, a few steps, one child per setting
        args.preset, args.steps, args.rounds = "smoke", 4, 1
    if args.child:
        emit(child(args.preset, args.steps))
        return
    runs: dict[str, list[dict]] = {"default": [], "tuned": []}
    for _ in range(args.rounds):
        for setting in runs:
            env = {**os.environ, "CLEANROOM_MALLOC": setting}
            cmd = [sys.executable, __file__, "--child", "--steps", str(args.steps), "--preset", args.preset]
            res = json.loads(subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
                             .splitlines()[-1])
            runs[setting].append(res)
    d, t = runs["default"], runs["tuned"]
    if t[0]["malloc"] != "tuned":
        emit({"skipped": "glibc mallopt not available: nothing to compare"})
        return
    step = {k: statistics.mean(r["step_s"] for r in v) for k, v in runs.items()}
    first = d[0]
    emit({
        "malloc_tuned_vs_default": round(step["default"] / step["tuned"], 3),
        "tokens_per_s_default": round(first["jobs"] * first["tokens_per_step"] / step["default"], 1),
        "tokens_per_s_tuned": round(first["jobs"] * first["tokens_per_step"] / step["tuned"], 1),
        "faults_per_step_default": round(statistics.mean(r["faults_per_step"] for r in d), 1),
        "faults_per_step_tuned": round(statistics.mean(r["faults_per_step"] for r in t), 1),
        "peak_rss_mb_default": max(r["peak_rss_mb"] for r in d),
        "peak_rss_mb_tuned": max(r["peak_rss_mb"] for r in t),
        "same_losses": all(r["losses"] == first["losses"] for r in d + t),
        "jobs": first["jobs"], "threads_each": first["threads_each"], "steps": args.steps,
        "rounds": args.rounds, "cpu_count": os.cpu_count(),
    })


if __name__ == "__main__":
    main()
