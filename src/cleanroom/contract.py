"""The stage contract, a leaf every stage imports: what a stage returns, and how it learns to stop.

A stage is a plain function `run_<stage>(cfg, store[, recipe]) -> StageResult` (see `pipeline.py`).
Stages that run beside each other (parallel recipes) call `check_cancelled()` once per step, so the
first failure or Ctrl-C stops the others at their next step. `Cancelled` is a plain `Exception`, never
a `KeyboardInterrupt`: the pipeline drops a sibling's cancellation and re-raises the failure that
caused it, so a full disk is reported as a full disk, not as an interrupt.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

CANCEL = threading.Event()


class Cancelled(Exception):
    """Raised in a stage running beside another one that failed or was interrupted (never shown to a user:
    the pipeline re-raises the cause instead)."""


def check_cancelled() -> None:
    """Long loops call this once per step, so parallel recipes stop soon after one of them fails."""
    if CANCEL.is_set():
        raise Cancelled("stopped because a stage running beside this one failed or was interrupted")


@dataclass
class StageResult:
    """What a stage wrote (paths relative to the run directory) and the statistics its manifest keeps."""

    outputs: list[str]
    stats: dict[str, Any] = field(default_factory=dict)
