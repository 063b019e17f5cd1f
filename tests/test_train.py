"""The trainer: schedule, determinism, outputs, exact resume after SIGKILL, DDP under torchrun."""

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

from cleanroom.config import RuntimeConfig, TrainConfig, load_config
from cleanroom.pipeline import Pipeline
from cleanroom.runtime import autocast, pick_device
from cleanroom.store import RunStore
from cleanroom.train.data import TrainBatches
from cleanroom.train.export import load_native
from cleanroom.train.muon import newton_schulz
from cleanroom.train.trainer import lr_at, make_optimizer, train_model, train_optimizer

TINY = {
    "recipes.names": '["web"]', "tokenizer.vocab_size": 512,
    "model.d_model": 32, "model.n_layers": 1, "model.n_heads": 2, "model.n_kv_heads": 2,
    "model.ffn_hidden": 64, "model.seq_len": 32,
    "train.batch_size": 8, "train.warmup_steps": 5, "runtime.threads": 1, "train.lr": 3e-3,
}


def overrides(**kw) -> list[str]:
    return [f"{k}={v}" for k, v in {**TINY, **kw}.items()]


@pytest.fixture(scope="module")
def tokenized(tmp_path_factory):
    """A run directory with a world, the `web` corpus and its token files (the tiny config)."""
    store = RunStore(tmp_path_factory.mktemp("train_run"))
    Pipeline(load_config("smoke", overrides=overrides()), store).ensure("tokenize")
    return store


def clone(store: RunStore, dest: Path) -> RunStore:
    shutil.copytree(store.root, dest)
    return RunStore(dest)


def read_log(store: RunStore, recipe: str = "web") -> list[dict]:
    return [json.loads(line) for line in store.path(f"logs/train/{recipe}.jsonl").read_text().splitlines()]


def tb_scalars(store: RunStore, name: str = "web") -> dict[str, list[tuple[int, float]]]:
    """The TensorBoard scalars of model `name` as TensorBoard reads them: tag -> [(step, value)]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(store.path(f"logs/train/{name}")))
    acc.Reload()
    return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}


def test_lr_schedule_warms_up_then_decays_to_the_floor():
    cfg = TrainConfig(steps=100, lr=1e-3, warmup_steps=10, min_lr_ratio=0.1)
    lrs = [lr_at(s, cfg) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:], strict=False))
    assert lr_at(100, cfg) == pytest.approx(1e-4)


def test_data_order_is_seeded_and_covers_each_chunk_once_per_epoch():
    import numpy as np

    tokens = np.arange(1000, dtype=np.uint16)
    a, b = TrainBatches(tokens, 10, seed=0), TrainBatches(tokens, 10, seed=0)
    starts = a.starts(0, a.n_chunks)
    assert len(set((starts - starts[0]) % 10)) == 1 and len(set(starts)) == a.n_chunks  # a permutation
    assert torch.equal(a.batch(7, 0, 1, 4)[0], b.batch(7, 0, 1, 4)[0])
    assert not torch.equal(a.batch(7, 0, 1, 4)[0], TrainBatches(tokens, 10, seed=1).batch(7, 0, 1, 4)[0])
    # two ranks with batch 2 see exactly what one process with batch 4 sees
    one = a.batch(3, 0, 1, 4)[0]
    assert torch.equal(torch.cat([a.batch(3, 0, 2, 2)[0], a.batch(3, 1, 2, 2)[0]]), one)
    x, y = a.batch(0, 0, 1, 2)
    assert torch.equal(x[:, 1:], y[:, :-1])


def test_helpers_for_other_stages():
    assert pick_device(RuntimeConfig(device="cpu")).type == "cpu"
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    opt = make_optimizer(model, 1e-3, 0.1, (0.9, 0.95))
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]
    assert sum(len(g["params"]) for g in opt.param_groups) == 4
    with autocast("cpu", "bf16"):
        assert model[0](torch.ones(1, 4)).dtype == torch.bfloat16
    with autocast("cpu", "fp32"):
        assert model[0](torch.ones(1, 4)).dtype == torch.float32


def test_train_writes_model_log_and_stats_and_learns(tokenized, tmp_path):
    store = clone(tokenized, tmp_path / "run")
    cfg = load_config("smoke", overrides=overrides(**{"train.steps": 40, "train.eval_every": 20,
                                                      "train.ckpt_every": 20}))
    stats = train_model(cfg, store, "web")
    log = read_log(store)
    assert [r["step"] for r in log] == list(range(1, 41))
    assert [r["step"] for r in log if "val_loss" in r] == [20, 40]
    assert log[-1]["loss"] < log[0]["loss"] - 0.5
    assert stats["final_val_loss"] == log[-1]["val_loss"] and stats["tokens_seen"] == 40 * 8 * 32
    assert stats["tokens_per_s"] > 0 and stats["steps"] == 40
    model, _ = load_native(store.path("models/web"))
    assert model.num_params() == stats["params"]
    assert not store.path("checkpoints/web/last.pt").exists()  # removed after export
    tb = tb_scalars(store)  # the same rows as TensorBoard event files beside the JSONL log
    assert set(tb) == {"loss/train", "loss/val", "lr", "tokens_per_s"}
    for key, tag in (("loss", "loss/train"), ("val_loss", "loss/val"), ("lr", "lr"), ("tokens_per_s", "tokens_per_s")):
        want = [(r["step"], r[key]) for r in log if key in r]
        assert [s for s, _ in tb[tag]] == [s for s, _ in want]
        assert [v for _, v in tb[tag]] == pytest.approx([v for _, v in want], rel=1e-6)


def test_tensorboard_is_a_runtime_switch_and_optional(tokenized, tmp_path, monkeypatch):
    """`runtime.tensorboard = false` writes no event files and changes no fingerprint; with it on and the
    package missing, training still runs and logs to JSONL."""
    sets = {"train.steps": 4, "train.eval_every": 2}
    on, off = (load_config("smoke", overrides=overrides(**sets, **{"runtime.tensorboard": v})) for v in ("1", "0"))
    assert on.runtime.tensorboard and not off.runtime.tensorboard
    for sections in ((), ("model", "train")):
        assert on.fingerprint(*sections) == off.fingerprint(*sections)
    store = clone(tokenized, tmp_path / "off")
    train_model(off, store, "web")
    assert len(read_log(store)) == 4 and not store.path("logs/train/web").exists()
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # `import` raises ImportError
    store = clone(tokenized, tmp_path / "missing")
    train_model(on, store, "web")
    assert len(read_log(store)) == 4 and not store.path("logs/train/web").exists()


def test_muon_trains_and_its_config_keeps_old_fingerprints(tokenized, tmp_path):
    """Muon on the blocks' matrices lowers the loss; AdamW keeps the embedding and the norms; a config
    that does not use Muon hashes as it did before the option existed (no stage reruns)."""
    store = clone(tokenized, tmp_path / "run")
    cfg = load_config("smoke", overrides=overrides(**{"train.steps": 40, "train.eval_every": 20,
                                                      "train.ckpt_every": 20, "train.optimizer": "muon"}))
    train_model(cfg, store, "web")
    log = read_log(store)
    assert log[-1]["loss"] < log[0]["loss"] - 0.5
    model, _ = load_native(store.path("models/web"))
    opt = train_optimizer(model, cfg.train)
    hidden = {id(p) for g in opt.param_groups if g.get("muon") for p in g["params"]}
    assert all((id(p) in hidden) == (n.startswith("layers.") and p.dim() == 2) for n, p in model.named_parameters())
    adam = load_config("smoke", overrides=overrides())
    assert adam.fingerprint("train") == load_config("smoke", overrides=overrides(**{"train.muon_lr": 0.5})).fingerprint(
        "train")  # muon_lr means nothing to AdamW
    assert load_config("smoke", overrides=overrides(**{"train.optimizer": "muon"})).fingerprint("train") != \
        adam.fingerprint("train")


def test_newton_schulz_orthogonalises_each_matrix_of_a_stack():
    """Muon's update: singular values of every matrix (wide, tall, a stack of models) end near 1, in
    the quintic's band, whatever the gradient's scale; a near-low-rank one (condition number ~240, as
    a gradient is) comes out with all its directions at about the same size."""
    torch.manual_seed(0)
    low_rank = torch.randn(3, 64, 4) @ torch.randn(3, 4, 96) + 0.3 * torch.randn(3, 64, 96)
    for G in (torch.randn(48, 32), torch.randn(32, 80) * 1e3, torch.randn(2, 64, 176), low_rank):
        s = torch.linalg.svdvals(newton_schulz(G))
        assert s.min() > 0.5 and s.max() < 1.25, (G.shape, s.min().item(), s.max().item())
    stack = torch.randn(3, 40, 24)
    assert torch.allclose(newton_schulz(stack)[1], newton_schulz(stack[1]), atol=1e-6)  # per model


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_stopped_run_resumes_to_the_same_result(tokenized, tmp_path, optimizer):
    sets = overrides(**{"train.steps": 30, "train.eval_every": 10, "train.ckpt_every": 10,
                        "train.optimizer": optimizer})
    cfg = load_config("smoke", overrides=sets)
    full_store = clone(tokenized, tmp_path / "a")
    full = train_model(cfg, full_store, "web")
    store = clone(tokenized, tmp_path / "b")
    train_model(cfg, store, "web", stop_after=15)  # stops after step 15; last checkpoint at 10
    assert store.path("checkpoints/web/last.pt").exists()
    resumed = train_model(cfg, store, "web")
    assert resumed["resumed_from_step"] == 10
    assert resumed["final_val_loss"] == full["final_val_loss"]  # bit-exact: same ops, same order
    assert [r["step"] for r in read_log(store)] == list(range(1, 31))
    # TensorBoard drops what the stopped run logged after its checkpoint: every step once
    assert [s for s, _ in tb_scalars(store)["loss/train"]] == list(range(1, 31))
    weights = "models/web/model.safetensors"
    assert store.path(weights).read_bytes() == full_store.path(weights).read_bytes()


def test_changed_config_ignores_an_old_checkpoint(tokenized, tmp_path):
    store = clone(tokenized, tmp_path / "run")
    sets = {"train.steps": 20, "train.ckpt_every": 10, "train.eval_every": 10}
    train_model(load_config("smoke", overrides=overrides(**sets)), store, "web", stop_after=12)
    stats = train_model(load_config("smoke", overrides=overrides(**sets, **{"train.lr": 1e-3})), store, "web")
    assert stats["resumed_from_step"] == 0


def _trainer_cmd(out: Path, sets: list[str], *launcher: str) -> list[str]:
    cmd = [*launcher] if launcher else [sys.executable]
    cmd += ["-m", "cleanroom.train", "--out", str(out), "--preset", "smoke", "--recipe", "web"]
    for s in sets:
        cmd += ["--set", s]
    return cmd


@pytest.mark.e2e
def test_sigkill_mid_training_then_rerun_matches_an_uninterrupted_run(tokenized, tmp_path):
    sets = overrides(**{"train.steps": 150, "train.eval_every": 50, "train.ckpt_every": 25})
    full = train_model(load_config("smoke", overrides=sets), clone(tokenized, tmp_path / "a"), "web")

    store = clone(tokenized, tmp_path / "b")
    ckpt = store.path("checkpoints/web/last.pt")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(_trainer_cmd(store.root, sets), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt.exists(), "the run finished or failed before its first checkpoint"
    assert not store.path("models/web").exists()

    rerun = subprocess.run(_trainer_cmd(store.root, sets), env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "resuming `web` from step" in rerun.stderr
    stats = json.loads(store.path("manifests/train/web.json").read_text())["stats"]
    assert stats["resumed_from_step"] >= 25
    assert stats["final_val_loss"] == pytest.approx(full["final_val_loss"], rel=0.01)
    assert [r["step"] for r in read_log(store)] == list(range(1, 151))


@pytest.mark.e2e
def test_torchrun_ddp_two_processes_matches_one_process_with_the_global_batch(tokenized, tmp_path):
    sets = {"train.steps": 40, "train.eval_every": 20, "train.ckpt_every": 20}
    single = train_model(load_config("smoke", overrides=overrides(**sets, **{"train.batch_size": 8})),
                         clone(tokenized, tmp_path / "one"), "web")
    store = clone(tokenized, tmp_path / "ddp")
    ddp_sets = overrides(**sets, **{"train.batch_size": 4, "runtime.threads": 1})
    launcher = (sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2")
    run = subprocess.run(_trainer_cmd(store.root, ddp_sets, *launcher), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    stats = json.loads(store.path("manifests/train/web.json").read_text())["stats"]
    assert stats["world_size"] == 2 and stats["tokens_seen"] == single["tokens_seen"]
    assert stats["final_val_loss"] == pytest.approx(single["final_val_loss"], rel=0.01)
    assert store.path("models/web/model.safetensors").exists()


def test_auto_dtype_is_bf16_only_where_bf16_is_fast(monkeypatch):
    from cleanroom import runtime

    assert runtime.resolve_dtype("cpu", "fp32") == "fp32" and runtime.resolve_dtype("cpu", "bf16") == "bf16"
    monkeypatch.setattr(runtime, "fast_bf16", lambda device: True)
    assert runtime.resolve_dtype("cpu", "auto") == "bf16"
    monkeypatch.setattr(runtime, "fast_bf16", lambda device: False)
    assert runtime.resolve_dtype("cpu", "auto") == "fp32"
    with autocast("cpu", "auto"):
        assert torch.nn.Linear(2, 2)(torch.ones(1, 2)).dtype == torch.float32
    monkeypatch.undo()


def test_cpu_bf16_decision_follows_the_measured_gemm_speedup(monkeypatch):
    from cleanroom import runtime

    ratio = runtime.cpu_bf16_speedup(1)  # the real probe: a finite, positive throughput ratio
    assert 0 < ratio < 100 and torch.get_num_threads() >= 1
    for measured, expected in [(2.3, True), (1.25, True), (1.2, False), (0.5, False)]:
        monkeypatch.setattr(runtime, "cpu_bf16_speedup", lambda threads, m=measured: m)
        assert runtime.fast_bf16("cpu") is expected and runtime.resolve_dtype("cpu", "auto") == (
            "bf16" if expected else "fp32")
