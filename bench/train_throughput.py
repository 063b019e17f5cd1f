"""Training throughput at the default preset's model shape: our trainer vs an fp32 eager nanoGPT baseline.

    .venv/bin/python bench/train_throughput.py [--steps 12] [--no-compile] [--preset default] [--dtype auto]
    .venv/bin/python bench/train_throughput.py --quick   # smoke shape, 3 steps, no compile (CI)

Both models are built and timed in this process, interleaved (ours, baseline, ours, ...) so that load
from other processes hits both alike; each figure is the median step time. Also measured here: the
machine's bf16 and fp32 matmul peaks (2048^3 GEMMs), so MFU (model FLOPs per second / peak) refers
to this machine as it is now. Prints one JSON object:

    {"speedup", "mfu", "tokens_per_s", "baseline_tokens_per_s", "peak_rss_mb", ...}

`tokens_per_s` / `mfu` are our trainer's step in `--dtype` (default `auto`: bf16 where this machine's
bf16 GEMMs are faster, the trainer's fastest setting), compile off; `compiled_*` add `torch.compile`;
`preset_dtype_tokens_per_s` is the step in the preset's own dtype (fp32 for `default`) when it differs.
`parallel_*`: what `cleanroom train` does on a CPU with several recipes (`runtime.jobs`): `jobs` models
in the preset's dtype step at once in threads, the cores split between them; timed in blocks that
alternate with blocks of the same model stepping alone on every core (`parallel_vs_sequential`) and of
the baseline (`parallel_speedup`).
Both run with the CLI's malloc settings (`cleanroom.malloc`; key `malloc`); `bench/malloc.py` measures those.
The baseline is nanoGPT's model (learned positions, LayerNorm, GELU MLP with 4 x d hidden = the same
parameter count as our SwiGLU, fused-QKV SDPA attention, tied embeddings) trained in fp32 eager with
PyTorch's default AdamW.
"""

from __future__ import annotations

import math
import os
import resource
import statistics
import threading
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from benchlib import emit, parser

from cleanroom.config import load_config
from cleanroom.malloc import tune_malloc
from cleanroom.runtime import autocast, gemm_gflops, parallel_jobs, resolve_dtype
from cleanroom.train.model import Transformer
from cleanroom.train.trainer import make_optimizer


class NanoGPTBlock(nn.Module):
    def __init__(self, d: int, n_heads: int, hidden: int):
        super().__init__()
        self.n_heads = n_heads
        self.ln_1, self.ln_2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.c_attn, self.c_proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.c_fc, self.mlp_proj = nn.Linear(d, hidden), nn.Linear(hidden, d)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, C)
        x = x + self.c_proj(y)
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x))))


class NanoGPT(nn.Module):
    """nanoGPT's GPT (Karpathy), trimmed: the fp32 eager baseline."""

    def __init__(self, vocab: int, d: int, n_layers: int, n_heads: int, seq_len: int, hidden: int):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(seq_len, d)
        self.h = nn.ModuleList(NanoGPTBlock(d, n_heads, hidden) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        self.lm_head.weight = self.wte.weight

    def forward(self, idx, targets):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        for block in self.h:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        return logits, F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


def make_step(model: nn.Module, opt: torch.optim.Optimizer, x, y, dtype: str, clip: float):
    """One training step as the trainer takes it; returns the loss (detached)."""
    def step() -> torch.Tensor:
        with autocast("cpu", dtype):
            _, loss = model(x, y)
        loss.backward()
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    return step


def main() -> None:
    malloc = tune_malloc()  # as the CLI does, before any thread allocates; both models get it
    p = parser(__doc__)
    p.add_argument("--preset", default="default")
    p.add_argument("--steps", type=int, default=12, help="timed steps per variant")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile variant")
    p.add_argument("--dtype", default="auto", choices=["auto", "bf16", "fp32"], help="our trainer's autocast dtype")
    args = p.parse_args()
    if args.quick:
        args.preset, args.steps, args.no_compile = "smoke", 3, True
    cfg = load_config(args.preset)
    m, t = cfg.model, cfg.train
    if cfg.runtime.threads:
        torch.set_num_threads(cfg.runtime.threads)
    vocab, B, T = cfg.tokenizer.vocab_size, t.batch_size, m.seq_len
    dtype, preset_dtype = resolve_dtype("cpu", args.dtype), resolve_dtype("cpu", t.dtype)
    load_before = os.getloadavg()[0]

    n, secs = (512, 0.2) if args.quick else (2048, 1.5)
    peak_bf16, peak_fp32 = (gemm_gflops(dt, n=n, seconds=secs) for dt in (torch.bfloat16, torch.float32))

    torch.manual_seed(0)
    x, y = torch.randint(0, vocab, (B, T)), torch.randint(0, vocab, (B, T))
    ours = Transformer(m, vocab)

    def step_of(model: nn.Module, dtype: str):
        """A training step of `model` (with its own AdamW, as the trainer makes it) in `dtype`."""
        return make_step(model, make_optimizer(model, t.lr, t.weight_decay, (t.beta1, t.beta2)), x, y, dtype,
                         t.grad_clip)

    def copy_of_ours() -> Transformer:
        twin = Transformer(m, vocab)
        twin.load_state_dict(ours.state_dict())
        return twin

    hidden = m.ffn_hidden * 3 // 2  # GELU MLP with the parameter count of our SwiGLU (4d when ffn = 8d/3)
    base = NanoGPT(vocab, m.d_model, m.n_layers, m.n_heads, T, hidden)
    base_opt = torch.optim.AdamW(base.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    variants = {
        "ours": step_of(ours, dtype),
        "baseline": make_step(base, base_opt, x, y, "fp32", t.grad_clip),
    }
    if preset_dtype != dtype:
        variants["preset_dtype"] = step_of(copy_of_ours(), preset_dtype)
    compile_s = None
    if not args.no_compile:
        variants["compiled"] = step_of(torch.compile(copy_of_ours()), dtype)
        t0 = time.perf_counter()
        variants["compiled"]()
        compile_s = time.perf_counter() - t0
    for step in variants.values():  # warm up (allocator, oneDNN primitive caches)
        step()
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.steps):
        for name, step in variants.items():
            t0 = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - t0)
    tps = {k: B * T / statistics.median(v) for k, v in times.items()}
    flops = ours.flops_per_token(T)
    out = {
        "speedup": round(tps["ours"] / tps["baseline"], 3),
        "mfu": round(tps["ours"] * flops / (peak_bf16 * 1e9), 4),
        "tokens_per_s": round(tps["ours"], 1),
        "baseline_tokens_per_s": round(tps["baseline"], 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "mfu_vs_fp32_peak": round(tps["ours"] * flops / (peak_fp32 * 1e9), 4),
        "bf16_peak_gflops": round(peak_bf16, 1),
        "fp32_peak_gflops": round(peak_fp32, 1),
        "model_gflops": round(tps["ours"] * flops / 1e9, 1),
        "dtype": dtype,
        "shape": {"d_model": m.d_model, "n_layers": m.n_layers, "n_heads": m.n_heads, "ffn_hidden": m.ffn_hidden,
                  "seq_len": T, "batch_size": B, "vocab": vocab, "params": ours.num_params()},
        "threads": torch.get_num_threads(),
        "malloc": malloc,
        "load_avg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }
    if "preset_dtype" in tps:
        out["preset_dtype"] = preset_dtype
        out["preset_dtype_tokens_per_s"] = round(tps["preset_dtype"], 1)
        out["preset_dtype_speedup"] = round(tps["preset_dtype"] / tps["baseline"], 3)
    if compile_s is not None:
        out["compiled_tokens_per_s"] = round(tps["compiled"], 1)
        out["compiled_speedup"] = round(tps["compiled"] / tps["baseline"], 3)
        out["compiled_mfu"] = round(tps["compiled"] * flops / (peak_bf16 * 1e9), 4)
        out["compile_seconds"] = round(compile_s, 1)
    jobs, per_job = parallel_jobs(cfg.runtime, len(cfg.recipes.names))
    if jobs > 1:
        par = parallel_blocks([step_of(copy_of_ours(), preset_dtype) for _ in range(jobs)], per_job,
                              {"sequential": step_of(copy_of_ours(), preset_dtype), "baseline": variants["baseline"]},
                              args.steps, rounds=1 if args.quick else 3)
        out["parallel_jobs"], out["parallel_threads_each"] = jobs, per_job
        out["parallel_tokens_per_s"] = round(par["parallel"] * B * T, 1)
        out["parallel_vs_sequential"] = round(par["parallel"] / par["sequential"], 3)
        out["parallel_speedup"] = round(par["parallel"] / par["baseline"], 3)
    assert all(math.isfinite(v) for v in tps.values())
    emit(out)


def parallel_blocks(steps: list, threads_each: int, others: dict, n: int, rounds: int = 3) -> dict[str, float]:
    """Median steps/s: `steps` run at once in threads (summed), and each of `others` alone, in
    alternating blocks of `n` steps."""
    rates: dict[str, list[float]] = {"parallel": [], **{k: [] for k in others}}

    def loop(step) -> None:
        torch.set_num_threads(threads_each)
        for _ in range(n):
            step()

    for _ in range(rounds):
        for name, step in others.items():
            t0 = time.perf_counter()
            for _ in range(n):
                step()
            rates[name].append(n / (time.perf_counter() - t0))
        workers = [threading.Thread(target=loop, args=(s,)) for s in steps]
        t0 = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        rates["parallel"].append(len(steps) * n / (time.perf_counter() - t0))
    return {k: statistics.median(v) for k, v in rates.items()}


if __name__ == "__main__":
    main()
