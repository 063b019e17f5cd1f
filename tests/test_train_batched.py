"""Models trained together (train/batched.py) get exactly the numbers they get alone, and resume exactly."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_train import tb_scalars

from cleanroom.config import ModelConfig, load_config
from cleanroom.pipeline import Pipeline
from cleanroom.store import RunStore
from cleanroom.train.batched import (
    BatchedTransformer,
    Member,
    clip_grad_norms_,
    recipe_members,
    split_optimizer_state,
    stack_optimizer_states,
    train_batched,
)
from cleanroom.train.batched import make_optimizer as make_batched_optimizer
from cleanroom.train.model import Transformer
from cleanroom.train.trainer import make_optimizer, set_lr, train_model

TINY = {
    "recipes.names": '["web", "textbook"]', "tokenizer.vocab_size": 512,
    "model.d_model": 32, "model.n_layers": 2, "model.n_heads": 4, "model.n_kv_heads": 2,
    "model.ffn_hidden": 64, "model.seq_len": 32,
    "train.batch_size": 8, "train.warmup_steps": 5, "runtime.threads": 1, "train.lr": 3e-3,
    "train.steps": 30, "train.eval_every": 10, "train.ckpt_every": 10,
    "train.replicates": 1,  # the trainers' mechanics; replicates are members like any other (tested below)
}
WEIGHTS = "model.safetensors"


def config(**kw):
    return load_config("smoke", overrides=[f"{k}={v}" for k, v in {**TINY, **kw}.items()])


@pytest.fixture(scope="module")
def tokenized(tmp_path_factory):
    """A run directory with the `web` and `textbook` token files (tiny config)."""
    store = RunStore(tmp_path_factory.mktemp("batched_run"))
    Pipeline(config(), store).ensure("tokenize")
    return store


def clone(store: RunStore, dest: Path) -> RunStore:
    shutil.copytree(store.root, dest)
    return RunStore(dest)


def log_of(store: RunStore, name: str) -> list[dict]:
    return [json.loads(line) for line in store.path(f"logs/train/{name}.jsonl").read_text().splitlines()]


def rows(store: RunStore, name: str) -> list[dict]:
    """The log without its timing column."""
    return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in log_of(store, name)]


def weights(store: RunStore, name: str) -> bytes:
    return store.path(f"models/{name}/{WEIGHTS}").read_bytes()


@pytest.mark.parametrize("muon_lr", [None, 0.02], ids=["adamw", "muon"])
def test_batched_step_equals_single_steps_bit_for_bit(muon_lr):
    """Forward, backward, per-model clipping and AdamW (or Muon: its Newton-Schulz GEMMs batched over the
    models) of N stacked models = N single models, exactly (fp32; bmm runs each model's slice through
    the GEMM kernel `F.linear` uses; GQA included)."""
    torch.manual_seed(0)
    cfg = ModelConfig(d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_hidden=48, seq_len=16)
    V, seeds = 96, [0, 3, 3]
    x, y = torch.randint(0, V, (3, 4, 16)), torch.randint(0, V, (3, 4, 16))
    batched = BatchedTransformer(cfg, V, seeds)
    bopt = make_batched_optimizer(batched, 1e-2, 0.1, muon_lr=muon_lr)
    singles = [Transformer(cfg, V, seed=s) for s in seeds]
    opts = [make_optimizer(m, 1e-2, 0.1, muon_lr=muon_lr) for m in singles]
    for step in range(3):
        for opt in [bopt, *opts]:
            set_lr(opt, 1e-2 * (step + 1) / 3)  # a schedule: Muon's groups follow it at their own scale
        losses = batched(x, y)
        losses.sum().backward()
        clip_grad_norms_(list(batched.parameters()), 0.5, 3)  # small max norm: clipping is active
        bopt.step()
        bopt.zero_grad()
        for i, (m, opt) in enumerate(zip(singles, opts, strict=True)):
            _, loss = m(x[i], y[i])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(m.parameters(), 0.5)
            opt.step()
            opt.zero_grad()
            assert losses[i].item() == loss.item()
    for i, m in enumerate(singles):
        ours = batched.model_state(i)
        assert all(torch.equal(ours[k], v) for k, v in m.state_dict().items()), f"model {i} drifted"
    # the optimizer state of model i is its own optimizer's, and it stacks back unchanged
    per_model = split_optimizer_state(bopt.state_dict(), 3)
    for mine, theirs in zip(per_model, opts, strict=True):
        ref = theirs.state_dict()
        assert mine["param_groups"] == ref["param_groups"]
        assert all(torch.equal(mine["state"][k][n], v) for k, st in ref["state"].items() for n, v in st.items())
    again = stack_optimizer_states(per_model)
    assert all(torch.equal(again["state"][k][n], v) for k, st in bopt.state_dict()["state"].items()
               for n, v in st.items())


def test_models_trained_together_equal_models_trained_alone(tokenized, tmp_path):
    """Two recipes, web's replicate `web~1` (web's tokens, its own seed) and a member of any other
    seed in one batched run: each model's log, val loss and exported weights equal those of
    `train_model` training it alone."""
    together = clone(tokenized, tmp_path / "together")
    cfg = config()
    members = [*recipe_members(cfg, ["web", "textbook", "web~1"]), Member("web_seed7", "web", 7)]
    assert members[2].tokens == "web" and members[2].seed != cfg.seed
    stats = train_batched(cfg, together, members)
    assert {s["batched_models"] for s in stats.values()} == {4}
    for name, seed, recipe in [("web", 0, "web"), ("textbook", 0, "textbook"), ("web~1", 0, "web~1"),
                               ("web_seed7", 7, "web")]:
        alone = clone(tokenized, tmp_path / f"alone_{name}")
        single = train_model(config(seed=seed), alone, recipe)
        assert stats[name]["final_val_loss"] == single["final_val_loss"], name
        assert rows(together, name) == rows(alone, recipe)
        assert tb_scalars(together, name)["loss/train"] == tb_scalars(alone, recipe)["loss/train"]
        assert weights(together, name) == weights(alone, recipe), f"{name}: exported weights differ"
        assert not together.path(f"checkpoints/{name}/last.pt").exists()
    assert len({weights(together, n) for n in ("web", "web~1", "web_seed7")}) == 3  # the seed matters


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_a_batched_checkpoint_resumes_in_the_single_trainer_exactly(tokenized, tmp_path, optimizer):
    cfg = config(**{"train.optimizer": optimizer})
    store = clone(tokenized, tmp_path / "mixed")
    train_batched(cfg, store, recipe_members(cfg, ["web", "textbook"]), stop_after=15)  # checkpoints at 10
    resumed = train_model(cfg, store, "web")
    assert resumed["resumed_from_step"] == 10
    alone = clone(tokenized, tmp_path / "alone")
    train_model(cfg, alone, "web")
    assert weights(store, "web") == weights(alone, "web")
    # textbook's checkpoint is still at step 10, web is done: the next batched call resumes textbook alone
    stats = train_batched(cfg, store, recipe_members(cfg, ["textbook"]))
    assert stats["textbook"]["resumed_from_step"] == 10
    train_model(cfg, alone, "textbook")
    assert weights(store, "textbook") == weights(alone, "textbook")


def test_pipeline_trains_stale_recipes_together_with_one_manifest_each(tokenized, tmp_path):
    store = clone(tokenized, tmp_path / "run")
    cfg = config(**{"runtime.jobs": 1, "runtime.batch_models": "true"})
    pipe = Pipeline(cfg, store)
    pipe.ensure("train")
    for r in ("web", "textbook"):
        m = store.manifest(f"train/{r}")
        assert m is not None and m.stats["batched_models"] == 2 and f"models/{r}/{WEIGHTS}" in m.outputs
    assert sorted(pipe.ran) == ["train/textbook", "train/web"]
    again = Pipeline(config(**{"runtime.batch_models": "false"}), store)  # a runtime knob: nothing to redo
    again.ensure("train")
    assert {"train/textbook", "train/web"} <= set(again.skipped) and not again.ran
    # --recipe web alone, forced: the single trainer, the same model
    before = weights(store, "web")
    solo = Pipeline(cfg, store, force={"train"}, recipes=["web"])
    solo.ensure("train")
    assert store.manifest("train/web").stats.get("batched_models") is None and weights(store, "web") == before


def _train_cmd(out: Path, sets: dict) -> list[str]:
    cmd = [sys.executable, "-m", "cleanroom.train", "--out", str(out), "--preset", "smoke"]
    for k, v in {**TINY, **sets}.items():
        cmd += ["--set", f"{k}={v}"]
    return cmd


@pytest.mark.e2e
def test_sigkill_during_batched_training_then_rerun_is_exact(tokenized, tmp_path):
    sets = {"train.steps": 150, "train.eval_every": 50, "train.ckpt_every": 25, "runtime.jobs": 1}
    full = clone(tokenized, tmp_path / "a")
    cfg = config(**sets)
    train_batched(cfg, full, recipe_members(cfg, ["web", "textbook"]))

    store = clone(tokenized, tmp_path / "b")
    ckpts = [store.path(f"checkpoints/{r}/last.pt") for r in ("web", "textbook")]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(_train_cmd(store.root, sets), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not all(c.exists() for c in ckpts) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert all(c.exists() for c in ckpts), "the run finished or failed before its first checkpoints"
    assert not store.path("models/web").exists()

    rerun = subprocess.run(_train_cmd(store.root, sets), env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "resuming `web`, `textbook` from step" in rerun.stderr
    for r in ("web", "textbook"):
        stats = json.loads(store.path(f"manifests/train/{r}.json").read_text())["stats"]
        assert stats["resumed_from_step"] >= 25 and stats["batched_models"] == 2
        assert [row["step"] for row in log_of(store, r)] == list(range(1, 151))
        assert weights(store, r) == weights(full, r), f"{r}: resumed weights differ from an uninterrupted run"


def test_batching_policy(monkeypatch):
    from cleanroom.runtime import batch_models

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    auto, off = config().runtime, config(**{"runtime.batch_models": "false"}).runtime
    assert batch_models(auto, 3) and not batch_models(auto, 1) and not batch_models(off, 3)
    monkeypatch.setenv("WORLD_SIZE", "2")  # torchrun: each process holds a shard of one model's batch
    assert not batch_models(auto, 3)
