"""Time to a fixed validation loss: cleanroom's trainer against a nanoGPT-style fp32 eager baseline.

    .venv/bin/python bench/train_throughput.py [--run runs/default] [--target 1.6] [--models 4]
    .venv/bin/python bench/train_throughput.py --quick   # smoke preset, seconds (CI)

One process, the same data: the token files of a run directory (`--run`; default: a fresh run of
`--preset` built in a temporary directory), the first `--models` recipes, each model on its recipe's
tokens in the trainer's seeded order. Both sides train on the preset's token budget with its lr, warmup
share and cosine schedule, AdamW and grad clipping, and stop a model once its validation loss (the
trainer's `val_batches`, every `--eval-every` x 16 sequences) is at or below `--target`:

- baseline: nanoGPT's GPT (learned positions, LayerNorm with biases, GELU MLP with the parameter count
  of our SwiGLU, fused-QKV attention, tied embeddings, nanoGPT's init and AdamW groups) in fp32 eager,
  the models one after another, each on every core, in steps of 16 sequences (`BASELINE_BATCH`: the
  trainer's batch when this bench was set; the preset's batch size is one of our levers, not the
  baseline's);
- ours: the trainer's step (`cleanroom.train.batched.train_step`) on the models batched as the pipeline
  batches them (`runtime.jobs` groups, the cores split between them), in `--dtype` (default `auto`:
  bf16 where this machine's bf16 GEMMs are faster, as `train.dtype = auto` decides).

The two alternate in chunks of `--eval-every` steps, so load from other processes hits both alike;
only training steps are timed (evaluations are not). Also measured here: the machine's bf16 and fp32
GEMM peaks, so `mfu` (ours: model FLOPs/s over the better peak) refers to this machine as it is now.
Prints one JSON object:

    {"time_to_loss_speedup", "mfu", "dtype", "bf16_peak_gflops", "fp32_peak_gflops", "tokens_per_s",
     "baseline_tokens_per_s", "throughput_ratio", "steps_ratio", "baseline_seconds", "ours_seconds", ...}

`time_to_loss_speedup` = baseline seconds / ours; it factors into `throughput_ratio` (tokens/s) times
`steps_ratio` (the baseline's steps to the target over ours: what the architecture buys).

Levers. `--set KEY=VALUE` changes the config of every side (the shape raced: `--set model.d_model=128`);
`--lever KEY=VALUE` changes ours only (`--lever train.optimizer=muon`, `--lever runtime.compile=true`,
`--lever train.batch_size=32`, ...). With levers a third side, `current`, runs our trainer on the
unchanged config in the same alternation, and `lever_time_to_loss_speedup` (current seconds / ours),
`lever_throughput_ratio` and `lever_steps_ratio` say what the levers bought over the current path;
`current_time_to_loss_speedup` is the current path against the baseline. `--no-baseline` races ours
against current alone (quicker lever sweeps).
"""

from __future__ import annotations

import json
import math
import os
import resource
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from benchlib import emit, log, parser

from cleanroom.config import ExperimentConfig, TrainConfig, load_config, resolve, saved_config
from cleanroom.malloc import tune_malloc
from cleanroom.pipeline import Pipeline
from cleanroom.runtime import autocast, cpu_model, parallel_jobs, resolve_dtype
from cleanroom.store import RunStore
from cleanroom.train.batched import BatchedTransformer, make_optimizer, recipe_members, stack_batches, train_step
from cleanroom.train.data import TrainBatches, open_tokens, val_batches
from cleanroom.train.trainer import evaluate, lr_at, train_optimizer

DEFAULT_TARGET = {"default": 1.6, "smoke": 5.5}  # reached within the schedule by both sides
BASELINE_BATCH = 16  # the baseline's sequences per step, fixed: the trainer's batch when this bench was set


def steps_of(n: int, t: TrainConfig) -> int:
    """`n` steps of `BASELINE_BATCH` sequences, in steps of `t.batch_size` (at least one)."""
    return max(1, round(n * BASELINE_BATCH / t.batch_size))


def baseline_schedule(t: TrainConfig) -> TrainConfig:
    """The baseline's schedule: the preset's tokens and warmup share in steps of `BASELINE_BATCH` sequences,
    its lr, decay and betas (for the default preset: 160 steps of 16, warmup 20, the default before 2026-12-05)."""
    scale = t.batch_size / BASELINE_BATCH
    return t.model_copy(update={"batch_size": BASELINE_BATCH, "steps": max(1, round(t.steps * scale)),
                                "warmup_steps": round(t.warmup_steps * scale)})


def every(eval_every: int, t: TrainConfig) -> int:
    """Steps between validations: `eval_every` x 16 sequences in steps of `t.batch_size`, so that every side
    checks the target at the same token counts."""
    return steps_of(eval_every, t)


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
    """nanoGPT's GPT (Karpathy), trimmed: the fp32 eager baseline, with nanoGPT's init."""

    def __init__(self, vocab: int, d: int, n_layers: int, n_heads: int, seq_len: int, hidden: int):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(seq_len, d)
        self.h = nn.ModuleList(NanoGPTBlock(d, n_heads, hidden) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        self.lm_head.weight = self.wte.weight
        for m in self.modules():
            if isinstance(m, nn.Linear | nn.Embedding):
                nn.init.normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
        for name, p in self.named_parameters():
            if name.endswith(("c_proj.weight", "mlp_proj.weight")):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * n_layers))

    def forward(self, idx, targets):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        for block in self.h:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        return logits, F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))


def nanogpt_optimizer(model: nn.Module, lr: float, weight_decay: float, betas: tuple[float, float]):
    """nanoGPT's `configure_optimizers`: decay on 2-d parameters, fused AdamW where available."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=True)


def make_step(model: nn.Module, opt: torch.optim.Optimizer, x, y, dtype: str, clip: float):
    """One single-model training step as the trainer takes it; returns the loss (bench/malloc.py uses it)."""
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


def peak_gflops(dtype: torch.dtype, n_max: int, seconds: float, threads: int) -> float:
    """Best GEMM GFLOP/s on `threads` threads: the better of all threads on one GEMM and `threads` x one
    thread (on a shared machine a multi-threaded GEMM waits for its slowest thread, which understates the
    peak; a higher peak only lowers MFU). Sizes 256 .. n_max, best of repeated runs, stopping early where
    one GEMM takes too long (bf16 without AVX512-BF16 / AMX runs ~1 GFLOP/s: a 2048^3 GEMM takes 17 s)."""
    before = torch.get_num_threads()
    best = 0.0
    for t, scale in ((threads, 1), (1, threads)):
        torch.set_num_threads(t)
        n = 256
        while n <= n_max:
            a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
            t0 = time.perf_counter()
            a @ b
            first = time.perf_counter() - t0
            times, end = [first], time.perf_counter() + seconds
            while time.perf_counter() < end:
                t1 = time.perf_counter()
                a @ b
                times.append(time.perf_counter() - t1)
            best = max(best, scale * 2 * n**3 / min(times) / 1e9)
            if first > seconds:
                break
            n *= 2
    torch.set_num_threads(before)
    return best


class Side:
    """One side of the race: steps its models in chunks, times only the steps, records when each
    model's validation loss first reaches the target."""

    def __init__(self, name: str, target: float, max_steps: int):
        self.name, self.target, self.max_steps = name, target, max_steps
        self.seconds, self.tokens, self.done = 0.0, 0, False
        self.cpu_seconds = 0.0  # process CPU time of the timed steps: on a loaded machine, closer to idle time
        self.first_chunk: tuple[float, int] | None = None  # (seconds, tokens) of the first chunk: compiling
        self.reached: dict[str, int | None] = {}
        self.curves: dict[str, list[tuple[int, float]]] = {}

    def record(self, model: str, step: int, val: float) -> bool:
        self.curves.setdefault(model, []).append((step, round(val, 4)))
        log(f"  {self.name} {model} step {step}: val {val:.4f} ({self.seconds:.0f} s)")
        if val <= self.target and self.reached.get(model) is None:
            self.reached[model] = step
        return self.reached.get(model) is not None


def baseline(cfg, data: dict, vocab: int, side: Side, eval_every: int, threads: int) -> Iterator[None]:
    """nanoGPT fp32 eager, one model after another on `threads` threads, on `baseline_schedule`."""
    m, t = cfg.model, baseline_schedule(cfg.train)
    eval_every = every(eval_every, t)
    for name, (batches, val, seed) in data.items():
        torch.set_num_threads(threads)
        torch.manual_seed(seed)
        model = NanoGPT(vocab, m.d_model, m.n_layers, m.n_heads, m.seq_len, m.ffn_hidden * 3 // 2)
        opt = nanogpt_optimizer(model, t.lr, t.weight_decay, (t.beta1, t.beta2))
        side.reached[name] = None
        for step in range(side.max_steps):
            x, y = batches.batch(step, 0, 1, t.batch_size)
            t0, c0 = time.perf_counter(), time.process_time()
            for g in opt.param_groups:
                g["lr"] = lr_at(step, t)
            make_step(model, opt, x, y, "fp32", t.grad_clip)()
            side.seconds += time.perf_counter() - t0
            side.cpu_seconds += time.process_time() - c0
            side.tokens += x.numel()
            if (step + 1) % eval_every == 0:
                if side.record(name, step + 1, evaluate(model, val, torch.device("cpu"), "fp32")):
                    break
                yield
        yield
    side.done = True


def ours(cfg, data: dict, vocab: int, side: Side, eval_every: int, groups: int, threads: int,
         dtype: str) -> Iterator[None]:
    """cleanroom's batched trainer step: `groups` batched groups at once, `threads` torch threads each, with
    `cfg`'s optimizer, schedule, batch size and `runtime.compile`."""
    m, t = cfg.model, cfg.train
    eval_every = every(eval_every, t)
    names = list(data)
    parts = [names[i::groups] for i in range(groups)]
    models = [BatchedTransformer(m, vocab, [data[n][2] for n in part]) for part in parts]
    opts = [train_optimizer(bm, t, lead=1) for bm in models]
    nets = [torch.compile(bm) if cfg.runtime.compile else bm for bm in models]
    for n in names:
        side.reached[n] = None
    step = 0

    def run(g: int, first: int) -> None:
        torch.set_num_threads(threads)
        for s in range(first, first + eval_every):
            x, y = stack_batches([data[n][0] for n in parts[g]], s, t.batch_size)
            train_step(nets[g], opts[g], x, y, lr_at(s, t), t.grad_clip, dtype)

    while step < side.max_steps and any(v is None for v in side.reached.values()):
        live = [g for g, part in enumerate(parts) if any(side.reached[n] is None for n in part)]
        t0, c0 = time.perf_counter(), time.process_time()
        if len(live) == 1:
            run(live[0], step)
        else:
            workers = [threading.Thread(target=run, args=(g, step)) for g in live]
            for w in workers:
                w.start()
            for w in workers:
                w.join()
        side.seconds += time.perf_counter() - t0
        side.cpu_seconds += time.process_time() - c0
        side.tokens += sum(len(parts[g]) for g in live) * eval_every * t.batch_size * m.seq_len
        if side.first_chunk is None:
            side.first_chunk = (side.seconds, side.tokens)
        step += eval_every
        torch.set_num_threads(threads * len(live))
        for g in live:
            for i, n in enumerate(parts[g]):
                side.record(n, step, evaluate(models[g].single(i), data[n][1], torch.device("cpu"), dtype))
        yield
    side.done = True


def plan_rates(cfg, vocab: int, sizes: list[int], cores: int, steps: int, rounds: int) -> dict[str, float]:
    """Model-steps/s of ways to train n models of the preset's shape on this machine's cores, timed in
    alternating blocks: `n` batched groups of one thread each (n <= cores, the pipeline's default) vs one
    batched group on every core. Random tokens: only speed is measured."""
    m, t = cfg.model, cfg.train

    def plan(groups: list[int], threads: int):
        steps_ = []
        for g in groups:
            bm = BatchedTransformer(m, vocab, list(range(g)))
            opt = make_optimizer(bm, t.lr, t.weight_decay, (t.beta1, t.beta2))
            x, y = torch.randint(0, vocab, (g, t.batch_size, m.seq_len)), torch.randint(0, vocab, (g, t.batch_size,
                                                                                                       m.seq_len))
            steps_.append(lambda bm=bm, opt=opt, x=x, y=y: train_step(bm, opt, x, y, t.lr, t.grad_clip, "fp32"))

        def run() -> None:
            def loop(step) -> None:
                torch.set_num_threads(threads)
                for _ in range(steps):
                    step()
            workers = [threading.Thread(target=loop, args=(s,)) for s in steps_]
            for w in workers:
                w.start()
            for w in workers:
                w.join()
        return run

    plans = {}
    for n in sizes:
        split = [len(range(i, n, min(n, cores))) for i in range(min(n, cores))]
        plans[f"{n} models: {'+'.join(map(str, split))} x 1 thread"] = (plan(split, 1), n)
        plans[f"{n} models: {n} x {cores} threads"] = (plan([n], cores), n)
    rates: dict[str, list[float]] = {k: [] for k in plans}
    for run, _ in plans.values():
        run()  # warm up
    for _ in range(rounds):
        for name, (run, n) in plans.items():
            t0 = time.perf_counter()
            run()
            rates[name].append(n * steps / (time.perf_counter() - t0))
    return {k: round(sorted(v)[len(v) // 2], 3) for k, v in rates.items()}


def race(base: Side, other: Side) -> dict:
    """Time to the target of `other` against `base`, and its two factors: tokens/s (what kernels buy) and
    tokens to the target (what the optimizer, schedule and architecture buy). None where a side missed it."""
    reached = all(v is not None for side in (base, other) for v in side.reached.values())
    base_tps, other_tps = base.tokens / base.seconds, other.tokens / other.seconds
    return {
        "time_to_loss_speedup": round(base.seconds / other.seconds, 3) if reached else None,
        "throughput_ratio": round(other_tps / base_tps, 3),
        # tokens/s after each side's first chunk (which includes torch.compile's compile time, if any)
        "steady_throughput_ratio": round(steady_tps(other) / steady_tps(base), 3),
        # model-steps (tokens) each side trained: a batched group steps all its models until its last is done
        "steps_ratio": round(base.tokens / other.tokens, 3) if reached else None,
        # the same ratio in process CPU seconds: what the machine's load does not stretch (fair between sides
        # with the same threads; a multi-threaded side also counts its threads' spinning)
        "cpu_time_to_loss_speedup": round(base.cpu_seconds / other.cpu_seconds, 3) if reached else None,
        f"{base.name}_seconds": round(base.seconds, 2),
        f"{base.name}_cpu_seconds": round(base.cpu_seconds, 2),
        f"{base.name}_tokens_per_s": round(base_tps, 1),
        f"{base.name}_steps_to_target": base.reached,
    }


def steady_tps(side: Side) -> float:
    secs, toks = side.first_chunk or (0.0, 0)
    return (side.tokens - toks) / max(side.seconds - secs, 1e-9) if side.tokens > toks else side.tokens / side.seconds


def lever_config(cfg: ExperimentConfig, levers: list[str]) -> ExperimentConfig:
    """`cfg` with the `--lever` overrides (validated as `--set` is)."""
    if not levers:
        return cfg
    return resolve(cfg.model_dump(mode="json"), None, levers)


def step_costs(cfgs: dict[str, ExperimentConfig], vocab: int, n_models: int, rounds: int) -> dict[str, float]:
    """CPU seconds per batched step of `n_models` models on one thread, for each config (the current path
    and the levers' side), in alternating rounds of 3 steps after 2 warm-up steps (compile, if any).
    Thread CPU time is what a loaded machine stretches least: it measures the step, not the queue for a
    core. Random tokens: only speed is measured."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    steps = {}
    for name, c in cfgs.items():
        bm = BatchedTransformer(c.model, vocab, list(range(n_models)))
        opt = train_optimizer(bm, c.train, lead=1)
        net = torch.compile(bm) if c.runtime.compile else bm
        shape = (n_models, c.train.batch_size, c.model.seq_len)
        x, y = torch.randint(0, vocab, shape), torch.randint(0, vocab, shape)
        steps[name] = lambda net=net, opt=opt, x=x, y=y, c=c: train_step(net, opt, x, y, c.train.lr, c.train.grad_clip,
                                                                         "fp32")
        for _ in range(2):
            steps[name]()
    times: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            t0 = time.thread_time()
            for _ in range(3):
                step()
            times[name].append((time.thread_time() - t0) / 3)
    torch.set_num_threads(before)
    return {k: round(sorted(v)[len(v) // 2], 4) for k, v in times.items()}


def load_data(args) -> tuple:
    """(config, run directory) with token files: `--run`, else a fresh run of the preset; `--set` applied."""
    if args.run:
        return saved_config(Path(args.run) / "config.toml", args.set), Path(args.run)
    root = Path(tempfile.mkdtemp(prefix="train_bench_"))
    cfg = load_config(args.preset, overrides=args.set)
    log(f"building a {args.preset} run in {root} (world -> tokenize) ...")
    Pipeline(cfg, RunStore(root)).ensure("tokenize")
    return cfg, root


def main() -> None:
    malloc = tune_malloc()  # as the CLI does, before any thread allocates; both sides get it
    p = parser(__doc__)
    p.add_argument("--preset", default="default")
    p.add_argument("--run", default=None, help="run directory with token files (default: build one)")
    p.add_argument("--models", type=int, default=0, help="recipes' models to train (default: all)")
    p.add_argument("--target", type=float, default=None, help="validation loss to reach (default per preset)")
    p.add_argument("--eval-every", type=int, default=10, help="validate every this many x 16 sequences per model")
    p.add_argument("--max-steps", type=int, default=0,
                   help="give up after this many x 16 sequences per model (default: each side's schedule)")
    p.add_argument("--baseline-threads", type=int, default=0,
                   help="torch threads of the baseline (default: runtime.threads, else every core)")
    p.add_argument("--plans", type=int, nargs="*", default=None,
                   help="also time group plans for these model counts (e.g. --plans 4 5): model-steps/s")
    p.add_argument("--dtype", default="auto", choices=["auto", "bf16", "fp32"], help="our trainer's autocast dtype")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override for every side (the shape raced: model.d_model=128, ...)")
    p.add_argument("--lever", action="append", default=[], metavar="KEY=VALUE",
                   help="config override for ours only (train.optimizer=muon, runtime.compile=true, ...): then "
                   "a third side, `current`, runs our trainer without the levers, and lever_* ratios compare them")
    p.add_argument("--no-baseline", action="store_true", help="race ours against `current` only (needs --lever)")
    p.add_argument("--step-cost", type=int, default=0, metavar="ROUNDS",
                   help="also time the CPU seconds of one batched step (one thread, --models models) of ours "
                   "against current in ROUNDS alternating rounds, per 16 sequences: lever_step_cpu_ratio")
    args = p.parse_args()
    if args.quick:
        args.preset, args.eval_every, args.models, args.max_steps = "smoke", 5, 2, 30
    cfg, root = load_data(args)
    m, t = cfg.model, cfg.train
    target = args.target if args.target is not None else DEFAULT_TARGET.get(cfg.name, DEFAULT_TARGET["default"])

    def max_steps(tc: TrainConfig) -> int:  # each side's own schedule (--max-steps counts steps of 16 sequences)
        return steps_of(args.max_steps, tc) if args.max_steps else tc.steps

    recipes = cfg.recipes.names[: args.models or None]
    cores = os.cpu_count() or 1
    load_before = os.getloadavg()[0]

    n_max, secs = (256, 0.1) if args.quick else (1024, 0.5)
    peak_bf16, peak_fp32 = (peak_gflops(dt, n_max, secs, cores) for dt in (torch.bfloat16, torch.float32))
    dtype = resolve_dtype("cpu", args.dtype)

    tokens = root / "tokens"
    vocab = json.loads((tokens / f"{recipes[0]}.json").read_text())["vocab_size"]
    data = {}
    for mem in recipe_members(cfg, recipes):
        batches = TrainBatches(open_tokens(tokens, mem.tokens, "train"), m.seq_len, mem.seed)
        data[mem.name] = (batches, val_batches(open_tokens(tokens, mem.tokens, "val"), m.seq_len, t.batch_size,
                                               t.eval_batches), mem.seed)
    jobs, threads_each = parallel_jobs(cfg.runtime.model_copy(update={"device": "cpu"}), len(recipes))
    base_threads = args.baseline_threads or cfg.runtime.threads or cores  # a model's threads, as the preset says
    lever_cfg = lever_config(cfg, args.lever)
    sides = {"baseline": Side("baseline", target, max_steps(baseline_schedule(t))),
             "ours": Side("ours", target, max_steps(lever_cfg.train))}
    runners = {"baseline": baseline(cfg, data, vocab, sides["baseline"], args.eval_every, base_threads),
               "ours": ours(lever_cfg, data, vocab, sides["ours"], args.eval_every, jobs, threads_each, dtype)}
    if args.lever:  # the current path, raced in the same process
        sides["current"] = Side("current", target, max_steps(t))
        runners["current"] = ours(cfg, data, vocab, sides["current"], args.eval_every, jobs, threads_each, dtype)
    if args.no_baseline:
        if not args.lever:
            p.error("--no-baseline needs at least one --lever")
        del sides["baseline"], runners["baseline"]
    log(f"{len(recipes)} models to val loss {target}: baseline one after another on {base_threads} threads, ours in "
        f"{jobs} batched group(s) x {threads_each} thread(s), {dtype}; levers {args.lever or 'none'}; "
        f"sides {list(sides)}")
    live = list(runners.values())
    while live:  # alternate chunks, so that load from other processes hits every side alike
        for r in list(live):
            if next(r, "end") == "end":
                live.remove(r)
    one = BatchedTransformer(m, vocab, [0])
    flops = one.flops_per_token(m.seq_len)
    our_side = sides["ours"]
    ours_tps = our_side.tokens / our_side.seconds
    better = max(peak_bf16, peak_fp32)
    out = {}
    if "baseline" in sides:
        out.update(race(sides["baseline"], our_side))
    out.update({
        "mfu": round(ours_tps * flops / (better * 1e9), 4),
        "mfu_peak": "bf16" if peak_bf16 > peak_fp32 else "fp32",
        "dtype": dtype,
        "bf16_peak_gflops": round(peak_bf16, 1),
        "fp32_peak_gflops": round(peak_fp32, 1),
        "target_val_loss": target,
        "ours_seconds": round(our_side.seconds, 2),
        "ours_cpu_seconds": round(our_side.cpu_seconds, 2),
        "tokens_per_s": round(ours_tps, 1),
        "ours_steps_to_target": our_side.reached,
        "model_gflops": round(ours_tps * flops / 1e9, 1),
    })
    if "baseline" in sides:
        base_tps = sides["baseline"].tokens / sides["baseline"].seconds
        out["baseline_mfu"] = round(base_tps * flops / (better * 1e9), 4)
    if "current" in sides:
        out["levers"] = args.lever
        out.update({f"lever_{k}": v for k, v in race(sides["current"], our_side).items()})
        if "baseline" in sides:
            out["current_time_to_loss_speedup"] = race(sides["baseline"], sides["current"])["time_to_loss_speedup"]
    out.update({
        "models": len(recipes),
        "groups": jobs,
        "threads_each": threads_each,
        "shape": {"d_model": m.d_model, "n_layers": m.n_layers, "n_heads": m.n_heads, "ffn_hidden": m.ffn_hidden,
                  "seq_len": m.seq_len, "batch_size": t.batch_size, "vocab": vocab, "params": one.num_params()},
        "train": {k: getattr(lever_cfg.train, k) for k in ("optimizer", "lr", "muon_lr", "warmup_steps",
                                                           "batch_size", "steps")},
        "cpu": cpu_model(),
        "threads": cores,
        "baseline_threads": base_threads,
        "malloc": malloc,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "load_avg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "curves": {k: sd.curves for k, sd in sides.items()} if not args.quick else None,
    })
    if args.step_cost and args.lever:
        costs = step_costs({"current": cfg, "ours": lever_cfg}, vocab, len(recipes), args.step_cost)
        per16 = {k: v * 16 / c.train.batch_size for (k, v), c in zip(costs.items(), (cfg, lever_cfg), strict=True)}
        out["step_cpu_seconds"] = costs
        out["lever_step_cpu_ratio"] = round(per16["current"] / per16["ours"], 3)  # tokens per CPU second
        out["load_avg_1m"].append(round(os.getloadavg()[0], 2))
    if args.plans:
        out["plans_model_steps_per_s"] = plan_rates(cfg, vocab, args.plans, cores, 2 if args.quick else 4,
                                                    1 if args.quick else 3)
        out["load_avg_1m"].append(round(os.getloadavg()[0], 2))
    assert math.isfinite(ours_tps)
    emit(out)


if __name__ == "__main__":
    main()
