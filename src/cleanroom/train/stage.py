"""The `train` stage: one Llama-style model per recipe (`trainer.py`), exported for transformers."""

from __future__ import annotations

from cleanroom.config import ExperimentConfig
from cleanroom.contract import StageResult
from cleanroom.store import RunStore
from cleanroom.train.trainer import train_model
from cleanroom.ui import say


def run_train(cfg: ExperimentConfig, store: RunStore, recipe: str) -> StageResult:
    """Pipeline entry point for the per-recipe `train` stage."""
    stats = train_model(cfg, store, recipe)
    say(f"  {recipe}: val loss {stats['final_val_loss']:.3f}, {stats['tokens_seen']:,} tokens "
        f"in {stats['seconds']:.1f}s ({stats['tokens_per_s'] / 1e3:.1f}k tok/s)")
    return StageResult(outputs=[f"models/{recipe}", f"logs/train/{recipe}.jsonl"], stats=stats)
