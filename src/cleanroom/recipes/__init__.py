"""Corpus recipes (web, textbook, filtered_web, mix) and where each recipe's final corpus lives."""

from __future__ import annotations

from cleanroom.config import ExperimentConfig
from cleanroom.store import RunStore


def corpus_dir(cfg: ExperimentConfig, store: RunStore, recipe: str) -> str:
    """The corpus that tokenize/train use: `curated/<recipe>` when curation ran, else `corpora/<recipe>`."""
    curated = f"curated/{recipe}"
    if cfg.curate.enabled and store.path(curated).is_dir():
        return curated
    return f"corpora/{recipe}"
