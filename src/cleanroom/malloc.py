"""glibc malloc settings for CPU training: reuse freed memory instead of mapping it fresh every step.

PyTorch's CPU allocator takes each tensor from `malloc`. glibc serves requests above its mmap threshold
(32 MiB at most) with a fresh `mmap` and gives them back with `munmap`, and per-thread arenas are mmap'd
heaps of their own. A step's logits and their gradients (16 sequences x 128 x 4096 fp32 = 33.5 MB
each) therefore arrive as untouched pages on every step: ~38k minor page faults per step, and ~12% of a
one-thread step spent in the kernel zeroing pages on the 2-vCPU EPYC VM. Three `mallopt` settings keep
freed memory in one heap for reuse:

- `M_MMAP_MAX = 0`: no mmap'd chunks; large blocks come from the heap too,
- `M_TRIM_THRESHOLD = 2 GiB - 1`: keep the heap's free top instead of giving it back at each free,
- `M_ARENA_MAX = 1`: one heap for all threads (recipes train in parallel threads; per-thread arenas
  create and drop mmap'd heaps around big tensors, which brings the faults back).

Only where memory comes from changes, not what is computed: losses are bit-identical with and without
(`bench/malloc.py` checks that and measures the speed, key `malloc_tuned_vs_default`). The price is that a
process keeps up to its peak heap until it exits. `M_ARENA_MAX` only takes effect before a second
thread allocates, so `tune_malloc()` runs before any stage starts (`cleanroom.runtime.apply`, from the
CLI and the torchrun entry point). `runtime.malloc = "default"` (or the environment variable
`CLEANROOM_MALLOC=default`, which wins) leaves glibc's defaults; on other C libraries this is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8  # from glibc's malloc.h
TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int
_state = "default"


def _libc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") else None


def tune_malloc(choice: str = "tuned") -> str:
    """Apply the settings above (once per process) unless `choice` or `$CLEANROOM_MALLOC` is "default";
    returns "tuned" or "default" (opted out, or not glibc)."""
    global _state
    if _state == "tuned" or os.environ.get("CLEANROOM_MALLOC", choice) == "default":
        return _state
    libc = _libc()
    if libc is not None and all(libc.mallopt(p, v) == 1 for p, v in
                                ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, TRIM_THRESHOLD))):
        _state = "tuned"
    return _state


def malloc_state() -> str:
    """"tuned" when `tune_malloc` applied its settings in this process, else "default"."""
    return _state
