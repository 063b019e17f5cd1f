"""`summary.json`: its schema (pydantic) and how it is assembled from stored results.

Nothing here recomputes a model output: it reads `evals/`, the stage manifests and the world, and
derives accuracies, confidence intervals and the claims' verdicts (see `claims.py`).
"""

from __future__ import annotations

import math
import os
import platform
import sys
from dataclasses import dataclass
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from cleanroom.config import ExperimentConfig
from cleanroom.evals.tasks import chance_level, clusters_of
from cleanroom.malloc import malloc_state
from cleanroom.stages import STAGES, stage_items
from cleanroom.stats import accuracy_ci, per_decile
from cleanroom.store import RunStore

Verdict = Literal["supported", "not supported", "inconclusive"]
# A number that may be undefined (no items, a recipe missing): NaN is stored as JSON null.
Num = Annotated[float | None, BeforeValidator(lambda v: None if isinstance(v, float) and math.isnan(v) else v)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TaskResult(Strict):
    acc: Num
    ci_low: Num
    ci_high: Num
    n: int
    chance: float
    acc_norm: float | None = None


class Comparison(Strict):
    """One paired comparison behind a claim (effect > 0 is the direction the claim predicts). Its interval
    carries the items (`item_se`: the cluster-bootstrap SE of the per-item contrast) and the models
    (`between_model_sd`, pooled over the run's replicates; None when no recipe had two models)."""

    label: str
    effect: Num
    ci_low: Num
    ci_high: Num
    n: int
    verdict: Verdict
    replicates: int | None = None
    between_model_sd: Num = None
    item_se: Num = None

    @property
    def statistic(self) -> str:
        """What the label names before its colon: a null control's "C1 statistic", "C2a statistic", ..."""
        return self.label.split(":", 1)[0]


class Claim(Strict):
    claim: str
    verdict: Verdict
    effect: Num
    ci_low: Num
    ci_high: Num
    detail: str
    comparisons: list[Comparison] = Field(default_factory=list)
    replicates: int | None = None
    between_model_sd: Num = None
    item_se: Num = None


class Control(Strict):
    """A check of the instrument itself: comparisons whose verdicts are known in advance (`expected`),
    or an experiment on the method with no expected answer (`expected` empty, `passed` None)."""

    name: str
    recipes: list[str]
    expected: Literal["inconclusive", "supported", ""]
    comparisons: list[Comparison]
    passed: bool | None
    detail: str


class Controls(Strict):
    """The instrument's own checks: `null` per recipe (the A/A test between its replicates), `leaky`
    (contamination must be detected), `diverse` (an experiment on the method)."""

    null: dict[str, Control] = Field(default_factory=dict)
    leaky: Control | None = None
    diverse: Control | None = None

    def all(self) -> dict[str, Control]:
        """Every control by a display name: `null web`, ..., `leaky`, `diverse`."""
        out = {f"null {r}": c for r, c in self.null.items()}
        out.update({k: c for k, c in (("leaky", self.leaky), ("diverse", self.diverse)) if c is not None})
        return out

    def __bool__(self) -> bool:
        return bool(self.all())


class DecileAcc(Strict):
    decile: int
    acc: Num
    ci_low: Num
    ci_high: Num
    n: int


class TamperPoint(Strict):
    """A model's held-out restricted accuracy after the strongest attack of `steps` fine-tuning steps."""

    steps: int
    acc: Num
    ci_low: Num
    ci_high: Num
    lr: float
    n: int
    attack: str = "qa_other"


class WorldlessRecipe(Strict):
    """A recipe with no world behind its text (`[corpora.NAME]`): where the text came from, what was measured,
    and which claims cannot be measured for it and why (`report/worldless.py`)."""

    kind: str
    origin: str
    docs: int
    tokens: int
    budget: int
    curated_docs: int | None = None
    curated_tokens: int | None = None
    removed: dict[str, int] = Field(default_factory=dict)
    leaked_items: int = 0
    distinct_2: float | None = None
    distinct_3: float | None = None
    requests: dict[str, int] = Field(default_factory=dict)
    val_loss: float | None = None
    measured: list[str] = Field(default_factory=list)
    not_measurable: dict[str, str] = Field(default_factory=dict)


class Summary(Strict):
    name: str
    seed: int
    preset: str
    recipes: list[str]
    results: dict[str, dict[str, TaskResult]]
    # per recipe group (its replicates together): accuracy with an interval over models and items
    group_results: dict[str, dict[str, TaskResult]] = Field(default_factory=dict)
    claims: dict[str, Claim]
    longtail_by_decile: dict[str, list[DecileAcc]]
    tamper: dict[str, list[TamperPoint]]
    controls: Controls = Field(default_factory=Controls)
    data: dict
    timings: dict[str, float]
    # per stage: process CPU seconds, and core_share = CPU seconds / (wall seconds x cores): 1.0 = every core
    # busy for the whole stage (absent for stages whose manifests predate CPU accounting)
    cpu_seconds: dict[str, float] = Field(default_factory=dict)
    core_share: dict[str, float] = Field(default_factory=dict)
    environment: dict
    worldless: dict[str, WorldlessRecipe] = Field(default_factory=dict)


def environment() -> dict:
    import pyarrow
    import torch
    import transformers

    from cleanroom.runtime import cpu_model

    cpu = cpu_model()
    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "numpy": np.__version__,
        "pyarrow": pyarrow.__version__,
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "malloc": malloc_state(),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
    }


def task_result(rows: list[dict], n_boot: int, seed: int) -> TaskResult:
    correct = np.array([bool(r["correct"]) for r in rows], dtype=float)
    acc, lo, hi = accuracy_ci(correct, n_boot, seed, clusters_of(rows))
    chance = chance_level(rows)
    acc_norm = None
    if rows and "correct_norm" in rows[0]:
        acc_norm = float(np.mean([bool(r["correct_norm"]) for r in rows]))
    return TaskResult(acc=acc, ci_low=lo, ci_high=hi, n=len(rows), chance=chance, acc_norm=acc_norm)


def timings(store: RunStore, cfg: ExperimentConfig) -> dict[str, float]:
    """Wall seconds per stage, from the manifests: when the stage last ran.

    Per-item stages count the time any item was running (the union of their intervals), so recipes
    that ran in parallel are not counted twice.
    """
    return {name: u.seconds for name, u in stage_usage(store, cfg).items()}


@dataclass(frozen=True)
class StageUsage:
    """How long a stage took and how much of the machine it used (the last time it ran)."""

    seconds: float
    cpu_seconds: float | None  # None: a manifest from before CPU time was recorded
    core_share: float | None  # cpu_seconds / (seconds x cores)
    cores: int


def stage_usage(store: RunStore, cfg: ExperimentConfig) -> dict[str, StageUsage]:
    """Per stage with manifests: wall seconds (the union of its keys' intervals), CPU seconds (the keys'
    shares sum to what the process used: pipeline.CpuMeter) and the share of the cores that is."""
    out: dict[str, StageUsage] = {}
    for name, stage in STAGES.items():
        keys = [f"{name}/{r}" for r in stage_items(cfg, stage.over)] if stage.per_recipe else [name]
        ms = [m for k in keys if (m := store.manifest(k)) is not None]
        if not ms:
            continue
        if all(m.ended for m in ms):
            seconds = round(busy_seconds([(m.ended - m.seconds, m.ended) for m in ms]), 2)
        else:  # manifests from before `ended` was recorded: recipes ran one after another
            seconds = round(sum(m.seconds for m in ms), 2)
        cpu = share = None
        cores = max(m.cores for m in ms)
        if all(m.cpu_seconds is not None for m in ms) and cores:
            cpu = round(sum(m.cpu_seconds for m in ms), 2)
            share = round(cpu / (seconds * cores), 3) if seconds > 0 else None
        out[name] = StageUsage(seconds, cpu, share, cores)
    return out


def busy_seconds(intervals: list[tuple[float, float]]) -> float:
    """Length of the union of (start, end) intervals."""
    total, reach = 0.0, -math.inf
    for start, end in sorted(intervals):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def data_section(store: RunStore) -> dict:
    """Corpus statistics from the generate/curate/tokenize manifests (whatever exists)."""
    data: dict = {}
    for key in ("generate", "curate", "tokenize"):
        m = store.manifest(key)
        if m is not None:
            data[key] = m.stats
    return data


def decile_table(rows: list[dict], n_boot: int, seed: int) -> list[DecileAcc]:
    return [DecileAcc(**d) for d in per_decile([r["decile"] for r in rows], [bool(r["correct"]) for r in rows],
                                               n_boot, seed, clusters_of(rows))]


def load_eval_rows(store: RunStore, recipe: str, task: str) -> list[dict]:
    return store.read_parquet(f"evals/{recipe}/{task}.parquet").to_pylist()


def preset_of(cfg: ExperimentConfig) -> str:
    return cfg.name
