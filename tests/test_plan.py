"""The GPU dry run (`cleanroom run --dry-run`): its parameter and FLOP counts are the real model's, its
activation estimate matches what autograd saves in a real training step, and impossible or oversized
presets are refused with a one-line error. No GPU is needed (none is available where these tests run)."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from cleanroom.cli import app
from cleanroom.config import ConfigError, load_config
from cleanroom.train.model import Transformer
from cleanroom.train.plan import GIB, param_count, parse_memory, plan, saved_bytes_per_token
from cleanroom.train.plan import flops_per_token as planned_flops


@pytest.mark.parametrize("preset", ["smoke", "default", "large", "validate", "gpu"])
def test_parameter_and_flop_counts_are_the_models(preset):
    cfg = load_config(preset)
    vocab = cfg.tokenizer.vocab_size
    with torch.device("meta"):  # shapes only: the gpu preset's 88M parameters allocate nothing
        model = Transformer(cfg.model, vocab)
    assert param_count(cfg.model, vocab) == model.num_params()
    assert planned_flops(cfg.model, vocab) == model.flops_per_token()
    untied = cfg.model.model_copy(update={"tie_embeddings": False, "n_kv_heads": cfg.model.n_heads})
    with torch.device("meta"):
        assert param_count(untied, vocab) == Transformer(untied, vocab).num_params()


def _saved_per_sequence(cfg, vocab: int, bf16: bool) -> int:
    """Bytes autograd saves for one more sequence in a batch (batch 2 minus batch 1): what scales with tokens."""
    torch.manual_seed(0)
    model = Transformer(cfg.model, vocab)
    out = []
    for batch in (1, 2):
        storages: dict[int, int] = {}

        def pack(t: torch.Tensor, storages: dict[int, int] = storages) -> torch.Tensor:
            s = t.untyped_storage()
            storages[s.data_ptr()] = s.nbytes()
            return t

        x = torch.randint(vocab, (batch, cfg.model.seq_len))
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), \
                torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            _, loss = model(x, x)
        loss.backward()
        out.append(sum(storages.values()))
    return out[1] - out[0]


@pytest.mark.parametrize("preset, kv_heads", [("smoke", None), ("default", None), ("default", 2)])
@pytest.mark.parametrize("bf16", [False, True])
def test_activation_estimate_matches_what_autograd_saves(preset, kv_heads, bf16):
    cfg = load_config(preset, None, [f"model.n_kv_heads={kv_heads}"] if kv_heads else [])
    vocab = cfg.tokenizer.vocab_size
    measured = _saved_per_sequence(cfg, vocab, bf16)
    estimated = saved_bytes_per_token(cfg.model, vocab, bf16) * cfg.model.seq_len
    assert abs(estimated - measured) <= 0.2 * measured, (estimated, measured)


def test_gpu_preset_plan_and_cli():
    cfg = load_config("gpu")
    p = plan(cfg, gpus=1, gpu_memory=parse_memory("80GB"))
    assert p.fits and p.tokens_per_step == 64 * 1024 and 40 * GIB < p.total_bytes < 80 * GIB
    assert p.max_batch is not None and p.max_batch >= cfg.train.batch_size
    small = plan(cfg, gpus=1, gpu_memory=parse_memory("24GiB"))
    assert not small.fits and 0 < small.max_batch < cfg.train.batch_size
    eight = plan(cfg, gpus=8)
    assert eight.tokens_per_step == 8 * p.tokens_per_step and eight.total_bytes == p.total_bytes
    assert eight.train_seconds == pytest.approx(p.train_seconds)  # 8x the tokens per step at 8x the FLOP/s
    dry = ["run", "--preset", "gpu", "--dry-run", "--out", "/nonexistent", "--gpu-memory"]
    r = CliRunner().invoke(app, [*dry, "80GB"])
    assert r.exit_code == 0, r.output
    assert "88,099,584" in r.output and "fits" in r.output and "nothing is trained" in r.output
    r = CliRunner().invoke(app, [*dry, "24GB"])
    assert r.exit_code == 2 and "set train.batch_size <=" in r.output and "Traceback" not in r.output


@pytest.mark.parametrize("sets, message", [
    (["model.d_model=96", "model.n_heads=32", "model.n_kv_heads=32"], "must be even: RoPE"),
    (["model.d_model=100", "model.n_heads=3"], "must be divisible by n_heads"),
    (["train.batch_size=4096", "model.seq_len=1048576"], r"exceeds 2\^31"),
])
def test_impossible_shapes_are_refused(sets, message):
    with pytest.raises(ConfigError, match=message):
        plan(load_config("gpu", None, sets))


def test_an_absurd_preset_is_refused_on_any_gpu():
    cfg = load_config("gpu", None, ["model.d_model=16384", "model.n_layers=200", "model.ffn_hidden=65536",
                                    "model.n_heads=128", "model.n_kv_heads=8"])
    p = plan(cfg, gpu_memory=parse_memory("141GB"))
    assert not p.fits and p.max_batch == 0
    r = CliRunner().invoke(app, ["run", "--preset", "gpu", "--dry-run", "--gpu-memory", "141GB", "--out", "/x",
                                 "--set", "model.d_model=16384", "--set", "model.n_layers=200",
                                 "--set", "model.ffn_hidden=65536", "--set", "model.n_heads=128",
                                 "--set", "model.n_kv_heads=8"])
    assert r.exit_code == 2 and "even one sequence does not fit" in r.output
    with pytest.raises(ConfigError, match="--gpu-memory expects"):
        parse_memory("lots")
