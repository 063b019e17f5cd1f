"""The trainer: one model per recipe, AdamW + warmup/cosine, bf16 autocast, checkpoints, DDP.

    cleanroom train --preset smoke --out runs/smoke [--recipe web]   # one process (train/stage.py)
    torchrun --nproc_per_node=2 -m cleanroom.train --out runs/smoke   # DDP, gloo CPU / NCCL CUDA (__main__.py)

What each piece is for:
- bf16 autocast (CPU and CUDA): matmuls run in bf16 (AVX512-BF16 / AMX on CPU, tensor cores on
  CUDA) while weights, optimizer state and the loss stay fp32, so no loss scaling is needed.
- Warmup then cosine decay to `min_lr_ratio * lr`: the usual recipe for short runs.
- `train.optimizer = "muon"` puts the blocks' matrices on Muon (muon.py) at `train.muon_lr`, on the same
  schedule (`set_lr`); off by default: on a 2-core CPU it saved about what its Newton-Schulz step costs
  (docs/performance.md).
- Data order is a pure function of (seed, step, rank) (see `data.py`), so a checkpoint only needs
  the model, the optimizer, the step and the RNG state to resume *exactly* where it stopped; a run
  killed with SIGKILL and restarted ends where an uninterrupted run ends.
- Checkpoints (`checkpoints/<recipe>/last.pt`) are written atomically (temp file + rename) and hold
  only tensors and plain values, loaded with `torch.load(weights_only=True)`: no unpickling of code.
  They carry a key (config + token files) and are ignored if the run's config changed. They are
  deleted once the model is exported.
- Outputs: `models/<recipe>/` (Hugging Face format, see export.py) and `logs/train/<recipe>.jsonl`
  (one line per step: step, loss, lr, tokens/s, and val_loss at evaluation steps), with TensorBoard event
  files beside it in `logs/train/<recipe>/` unless `runtime.tensorboard` is off (log.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from cleanroom.config import ExperimentConfig, RuntimeConfig, TrainConfig, base_recipe, train_seed
from cleanroom.contract import check_cancelled
from cleanroom.runtime import autocast, pick_device, resolve_dtype
from cleanroom.store import RunStore, StoreError, atomic_path
from cleanroom.train.data import TrainBatches, open_tokens, val_batches
from cleanroom.train.export import export_hf
from cleanroom.train.log import TrainLog
from cleanroom.train.model import Transformer
from cleanroom.train.muon import Muon, is_hidden_matrix
from cleanroom.ui import console, progress, say


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float,
                   betas: tuple[float, float] = (0.9, 0.95), muon_lr: float | None = None) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices (linear weights, embeddings) only, not on norm gains; with
    `muon_lr`, Muon (muon.py) on the blocks' matrices at that lr, AdamW on the rest."""
    return optimizer_for(list(model.named_parameters()), lr, weight_decay, betas, muon_lr, lead=0)


def optimizer_for(named: list[tuple[str, torch.nn.Parameter]], lr: float, weight_decay: float,
                  betas: tuple[float, float], muon_lr: float | None, lead: int) -> torch.optim.AdamW:
    """The optimizer over `named` parameters with `lead` stacked model dimensions (0 for one model; the
    batched trainer's [N, ...] parameters have 1): decay on what is a matrix per model, not on the norm
    gains. The groups keep the module's parameter order, so model i's state is what its own optimizer holds."""
    named = [(n, p) for n, p in named if p.requires_grad]
    hidden = [p for n, p in named if muon_lr is not None and is_hidden_matrix(n, p, lead)]
    rest = [p for _, p in named if not any(p is h for h in hidden)]
    decay = [p for p in rest if p.dim() - lead >= 2]
    no_decay = [p for p in rest if p.dim() - lead < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if muon_lr is None:
        return adamw(groups, lr, betas)
    groups.append({"params": hidden, "weight_decay": 0.0, "muon": True, "lr": muon_lr, "lr_scale": muon_lr / lr})
    return Muon(groups, lr, betas, fused=_fused_ok(named))


def _fused_ok(named: list) -> bool:
    return bool(named) and named[0][1].device.type in ("cpu", "cuda")


def adamw(groups: list[dict], lr: float, betas: tuple[float, float]) -> torch.optim.AdamW:
    """AdamW over parameter groups, fused where the device has the kernel (one op for all params)."""
    first = next((p for g in groups for p in g["params"]), None)
    device_type = first.device.type if first is not None else "cpu"
    try:
        return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=device_type in ("cpu", "cuda"))
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(groups, lr=lr, betas=betas)


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    """Every group's lr from the schedule's value: Muon's groups scale it by their `lr_scale`."""
    for g in opt.param_groups:
        g["lr"] = lr * g.get("lr_scale", 1.0)


def train_optimizer(model: torch.nn.Module, tcfg: TrainConfig, lead: int = 0) -> torch.optim.AdamW:
    """The optimizer `train.optimizer` names, for a model (lead=0) or N stacked models (lead=1)."""
    muon_lr = tcfg.muon_lr if tcfg.optimizer == "muon" else None
    return optimizer_for(list(model.named_parameters()), tcfg.lr, tcfg.weight_decay, (tcfg.beta1, tcfg.beta2),
                         muon_lr, lead)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to `lr`, then cosine decay to `min_lr_ratio * lr` at the last step."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, cfg.steps - cfg.warmup_steps)
    progress_ = min(1.0, (step - cfg.warmup_steps) / span)
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + 0.5 * (cfg.lr - floor) * (1.0 + math.cos(math.pi * progress_))


# ---------------------------------------------------------------- distributed


def dist_info() -> tuple[int, int, int]:
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


def _set_threads(runtime: RuntimeConfig, world_size: int) -> None:
    if runtime.threads > 0:
        torch.set_num_threads(runtime.threads)
    elif world_size > 1:  # processes on one machine share its cores
        local = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local))


# ---------------------------------------------------------------- checkpoints


def checkpoint_key(cfg: ExperimentConfig, token_meta: dict) -> str:
    """A checkpoint is valid for the same model/train config, seed, world size and token files."""
    _, _, world = dist_info()
    payload = "|".join(str(v) for v in (cfg.fingerprint("model", "train"), token_meta["tokenizer_sha256"],
                                        token_meta["train_tokens"], world))
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def save_checkpoint(path: Path, model: Transformer, opt: torch.optim.Optimizer, step: int, key: str,
                    extra: dict) -> None:
    save_state(path, model.state_dict(), opt.state_dict(), step, key, extra)


def save_state(path: Path, model_state: dict, opt_state: dict, step: int, key: str, extra: dict) -> None:
    """Write one model's checkpoint atomically (the batched trainer writes each model's in this format)."""
    state = {
        "key": key,
        "step": step,
        "model": model_state,
        "optimizer": opt_state,
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


def train_model(cfg: ExperimentConfig, store: RunStore, recipe: str, stop_after: int | None = None) -> dict:
    """Train (or resume) `recipe`'s model; export it; return stats. `stop_after` (tests) stops early."""
    tcfg = cfg.train
    init_distributed()
    rank, _, world = dist_info()
    device = pick_device(cfg.runtime)
    dtype = resolve_dtype(device, tcfg.dtype)
    threads_before = torch.get_num_threads()
    _set_threads(cfg.runtime, world)
    try:
        return _train(cfg, store, recipe, stop_after, device, dtype, rank, world)
    finally:
        torch.set_num_threads(threads_before)  # later stages in this process get every core back


def _train(cfg: ExperimentConfig, store: RunStore, recipe: str, stop_after: int | None, device: torch.device,
           dtype: str, rank: int, world: int) -> dict:
    tcfg, mcfg = cfg.train, cfg.model
    tokens_dir = store.path("tokens")
    corpus = base_recipe(recipe)  # a replicate trains on its recipe's tokens, from its own seed
    seed = train_seed(cfg.seed, recipe)
    meta_path = tokens_dir / f"{corpus}.json"
    if not meta_path.exists():
        raise StoreError(f"no token files for recipe `{corpus}` (run `cleanroom tokenize` first)")
    meta = json.loads(meta_path.read_text())
    train_tokens = open_tokens(tokens_dir, corpus, "train")
    batches = TrainBatches(train_tokens, mcfg.seq_len, seed)
    val = val_batches(open_tokens(tokens_dir, corpus, "val"), mcfg.seq_len, tcfg.batch_size, tcfg.eval_batches)

    # same init on every rank (DDP also broadcasts rank 0's weights) and in parallel threads
    model = Transformer(mcfg, meta["vocab_size"], seed=seed).to(device)
    opt = train_optimizer(model, tcfg)

    ckpt_path = store.path(f"checkpoints/{recipe}/last.pt")
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

    net: torch.nn.Module = model
    if cfg.runtime.compile:
        net = torch.compile(model)
    if world > 1:
        net = DDP(net, device_ids=[device.index] if device.type == "cuda" else None)

    B, T = tcfg.batch_size, mcfg.seq_len
    tokens_per_step = B * T * world
    last_val = float("nan")
    recent: list[float] = []
    train_seconds, t_start, done = 0.0, time.perf_counter(), start
    log = TrainLog(store, recipe, start, cfg.runtime.tensorboard) if rank == 0 else None
    quiet = rank != 0
    try:
        with progress(f"train {recipe}", total=tcfg.steps) as task, _quiet(quiet):
            task.set(completed=start)
            for step in range(start, tcfg.steps):
                check_cancelled()
                t0 = time.perf_counter()
                lr = lr_at(step, tcfg)
                set_lr(opt, lr)
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
                    log.write(row)
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
