"""The `train` stage: one Llama-style model per recipe (`trainer.py`), exported for transformers.

Several stale recipes train together as one batched model (`batched.py`, `runtime.batch_models`); each
still gets its own manifest, log, checkpoint and export, with the numbers it gets when trained alone."""

from __future__ import annotations

from cleanroom.config import ExperimentConfig
from cleanroom.contract import StageResult
from cleanroom.store import RunStore
from cleanroom.train.batched import recipe_members, train_batched
from cleanroom.train.trainer import train_model
from cleanroom.ui import say


def run_train(cfg: ExperimentConfig, store: RunStore, recipe: str) -> StageResult:
    """Pipeline entry point for the per-recipe `train` stage."""
    stats = train_model(cfg, store, recipe)
    say(f"  {recipe}: val loss {stats['final_val_loss']:.3f}, {stats['tokens_seen']:,} tokens "
        f"in {stats['seconds']:.1f}s ({stats['tokens_per_s'] / 1e3:.1f}k tok/s)")
    return StageResult(outputs=[f"models/{recipe}", f"logs/train/{recipe}.jsonl"], stats=stats)


def run_train_batched(cfg: ExperimentConfig, store: RunStore, recipes: list[str]) -> dict[str, StageResult]:
    """Pipeline entry point for several recipes' models trained together (one StageResult each)."""
    stats = train_batched(cfg, store, recipe_members(cfg, recipes))
    out = {}
    for recipe in recipes:
        s = stats[recipe]
        say(f"  {recipe}: val loss {s['final_val_loss']:.3f}, {s['tokens_seen']:,} tokens "
            f"in {s['seconds']:.1f}s ({s['batched_models']} models together, "
            f"{s['tokens_per_s'] / 1e3:.1f}k tok/s each)")
        out[recipe] = StageResult(outputs=[f"models/{recipe}", f"logs/train/{recipe}.jsonl"], stats=s)
    return out
