"""Curation: datatrove-style steps (exact and near dedup, decontamination, quality, safety) with lineage.

Each step is a small object whose `run(docs, rank, world_size)` yields the documents it keeps and
records statistics and lineage rows; `executor.LocalExecutor` chains steps; `stage.run_curate` is
the pipeline stage and `stage.curate_parquet` the standalone entry point.
"""

from cleanroom.curate.base import Document, Removal, Step, StepStats
from cleanroom.curate.decontam import Decontaminate, EvalItem
from cleanroom.curate.dedup import ExactDedup, NearDedup
from cleanroom.curate.executor import LocalExecutor, RunResult, build_steps
from cleanroom.curate.quality import QualityFilter
from cleanroom.curate.safety import SafetyFilter

__all__ = [
    "Decontaminate", "Document", "EvalItem", "ExactDedup", "LocalExecutor", "NearDedup", "QualityFilter",
    "Removal", "RunResult", "SafetyFilter", "Step", "StepStats", "build_steps",
]
