"""The training bench's fixed baseline: nanoGPT keeps 16-sequence steps whatever batch the preset takes."""

import sys
from pathlib import Path

import pytest

from cleanroom.config import load_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
tt = pytest.importorskip("train_throughput")


def test_the_baseline_keeps_its_batch_and_the_presets_tokens():
    t = load_config("default").train
    b = tt.baseline_schedule(t)
    assert b.batch_size == tt.BASELINE_BATCH == 16
    assert b.steps * b.batch_size == t.steps * t.batch_size  # the same tokens
    assert b.warmup_steps * b.batch_size == t.warmup_steps * t.batch_size  # the same warmup share
    assert (b.lr, b.min_lr_ratio, b.weight_decay) == (t.lr, t.min_lr_ratio, t.weight_decay)
    large = load_config("large").train  # already 16-sequence steps: unchanged
    assert tt.baseline_schedule(large) == large


@pytest.mark.parametrize("batch", [2, 4, 8, 16])
def test_every_side_validates_at_the_same_token_counts(batch):
    t = load_config("default", overrides=[f"train.batch_size={batch}"]).train
    assert tt.every(10, t) * batch == 10 * tt.BASELINE_BATCH
