"""Console output and progress bars shared by every stage.

Stages call `progress(...)` and never touch rich directly, so the whole run shares one live display
(a bar per active task with rate and ETA). Off a terminal (CI, pipes) bars are replaced by one line
per finished task, so logs stay readable.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True, highlight=False)
_progress: Progress | None = None
_depth = 0
_lock = threading.Lock()  # recipes running in parallel threads open and close bars at once


class Task:
    def __init__(self, progress: Progress | None, task_id: int | None, description: str, total: float | None):
        self._p, self._id = progress, task_id
        self.description, self.total, self.done, self.info = description, total, 0.0, ""
        self.start = time.perf_counter()

    def advance(self, n: float = 1, info: str | None = None) -> None:
        self.done += n
        if info is not None:
            self.info = info
        if self._p is not None:
            self._p.update(self._id, advance=n, info=self.info)

    def set(self, completed: float | None = None, info: str | None = None, total: float | None = None) -> None:
        if completed is not None:
            self.done = completed
        if info is not None:
            self.info = info
        if total is not None:
            self.total = total
        if self._p is not None:
            self._p.update(self._id, completed=self.done, info=self.info, total=self.total)


@contextlib.contextmanager
def progress(description: str, total: float | None = None) -> Iterator[Task]:
    """A progress bar for one piece of long work; nested calls share one live display."""
    global _progress, _depth
    if not console.is_terminal:
        task = Task(None, None, description, total)
        yield task
        secs = time.perf_counter() - task.start
        info = f" · {task.info}" if task.info else ""
        console.print(f"  {description}: {task.done:g}{'/' + format(total, 'g') if total else ''} in {secs:.1f}s{info}")
        return
    with _lock:
        task = _open_task(description, total)
    try:
        yield task
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _progress is not None:
                _progress.stop()
                _progress = None


def _open_task(description: str, total: float | None) -> Task:
    global _progress, _depth
    if _progress is None:
        _progress = Progress(
            TextColumn("  [bold]{task.description}"),
            BarColumn(bar_width=28),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=console,
            transient=False,
        )
        _progress.start()
    _depth += 1
    task_id = _progress.add_task(description, total=total, info="")
    return Task(_progress, task_id, description, total)


def say(msg: str) -> None:
    console.print(msg)
