"""The `train` stage: one model per recipe, AdamW + warmup/cosine, bf16 autocast, checkpoints, DDP.

    cleanroom train --preset smoke --out runs/smoke [--recipe web]          # one process
    torchrun --nproc_per_node=2 -m cleanroom.train.trainer --out runs/smoke  # DDP (gloo CPU / NCCL CUDA)

What each piece is for:
- bf16 autocast (CPU and CUDA): matmuls run in bf16 (AVX512-BF16 / AMX on CPU, tensor cores on
  CUDA) while weights, optimizer state and the loss stay fp32, so no loss scaling is needed.
- Warmup then cosine decay to `min_lr_ratio * lr`: the usual recipe for short runs.
- Data order is a pure function of (seed, step, rank) (see `data.py`), so a checkpoint only needs
  the model, the optimizer, the step and the RNG state to resume *exactly* where it stopped; a run
  killed with SIGKILL and restarted ends where an uninterrupted run ends.
- Checkpoints (`checkpoints/<recipe>/last.pt`) are written atomically (temp file + rename) and hold
  only tensors and plain values, loaded with `torch.load(weights_only=True)`: no unpickling of code.
  They carry a key (config + token files) and are ignored if the run's config changed. They are
  deleted once the model is exported.
- Outputs: `models/<recipe>/` (Hugging Face format, see export.py) and `logs/train/<recipe>.jsonl`
  (one line per step: step, loss, lr, tokens/s, and val_loss at evaluation steps).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import json
import math
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from cleanroom.config import ExperimentConfig, TrainConfig
from cleanroom.pipeline import StageResult, check_cancelled
from cleanroom.store import RunStore, StoreError, atomic_path, write_text
from cleanroom.train.data import TrainBatches, open_tokens, val_batches
from cleanroom.train.export import export_hf
from cleanroom.train.model import Transformer
from cleanroom.ui import console, progress, say

# ---------------------------------------------------------------- helpers other stages use


def pick_device(train_cfg: TrainConfig) -> torch.device:
    """`auto` -> CUDA when available, else CPU; asking for CUDA without one is a user error."""
    if train_cfg.device == "cuda" or (train_cfg.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise StoreError("config train.device = \"cuda\" but no CUDA device is available (use auto or cpu)")
        if dist.is_available() and dist.is_initialized():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cuda")
    return torch.device("cpu")


def fast_bf16(device: torch.device | str) -> bool:
    """Does this device run bf16 matmuls clearly faster than fp32? CUDA: when it supports bf16.

    CPU: measured, not guessed from CPU flags: AMX (Intel) and AVX512-BF16 on AMD EPYC run bf16 GEMMs
    2-7x faster than fp32, while an Intel VM that hides AMX runs them at half its fp32 speed. A short
    probe (~0.1 s, once per process and thread count) compares the two; bf16 wins from 1.25x up.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_bf16_speedup(torch.get_num_threads()) >= 1.25


def gemm_gflops(dtype: torch.dtype, n: int = 512, seconds: float = 0.05) -> float:
    """Best-of GFLOP/s of an n^3 matmul in `dtype` on the CPU, timed for about `seconds`."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b
    best, end = math.inf, time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


_PROBE_LOCK = threading.Lock()


def cpu_bf16_speedup(threads: int) -> float:
    """bf16 / fp32 GEMM throughput on this CPU with `threads` threads (512^3 matmuls, ~0.1 s)."""
    with _PROBE_LOCK:  # recipes training in parallel threads probe once, not against each other
        return _bf16_probe(threads)


@functools.lru_cache(maxsize=8)
def _bf16_probe(threads: int) -> float:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return gemm_gflops(torch.bfloat16) / gemm_gflops(torch.float32)
    finally:
        torch.set_num_threads(before)


def parallel_jobs(cfg: TrainConfig, n_keys: int) -> tuple[int, int]:
    """(recipes run at once, torch threads each) for a per-recipe stage with `n_keys` recipes.

    `cfg.jobs`, or auto: one at a time on CUDA and under torchrun (the device or the process group is
    shared), min(recipes, cores) on a CPU. Threads: `cfg.threads`, or the cores split between the jobs.
    """
    cores = os.cpu_count() or 1
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        jobs = 1
    elif cfg.jobs:
        jobs = cfg.jobs
    else:
        jobs = 1 if pick_device(cfg).type == "cuda" else min(n_keys, cores)
    jobs = max(1, min(jobs, n_keys))
    return jobs, cfg.threads or max(1, cores // jobs)


def resolve_dtype(device: torch.device | str, dtype: str | torch.dtype) -> str:
    """`auto` -> "bf16" where bf16 is fast (see `fast_bf16`), else "fp32"; other values unchanged."""
    if dtype == "auto":
        return "bf16" if fast_bf16(device) else "fp32"
    return "fp32" if dtype in ("fp32", torch.float32) else "bf16" if dtype in ("bf16", torch.bfloat16) else dtype


def autocast(device: torch.device | str, dtype: str | torch.dtype = "bf16") -> contextlib.AbstractContextManager:
    """bf16 autocast on CPU or CUDA; a no-op context for fp32; `auto` picks per `resolve_dtype`."""
    device_type = torch.device(device).type
    dtype = resolve_dtype(device, dtype)
    if dtype == "fp32":
        return contextlib.nullcontext()
    if dtype != "bf16":
        raise ValueError(f"unsupported dtype {dtype!r} (bf16 or fp32)")
    return torch.autocast(device_type=device_type, dtype=torch.bfloat16)


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float,
                   betas: tuple[float, float] = (0.9, 0.95)) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices (linear weights, embeddings) only, not on norm gains."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    device_type = params[0].device.type if params else "cpu"
    try:  # the fused kernel (one op for all params) is fastest where it exists
        return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=device_type in ("cpu", "cuda"))
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(groups, lr=lr, betas=betas)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to `lr`, then cosine decay to `min_lr_ratio * lr` at the last step."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, cfg.steps - cfg.warmup_steps)
    progress_ = min(1.0, (step - cfg.warmup_steps) / span)
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + 0.5 * (cfg.lr - floor) * (1.0 + math.cos(math.pi * progress_))


# ---------------------------------------------------------------- distributed


def _dist_info() -> tuple[int, int, int]:
    """(rank, local_rank, world_size); (0, 0, 1) outside torchrun."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), int(os.environ.get("LOCAL_RANK", 0)), dist.get_world_size()
    return 0, 0, 1


def init_distributed() -> None:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1): NCCL on CUDA, else gloo."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend)


def _set_threads(cfg: TrainConfig, world_size: int) -> None:
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    elif world_size > 1:  # processes on one machine share its cores
        local = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local))


# ---------------------------------------------------------------- checkpoints


def checkpoint_key(cfg: ExperimentConfig, token_meta: dict) -> str:
    """A checkpoint is valid for the same model/train config, seed, world size and token files."""
    _, _, world = _dist_info()
    payload = "|".join(str(v) for v in (cfg.fingerprint("model", "train"), token_meta["tokenizer_sha256"],
                                        token_meta["train_tokens"], world))
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def save_checkpoint(path: Path, model: Transformer, opt: torch.optim.Optimizer, step: int, key: str,
                    extra: dict) -> None:
    state = {
        "key": key,
        "step": step,
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "extra": extra,
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path, key: str, device: torch.device) -> dict | None:
    """The checkpoint's state if it exists and matches `key`; None otherwise (never unpickles code)."""
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # truncated or foreign file: say so and start over rather than crash
        say(f"[yellow]  ignoring unreadable checkpoint {path}: {e}[/]")
        return None
    if state.get("key") != key:
        say(f"[yellow]  ignoring checkpoint {path}: it was made with another config or token files[/]")
        return None
    return state


# ---------------------------------------------------------------- training


@torch.no_grad()
def evaluate(model: Transformer, batches, device: torch.device, dtype: str) -> float:
    model.eval()
    total, n = 0.0, 0
    for x, y in batches:
        with autocast(device, dtype):
            _, loss = model(x.to(device), y.to(device))
        total += loss.item() * x.numel()
        n += x.numel()
    model.train()
    return total / n


def _tail_log(path: Path, upto_step: int) -> None:
    """Keep log lines of steps <= upto_step (a resumed run rewrites what the killed run logged after)."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= upto_step:
                keep.append(line)
        except (ValueError, KeyError):
            break  # a torn last line from a kill
    write_text(path, "".join(k + "\n" for k in keep))


def train_model(cfg: ExperimentConfig, store: RunStore, recipe: str, stop_after: int | None = None) -> dict:
    """Train (or resume) `recipe`'s model; export it; return stats. `stop_after` (tests) stops early."""
    tcfg = cfg.train
    init_distributed()
    rank, _, world = _dist_info()
    device = pick_device(tcfg)
    dtype = resolve_dtype(device, tcfg.dtype)
    threads_before = torch.get_num_threads()
    _set_threads(tcfg, world)
    try:
        return _train(cfg, store, recipe, stop_after, device, dtype, rank, world)
    finally:
        torch.set_num_threads(threads_before)  # later stages in this process get every core back


def _train(cfg: ExperimentConfig, store: RunStore, recipe: str, stop_after: int | None, device: torch.device,
           dtype: str, rank: int, world: int) -> dict:
    tcfg, mcfg = cfg.train, cfg.model
    tokens_dir = store.path("tokens")
    meta_path = tokens_dir / f"{recipe}.json"
    if not meta_path.exists():
        raise StoreError(f"no token files for recipe `{recipe}` (run `cleanroom tokenize` first)")
    meta = json.loads(meta_path.read_text())
    train_tokens = open_tokens(tokens_dir, recipe, "train")
    batches = TrainBatches(train_tokens, mcfg.seq_len, cfg.seed)
    val = val_batches(open_tokens(tokens_dir, recipe, "val"), mcfg.seq_len, tcfg.batch_size, tcfg.eval_batches)

    # same init on every rank (DDP also broadcasts rank 0's weights) and in parallel threads
    model = Transformer(mcfg, meta["vocab_size"], seed=cfg.seed).to(device)
    opt = make_optimizer(model, tcfg.lr, tcfg.weight_decay, (tcfg.beta1, tcfg.beta2))

    ckpt_path = store.path(f"checkpoints/{recipe}/last.pt")
    log_path = store.path(f"logs/train/{recipe}.jsonl")
    key = checkpoint_key(cfg, meta)
    start = 0
    state = load_checkpoint(ckpt_path, key, device)
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng_cpu"].cpu())
        if torch.cuda.is_available() and state["rng_cuda"]:
            torch.cuda.set_rng_state_all([s.cpu() for s in state["rng_cuda"]])
        start = int(state["step"])
        say(f"  resuming `{recipe}` from step {start} ({ckpt_path})")
    if rank == 0:
        if start:
            _tail_log(log_path, start)
        else:
            write_text(log_path, "")

    net: torch.nn.Module = model
    if tcfg.compile:
        net = torch.compile(model)
    if world > 1:
        net = DDP(net, device_ids=[device.index] if device.type == "cuda" else None)

    B, T = tcfg.batch_size, mcfg.seq_len
    tokens_per_step = B * T * world
    last_val = float("nan")
    recent: list[float] = []
    train_seconds, t_start, done = 0.0, time.perf_counter(), start
    log = open(log_path, "a") if rank == 0 else None  # noqa: SIM115 (closed in finally)
    quiet = rank != 0
    try:
        with progress(f"train {recipe}", total=tcfg.steps) as task, _quiet(quiet):
            task.set(completed=start)
            for step in range(start, tcfg.steps):
                check_cancelled()
                t0 = time.perf_counter()
                lr = lr_at(step, tcfg)
                for g in opt.param_groups:
                    g["lr"] = lr
                x, y = batches.batch(step, rank, world, B)
                with autocast(device, dtype):
                    _, loss = net(x.to(device, non_blocking=True), y.to(device, non_blocking=True))
                loss.backward()
                if tcfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.grad_clip)
                opt.step()
                opt.zero_grad(set_to_none=True)
                loss_val = loss.detach()
                if world > 1:  # log the mean over ranks (SUM: gloo has no AVG)
                    dist.all_reduce(loss_val, op=dist.ReduceOp.SUM)
                    loss_val /= world
                loss_f = float(loss_val)
                dt = time.perf_counter() - t0
                train_seconds += dt
                recent = (recent + [loss_f])[-20:]
                done = step + 1
                row = {"step": done, "loss": round(loss_f, 5), "lr": lr, "tokens": done * tokens_per_step,
                       "tokens_per_s": round(tokens_per_step / dt, 1)}
                if done % tcfg.eval_every == 0 or done == tcfg.steps:
                    last_val = evaluate(model, val, device, dtype)
                    row["val_loss"] = round(last_val, 5)
                if log is not None:
                    log.write(json.dumps(row) + "\n")
                    log.flush()
                if done % tcfg.ckpt_every == 0 and done < tcfg.steps and rank == 0:
                    save_checkpoint(ckpt_path, model, opt, done, key, {"recipe": recipe})
                tps = (done - start) * tokens_per_step / train_seconds
                task.advance(1, info=f"loss {loss_f:.3f} · val {last_val:.3f} · {tps / 1e3:.1f}k tok/s")
                if stop_after is not None and done >= stop_after:
                    break
    finally:
        if log is not None:
            log.close()
    finished = done >= tcfg.steps
    stats = {
        "final_train_loss": round(sum(recent) / max(1, len(recent)), 5),  # mean of the last <= 20 steps
        "final_val_loss": round(last_val, 5),
        "tokens_seen": done * tokens_per_step,
        "epochs": round(batches.epoch_of(done, world, B), 3),
        "steps": done,
        "resumed_from_step": start,
        "seconds": round(time.perf_counter() - t_start, 2),
        "tokens_per_s": round((done - start) * tokens_per_step / max(train_seconds, 1e-9), 1),
        "params": model.num_params(),
        "device": device.type,
        "dtype": dtype,
        "world_size": world,
    }
    if finished and rank == 0:
        export_hf(model, cfg, store.path("tokenizer.json"), store.path(f"models/{recipe}"))
        ckpt_path.unlink(missing_ok=True)
    if world > 1:
        dist.barrier()  # every rank sees the export before anyone records the stage as done
    return stats


@contextlib.contextmanager
def _quiet(on: bool) -> Iterator[None]:
    """Silence the console on non-zero ranks so a DDP run prints one progress bar."""
    old = console.quiet
    console.quiet = on or old
    try:
        yield
    finally:
        console.quiet = old


def run_train(cfg: ExperimentConfig, store: RunStore, recipe: str) -> StageResult:
    """Pipeline entry point for the per-recipe `train` stage."""
    stats = train_model(cfg, store, recipe)
    say(f"  {recipe}: val loss {stats['final_val_loss']:.3f}, {stats['tokens_seen']:,} tokens "
        f"in {stats['seconds']:.1f}s ({stats['tokens_per_s'] / 1e3:.1f}k tok/s)")
    return StageResult(outputs=[f"models/{recipe}", f"logs/train/{recipe}.jsonl"], stats=stats)


# ---------------------------------------------------------------- torchrun entry point


def main(argv: list[str] | None = None) -> None:
    """`torchrun --nproc_per_node=N -m cleanroom.train.trainer --out DIR [--recipe R] [--preset P]`.

    Rank 0 brings the prerequisites (world, generate, curate, tokenize) up to date while the others
    wait; then every rank runs the `train` stage for the chosen recipes in lockstep.
    """
    from cleanroom.cli import resolve_config
    from cleanroom.config import ConfigError
    from cleanroom.malloc import tune_malloc
    from cleanroom.pipeline import Pipeline

    tune_malloc()
    p = argparse.ArgumentParser(prog="python -m cleanroom.train.trainer", description=main.__doc__)
    p.add_argument("--out", type=Path, required=True, help="run directory")
    p.add_argument("--preset", default=None)
    p.add_argument("--recipe", action="append", default=None, help="only this recipe (repeatable)")
    p.add_argument("--set", dest="sets", action="append", default=None, help="override, e.g. train.steps=100")
    p.add_argument("--force", action="store_true", help="retrain even if up to date")
    args = p.parse_args(argv)
    init_distributed()
    rank, _, _ = _dist_info()
    console.quiet = rank != 0
    try:
        cfg = resolve_config(args.preset, args.out, None, args.sets)
        store = RunStore(args.out)
        if rank == 0:
            Pipeline(cfg, store, recipes=args.recipe).ensure("tokenize")
        if dist.is_initialized():
            dist.barrier()
        pipe = Pipeline(cfg, store, force={"train"} if args.force else set(), recipes=args.recipe)
        pipe.ensure("train")
    except (ConfigError, StoreError) as e:
        console.quiet = False
        console.print(f"[bold red]error:[/] {e}")
        raise SystemExit(1) from None
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
