"""Where and how work runs: device, threads, parallel recipes, bf16 autocast (the `runtime` config).

Nothing here changes what a stage computes (so the `runtime` config section is never part of a
fingerprint), except `autocast`, whose dtype comes from the hashed `train.dtype` / `eval.dtype`.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import platform
import threading
import time

import torch
import torch.distributed as dist

from cleanroom.config import ConfigError, RuntimeConfig


def pick_device(runtime: RuntimeConfig) -> torch.device:
    """`auto` -> CUDA when available, else CPU; asking for CUDA without one is a user error."""
    if runtime.device == "cuda" or (runtime.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError("config key `runtime.device` is \"cuda\" but no CUDA device is available "
                              "(use auto or cpu)")
        if dist.is_available() and dist.is_initialized():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cuda")
    return torch.device("cpu")


def set_threads(runtime: RuntimeConfig) -> None:
    """Use `runtime.threads` torch threads when set (else leave torch's choice, or the parallel split)."""
    if runtime.threads > 0:
        torch.set_num_threads(runtime.threads)


def parallel_jobs(runtime: RuntimeConfig, n_keys: int) -> tuple[int, int]:
    """(recipes run at once, torch threads each) for a per-recipe stage with `n_keys` recipes.

    `runtime.jobs`, or auto: one at a time on CUDA and under torchrun (the device or the process group
    is shared), min(recipes, cores) on a CPU. Threads: `runtime.threads`, or the cores split between jobs.
    """
    cores = os.cpu_count() or 1
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        jobs = 1
    elif runtime.jobs:
        jobs = runtime.jobs
    else:
        jobs = 1 if pick_device(runtime).type == "cuda" else min(n_keys, cores)
    jobs = max(1, min(jobs, n_keys))
    return jobs, runtime.threads or max(1, cores // jobs)


def batch_models(runtime: RuntimeConfig, n_models: int) -> bool:
    """Train `n_models` stale models of a stage as batched groups (`train.batched`)? Never under torchrun
    (each process holds one model's shard of the batch), never for one model, else `runtime.batch_models`."""
    if n_models < 2 or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return False
    return runtime.batch_models is True or runtime.batch_models == "auto"


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (else what `platform` knows, else "unknown")."""
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


# ---------------------------------------------------------------- bf16: measured, not guessed


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
