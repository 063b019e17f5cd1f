"""A model's training log: `logs/train/<name>.jsonl` (one line per step) and, beside it, TensorBoard event
files in `logs/train/<name>/` (`tensorboard --logdir RUN/logs` shows one run per model: loss, val loss, lr
and tokens/s against the step).

The JSONL file is the record every later stage reads (the report's loss figure); the event files are a view
for practitioners, written from the same rows, and off with `runtime.tensorboard = false` (a runtime switch:
in no fingerprint). A resumed run cuts both back to its checkpoint's step: the JSONL lines after it are
dropped (`tail_log`), and TensorBoard is told to hide the events after it (`purge_step`).
"""

from __future__ import annotations

import json
import shutil
import threading
import traceback
from pathlib import Path

from cleanroom.store import RunStore, write_text
from cleanroom.ui import say

# JSONL key -> TensorBoard tag
SCALARS = {"loss": "loss/train", "val_loss": "loss/val", "lr": "lr", "tokens_per_s": "tokens_per_s"}
_warned = False
_hooked = False


def _quiet_event_writer_disk_errors() -> None:
    """TensorBoard writes its events from a thread of its own. On a full disk that thread would print a
    traceback beside the one line the user is told (the training thread meets the same disk and reports it):
    its events are a view, so an OS error in it is dropped (the JSONL log is the record)."""
    global _hooked
    if _hooked:
        return
    previous = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        frames = traceback.extract_tb(args.exc_traceback) if args.exc_traceback else []
        if issubclass(args.exc_type, OSError) and any("tensorboard" in f.filename for f in frames):
            return
        previous(args)

    threading.excepthook = hook
    _hooked = True


def tail_log(path: Path, upto_step: int) -> None:
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


def _summary_writer(logdir: Path, start: int):
    """A TensorBoard writer, or None (with one warning per process) when the package is missing."""
    global _warned
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        if not _warned:
            say("  [yellow]runtime.tensorboard is on but the `tensorboard` package is missing[/] (pip install "
                "tensorboard, or set runtime.tensorboard = false): training logs go to JSONL only")
            _warned = True
        return None
    _quiet_event_writer_disk_errors()
    if not start:
        shutil.rmtree(logdir, ignore_errors=True)  # a fresh run: the events of an earlier one go
    # the rows of steps <= start stay (as in the JSONL file); TensorBoard hides the later ones of earlier runs
    return SummaryWriter(str(logdir), purge_step=start + 1 if start else None, flush_secs=30)


class TrainLog:
    """The log of model `name`, continued from step `start` (0: a fresh log)."""

    def __init__(self, store: RunStore, name: str, start: int, tensorboard: bool) -> None:
        self.path = store.path(f"logs/train/{name}.jsonl")
        if start:
            tail_log(self.path, start)
        else:
            write_text(self.path, "")
        self._file = open(self.path, "a")  # noqa: SIM115 (closed by close())
        self._tb = _summary_writer(store.path(f"logs/train/{name}"), start) if tensorboard else None

    def write(self, row: dict) -> None:
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        if self._tb is not None:
            for key, tag in SCALARS.items():
                if row.get(key) is not None:
                    self._tb.add_scalar(tag, row[key], row["step"])

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            try:
                self._tb.close()
            except OSError:  # a full disk: the events are a view, the JSONL log is the record
                pass
