"""The runner of the stage graph (`cleanroom.stages`).

A stage is a plain function `run_<stage>(cfg, store[, item]) -> StageResult` that reads and writes
the store. The runner (`Pipeline.ensure`) runs missing prerequisites first, skips a stage whose
config fingerprint and inputs (the output digests of the stages it depends on) are unchanged and
whose outputs still verify, and records a manifest when a stage finishes. Per-item stages have one
manifest per item, so `--recipe web` redoes one model, not all of them. Items are the `corpora`
without a world (collect: each hashes only its own table, and the files it reads), the trained models
(train: every recipe's replicates), safeguarded arms (safeguard), models = trained + arms (eval), and the
attacked models = models plus a random init (tamper). A per-item stage's dependency "model" is whichever
stage made that model.

Stage functions are imported lazily ("module:function"), so `cleanroom generate` on a finished run
answers in well under a second without importing torch.

Per-recipe stages marked `parallel` (train, eval, tamper) run several recipes at once, in threads
(`runtime.jobs`; on a CPU the cores are split between them: two 1-thread models train ~1.2x faster on
2 cores than one 2-thread model after the other, because these models are too small to keep two
cores busy). A stage with a `batch_func` (train) instead settles its stale keys in batched groups
(`runtime.batch_models`): `jobs` groups at once, each group one call that trains its models together.
The first error or Ctrl-C stops the other recipes at their next step (`contract.check_cancelled`), and
that first error, never a sibling's cancellation, is what is raised. How many run at once, and whether
they are batched, is a `runtime` choice, never part of a fingerprint.

An error escaping a stage carries the stage's key (`CleanroomError.stage`); an `OSError` (or a library's
failure on a full disk) becomes `store.os_error`'s one line naming the path, or the run directory.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait

from cleanroom.config import SCRATCH, ExperimentConfig, base_recipe, model_group
from cleanroom.contract import CANCEL, Cancelled, StageResult, check_cancelled
from cleanroom.errors import CleanroomError
from cleanroom.stages import MODEL_MAKERS, STAGES, Stage, stage_items
from cleanroom.store import Manifest, RunStore, StoreError, os_error, write_text
from cleanroom.ui import say


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def process_cpu_seconds() -> float:
    """CPU seconds this process has used, every thread, plus the children it has reaped (Ray, torchrun)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class CpuMeter:
    """Process CPU seconds per running stage key, so that an idle core shows in every run's timings.

    Recipes of a parallel stage run in threads of this one process, so a thread cannot tell its CPU time
    from its neighbours' (torch's intra-op threads are not its own either). Instead the process's CPU time
    between two events (a key starting or ending) is split equally among the keys running then; a
    stage's keys then sum to what the process used while the stage ran, nothing counted twice."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[object, float] = {}
        self._last = process_cpu_seconds()

    def _share_out(self) -> None:
        now = process_cpu_seconds()
        for token in self._running:
            self._running[token] += (now - self._last) / len(self._running)
        self._last = now

    @contextlib.contextmanager
    def measure(self) -> Iterator[dict]:
        """`with meter.measure() as used: ...`; afterwards `used["cpu_seconds"]` is this block's share."""
        token, used = object(), {"cpu_seconds": None}
        with self._lock:
            self._share_out()
            self._running[token] = 0.0
        try:
            yield used
        finally:
            with self._lock:
                self._share_out()
                used["cpu_seconds"] = self._running.pop(token)


def _resolve(spec: str) -> Callable:
    """The function a "module:function" spec names (imported on first use: stages import torch lazily)."""
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


class Pipeline:
    """Runs stages of one experiment in one run directory."""

    def __init__(self, cfg: ExperimentConfig, store: RunStore, force: set[str] | None = None,
                 recipes: list[str] | None = None):
        """`recipes`: only these recipes / models (`--recipe`); default every one."""
        self.cfg, self.store = cfg, store
        self.force = force or set()
        self.only = set(recipes) if recipes else None
        unknown = sorted((self.only or set()) - set(cfg.attacked()) - set(cfg.groups()))
        if unknown:
            raise StoreError(f"unknown recipe or model `{unknown[0]}` (configured: {', '.join(cfg.attacked())})")
        self.on_done: Callable[[str], None] | None = None  # called after each stage key is settled
        self.done: dict[str, Manifest | None] = {}
        self.ran: list[str] = []
        self.skipped: list[str] = []
        self.missing: list[str] = []
        self.cpu = CpuMeter()
        self._save_config()

    def _save_config(self) -> None:
        path = self.store.path("config.toml")
        text = self.cfg.to_toml()
        if not path.exists() or path.read_text() != text:
            write_text(path, text)

    def items(self, over: str) -> list[str]:
        """The items of a per-item stage (trained, arms, models, attacked), within `--recipe` if given: a
        recipe or a group (`web+unlearn`) names all its replicates, a model name (`web~1`) that model."""
        return [r for r in stage_items(self.cfg, over)
                if self.only is None or r in self.only or model_group(r) in self.only]

    def keys(self, name: str) -> list[str]:
        stage = STAGES[name]
        return [f"{name}/{r}" for r in self.items(stage.over)] if stage.per_recipe else [name]

    def producer(self, stage: str, item: str) -> list[str]:
        """The stage key that made `item`'s model (the dependency "model" of stage `stage`): a safeguard is
        applied to its base recipe's model; an arm's model comes from its safeguard; a random init from none."""
        if stage == "safeguard":
            return [f"train/{item.partition('+')[0]}"]
        if item == SCRATCH:
            return []
        return [f"safeguard/{item}"] if "+" in item else [f"train/{item}"]

    def ensure(self, name: str) -> list[Manifest | None]:
        """Bring a stage (every recipe of a per-recipe stage) up to date; return its manifests."""
        keys = self.keys(name)
        if STAGES[name].parallel and len(keys) > 1:
            for dep in STAGES[name].deps:  # whole stages first, so they too run their items in parallel
                for d in (MODEL_MAKERS[name] if dep == "model" else (dep,)):
                    self.ensure(d)
            stale = [k for k in keys if self._stale(k)]
            if len(stale) > 1:
                from cleanroom.runtime import batch_models, parallel_jobs  # torch: only once a torch stage runs

                # the split depends on the stage's key count, not on how many are stale, so a resumed
                # run trains with the same threads per model as the run it resumes
                jobs, threads = parallel_jobs(self.cfg.runtime, len(keys))
                if STAGES[name].batch_func and batch_models(self.cfg.runtime, len(stale)):
                    groups = min(jobs, len(stale))
                    self._run_parallel([tuple(stale[i::groups]) for i in range(groups)], groups, threads)
                elif jobs > 1:
                    self._run_parallel(stale, min(jobs, len(stale)), threads)
        return [self._ensure_key(k) for k in keys]

    def _run_parallel(self, keys: list[str] | list[tuple[str, ...]], jobs: int, threads: int) -> None:
        """Settle `keys` (their prerequisites already settled) `jobs` at a time, `threads` torch threads each.
        A tuple of keys is one batched group: its stage's `batch_func` settles them together."""
        import torch

        before = torch.get_num_threads()

        failures: list[BaseException] = []  # in the order they happened; a sibling's `Cancelled` is not one

        def work(key: str | tuple[str, ...]) -> None:
            torch.set_num_threads(threads)
            try:
                check_cancelled()  # a key still queued when another failed never starts
                if isinstance(key, tuple) and len(key) > 1:
                    self._settle_batch(key)
                else:
                    self._ensure_key(key[0] if isinstance(key, tuple) else key)
            except Cancelled:
                raise
            except BaseException as e:
                failures.append(e)
                CANCEL.set()  # the other keys stop at their next step
                raise

        CANCEL.clear()
        pool = ThreadPoolExecutor(jobs, thread_name_prefix="stage")
        futures = [pool.submit(work, k) for k in keys]
        try:
            wait(futures)
            if failures:
                raise failures[0]  # the root cause, whichever key it came from
            for f in futures:
                f.result()
        except BaseException:
            CANCEL.set()  # Ctrl-C here: the other keys stop at their next step
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            CANCEL.clear()
            torch.set_num_threads(before)

    def _settle_batch(self, keys: tuple[str, ...]) -> None:
        """Run one per-recipe stage for several stale keys in one call of its `batch_func` (the models of
        a batched group train together); each key still gets its own manifest, as if settled alone."""
        name = keys[0].partition("/")[0]
        stage = STAGES[name]
        recipes = [k.partition("/")[2] for k in keys]
        inputs = {k: self._inputs(k) for k in keys}
        for k in keys:
            say(f"[bold cyan]▶ {k}[/]: {stage.doc} (batched: {', '.join(recipes)})")
            self.store.invalidate(k)
        t0 = time.perf_counter()
        with self._naming(f"{name} ({', '.join(recipes)})"):
            with self.cpu.measure() as used:
                results: dict[str, StageResult] = _resolve(stage.batch_func)(self.cfg, self.store, recipes)
            seconds = time.perf_counter() - t0
            for k, recipe in zip(keys, recipes, strict=True):  # the group's models share its wall time and CPU
                self._record(k, self._fingerprint(stage, recipe), inputs[k], results[recipe], seconds,
                             used["cpu_seconds"] / len(keys))
                if self.on_done is not None:
                    self.on_done(k)

    def _dep_keys(self, stage: Stage, item: str | None) -> list[str]:
        out = []
        for d in stage.deps:
            if d == "model":
                out += self.producer(stage.name, item or "")
            elif STAGES[d].per_recipe:
                out += self.keys(d)
            else:
                out.append(d)
        return out

    def _ensure_key(self, key: str) -> Manifest | None:
        if key in self.done:
            return self.done[key]
        m = self._settle(key)
        if self.on_done is not None:
            self.on_done(key)
        return m

    def _inputs(self, key: str) -> dict[str, str]:
        """Digests of the key's prerequisites (of the files it reads from them), settling them first, and of
        what it reads from outside the run directory."""
        name, _, item = key.partition("/")
        reads = dict(STAGES[name].reads)
        inputs = {}
        if STAGES[name].external:
            digest = _resolve(STAGES[name].external)(self.cfg, item)
            if digest:
                inputs["external"] = digest
        for dk in self._dep_keys(STAGES[name], item or None):
            m = self._ensure_key(dk)
            if m is not None:
                prefixes = reads.get(dk.partition("/")[0])
                inputs[dk] = m.digest_of(None if prefixes is None else tuple(
                    p.format(corpus=base_recipe(item), base=base_recipe(item)) for p in prefixes))
        return inputs

    def _fingerprint(self, stage: Stage, item: str = "") -> str:
        sections = [s.format(item=item) for s in stage.sections]
        return f"{self.cfg.fingerprint(*sections)}-v{stage.version}"

    def _stale(self, key: str) -> bool:
        """Whether settling `key` would run its stage (prerequisites must already be settled)."""
        name, _, item = key.partition("/")
        stage = STAGES[name]
        if key in self.done or stage.func is None:
            return False
        return not self._current(name, item, self.store.manifest(key), self._inputs(key))

    def _current(self, name: str, item: str, old: Manifest | None, inputs: dict[str, str]) -> bool:
        """Is the recorded run of a stage key still valid: not forced, same fingerprint, same inputs?"""
        return (name not in self.force and old is not None
                and old.fingerprint == self._fingerprint(STAGES[name], item) and old.inputs == inputs)

    def _settle(self, key: str) -> Manifest | None:
        name, _, recipe = key.partition("/")
        stage = STAGES[name]
        inputs = self._inputs(key)
        if stage.func is None:
            if name not in self.missing:
                self.missing.append(name)
                say(f"[yellow]· {name}[/]: not built yet in this version of cleanroom — skipped")
            self.done[key] = None
            return None
        fingerprint = self._fingerprint(stage, recipe)
        old = self.store.manifest(key)
        if self._current(name, recipe, old, inputs):
            self.store.verify(old)
            say(f"[dim]· {key}: up to date, skipped (--force redoes it)[/]")
            self.skipped.append(key)
            self.done[key] = old
            return old
        say(f"[bold cyan]▶ {key}[/]: {stage.doc}")
        self.store.invalidate(key)
        fn = _resolve(stage.func)
        t0 = time.perf_counter()
        with self._naming(key):
            with self.cpu.measure() as used:
                result: StageResult = fn(self.cfg, self.store, recipe) if stage.per_recipe else fn(self.cfg, self.store)
            return self._record(key, fingerprint, inputs, result, time.perf_counter() - t0, used["cpu_seconds"])

    @contextlib.contextmanager
    def _naming(self, key: str) -> Iterator[None]:
        """An error escaping a stage (or its manifest) names the stage, and the path for an OS error."""
        try:
            yield
        except Cancelled:
            raise
        except Exception as e:
            error = e if isinstance(e, CleanroomError) else os_error(e, self.store.root)
            if error is None:  # a bug: keep its traceback
                raise
            error.stage = error.stage or key
            if error is e:
                raise
            raise error from e

    def _record(self, key: str, fingerprint: str, inputs: dict[str, str], result: StageResult,
                seconds: float, cpu_seconds: float | None = None) -> Manifest:
        """Write a finished key's manifest (wall and CPU seconds) and note it as run."""
        cores = usable_cores()
        m = self.store.finish(key, fingerprint, inputs, result.outputs, result.stats, seconds, cpu_seconds, cores)
        share = "" if cpu_seconds is None else f" · {cpu_seconds / max(seconds * cores, 1e-9):.0%} of {cores} cores"
        say(f"[green]✓ {key}[/] in {seconds:.1f}s{share}")
        self.ran.append(key)
        self.done[key] = m
        return m
