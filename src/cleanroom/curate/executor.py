"""Executors run a chain of steps over documents; steps never know how they are executed.

`LocalExecutor` streams one shard of the documents (`rank` of `world_size`; all of them by default)
through the steps in one process (generators: one document at a
time through every step, a batch at a time inside each). A step with a `fit(docs)` method (the
safety classifier, which is cross-fitted on the documents it will judge) is a two-pass step: the
executor materialises the documents that reach it, fits it, then lets them through.

`RayExecutor` (`ray_executor.py`, `runtime.executor = "ray"`) runs the same steps over shards on a
Ray cluster and returns exactly what `LocalExecutor` returns; `stage.make_executor` picks one. Which
one runs is a `runtime` choice, never part of a fingerprint.

`build_steps(cfg, items)` turns `curate.steps` from the config into step objects.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from cleanroom.config import ConfigError, CurateConfig
from cleanroom.curate.base import Document, Removal, Step
from cleanroom.curate.decontam import Decontaminate, EvalItem, Leak
from cleanroom.curate.dedup import ExactDedup, NearDedup
from cleanroom.curate.quality import QualityFilter, QualityThresholds, load_scorer
from cleanroom.curate.safety import SafetyFilter

STEP_NAMES = ("exact_dedup", "near_dedup", "decontaminate", "quality", "safety")


@dataclass
class RunResult:
    """What a chain of steps kept, what it removed (lineage), and each step's statistics."""

    kept: list[Document]
    removed: list[Removal] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    leaks: list[Leak] = field(default_factory=list)
    safety: dict[str, Any] = field(default_factory=dict)


class LocalExecutor:
    """Run steps in order in this process."""

    def __init__(self, steps: list[Step]) -> None:
        self.steps = steps

    def run(self, docs: Iterable[Document], rank: int = 0, world_size: int = 1) -> RunResult:
        """Run every step over this worker's shard (every `world_size`-th document from `rank`)."""
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        stream: Iterable[Document] = docs
        if world_size > 1:
            stream = (d for i, d in enumerate(docs) if i % world_size == rank)
        for step in self.steps:
            fit = getattr(step, "fit", None)
            if fit is not None:
                stream = list(stream)
                t0 = time.perf_counter()
                fit(stream)
                step.stats.seconds += time.perf_counter() - t0
            stream = step.run(stream, rank=rank, world_size=world_size)
        return collect_result(self.steps, list(stream))


class Executor(Protocol):
    def run(self, docs: Iterable[Document], rank: int = 0, world_size: int = 1) -> RunResult: ...


def collect_result(steps: list[Step], kept: list[Document]) -> RunResult:
    """What a finished chain kept, removed (in step order) and measured."""
    result = RunResult(kept=kept)
    for step in steps:
        result.removed += step.removed
        result.steps.append(step.stats.as_dict())
        result.leaks += getattr(step, "leaks", [])
        if isinstance(step, SafetyFilter):
            result.safety = step.metrics
    return result


def build_steps(cfg: CurateConfig, items: list[EvalItem], seed: int = 0, safety: bool = False,
                names: list[str] | None = None) -> list[Step]:
    """Step objects for `names` (default: `cfg.steps`, plus `safety` when asked and not listed)."""
    names = list(names if names is not None else cfg.steps)
    if safety and "safety" not in names:
        names.append("safety")
    if not safety:
        names = [n for n in names if n != "safety"]
    steps: list[Step] = []
    for name in names:
        if name == "exact_dedup":
            steps.append(ExactDedup())
        elif name == "near_dedup":
            steps.append(NearDedup(cfg.shingle_size, cfg.num_perm, cfg.bands, cfg.near_dup_threshold, seed))
        elif name == "decontaminate":
            steps.append(Decontaminate(items, cfg.decontam_ngram, cfg.decontam_ratio, cfg.decontam_min_ngram))
        elif name == "quality":
            thresholds = QualityThresholds(
                min_words=cfg.min_words, max_words=cfg.max_words, max_dup_line_frac=cfg.max_dup_line_frac,
                max_symbol_ratio=cfg.max_symbol_ratio, min_stopword_ratio=cfg.min_stopword_ratio,
                max_boilerplate_line_frac=cfg.max_boilerplate_line_frac, max_top_word_frac=cfg.max_top_word_frac,
                min_classifier_score=cfg.quality_min_score,
            )
            scorer = load_scorer(cfg.quality_classifier) if cfg.quality_classifier else None
            steps.append(QualityFilter(thresholds, scorer))
        elif name == "safety":
            steps.append(SafetyFilter(cfg.safety_blocklist or None, cfg.safety_threshold, cfg.safety_folds, seed))
        else:
            raise ConfigError(f"config key `curate.steps`: unknown step `{name}` (allowed: {', '.join(STEP_NAMES)})")
    return steps
