"""`cleanroom finetune` on a tiny random Llama: the loss falls, LoRA and full both export a directory the
audit's model loader reads, the prompt carries no loss, and an interrupted run resumes to the same weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from audit_helpers import make_tiny_llama
from safetensors.torch import load_file
from typer.testing import CliRunner

from cleanroom.errors import InputError, StoreError
from cleanroom.finetune import FinetuneConfig, encode_records, finetune, load_records
from cleanroom.lm.api import GenerateRequest, LoglikelihoodRequest
from cleanroom.lm.hf import LocalLM

RECORDS = [{"prompt": f"Question: what is the code of item {i}?\nAnswer:", "completion": f" {'ABCD'[i % 4]}"}
           for i in range(12)] + [{"text": "Janet has 16 eggs and sells them for $2 each. #### 32"}]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("ft") / "tiny-llama")


def _cfg(tiny: Path, **kw) -> FinetuneConfig:
    base = {"model": str(tiny), "epochs": 3, "lr": 3e-3, "batch_size": 4, "max_len": 64, "warmup_steps": 1,
            "save_every": 2, "threads": 1}
    return FinetuneConfig(**{**base, **kw})


def _score(model_dir: Path) -> float:
    lm = LocalLM(str(model_dir)).lm
    reqs = [LoglikelihoodRequest(r["prompt"], r["completion"]) for r in RECORDS if "prompt" in r]
    return sum(x.logprob for x in lm.loglikelihood(reqs))


@pytest.mark.parametrize("method", ["lora", "full"])
def test_finetune_learns_and_exports_a_model_the_audit_reads(tiny, tmp_path, method):
    out = tmp_path / method
    lr = 2e-2 if method == "lora" else 3e-3
    info = finetune(_cfg(tiny, method=method, epochs=4, export_epochs=[1], lr=lr), RECORDS, out)
    first, last = info["losses"][:4], info["losses"][-4:]  # 4 steps per epoch
    if method == "full":  # LoRA on a 2-layer random model moves the answers' loss by ~1%: the scores below show it
        assert sum(last) < sum(first)
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    assert (out / "epoch-1" / "config.json").is_file() and not (out / "checkpoint").exists()
    assert not any(k.startswith("base_model") or "lora" in k for k in load_file(str(out / "model.safetensors")))
    assert _score(out) > _score(out / "epoch-1") > _score(tiny)  # the taught answers became likelier
    lm = LocalLM(str(out)).lm
    assert len(lm.generate([GenerateRequest("Question: what", (), 3)])) == 1
    again = finetune(_cfg(tiny, method=method, epochs=4, export_epochs=[1], lr=lr), RECORDS, out)
    assert again["losses"] == info["losses"]  # a finished fine-tune is a no-op


def test_the_prompt_carries_no_loss(tiny):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny)
    (ids, labels), (tids, tlabels) = encode_records([RECORDS[0], RECORDS[-1]], tok, None, tok.eos_token_id, 64)
    n_prompt = len(tok(RECORDS[0]["prompt"], add_special_tokens=False)["input_ids"])
    assert labels[:n_prompt] == [-100] * n_prompt and labels[n_prompt:] == ids[n_prompt:]
    assert ids[-1] == tok.eos_token_id and tlabels == tids
    (short, _), = encode_records([RECORDS[0]], tok, None, None, 8)
    assert len(short) == 8  # the prompt's start is cut, the answer kept


def test_every_record_weighs_the_same_in_the_loss(tiny):
    """A one-token answer and a long text in one batch: the loss is the mean of their two token means."""
    import torch.nn.functional as F
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cleanroom.finetune import _loss

    tok = AutoTokenizer.from_pretrained(tiny)
    model = AutoModelForCausalLM.from_pretrained(tiny).eval()
    data = encode_records([RECORDS[0], RECORDS[-1]], tok, None, tok.eos_token_id, 64)
    T = max(len(x) for x, _ in data)
    ids = torch.zeros((2, T), dtype=torch.long)
    labels = torch.full((2, T), -100)
    att = torch.zeros((2, T), dtype=torch.long)
    for b, (x, y) in enumerate(data):
        ids[b, :len(x)], labels[b, :len(y)], att[b, :len(x)] = torch.tensor(x), torch.tensor(y), 1
    with torch.no_grad():
        got = float(_loss(model, ids, att, labels))
        logits = model(input_ids=ids, attention_mask=att).logits
        means = [float(F.cross_entropy(logits[b, :-1][labels[b, 1:] != -100], labels[b, 1:][labels[b, 1:] != -100]))
                 for b in range(2)]
    assert got == pytest.approx(sum(means) / 2, rel=1e-5)
    assert abs(means[0] - means[1]) > 1e-3  # the two weightings differ here, so the test can fail


def test_an_interrupted_finetune_resumes_to_the_same_weights(tiny, tmp_path):
    whole = finetune(_cfg(tiny), RECORDS, tmp_path / "whole")

    class Stop(Exception):
        pass

    def kill(step, total, loss):
        if step == 5:
            raise Stop

    with pytest.raises(Stop):
        finetune(_cfg(tiny), RECORDS, tmp_path / "cut", progress=kill)
    assert json.loads((tmp_path / "cut" / "checkpoint" / "state.json").read_text())["step"] == 4
    resumed = finetune(_cfg(tiny), RECORDS, tmp_path / "cut")
    assert resumed["losses"] == pytest.approx(whole["losses"], abs=1e-5)
    a = load_file(str(tmp_path / "whole" / "model.safetensors"))
    b = load_file(str(tmp_path / "cut" / "model.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    with pytest.raises(Stop):
        finetune(_cfg(tiny, lr=1e-3), RECORDS, tmp_path / "other", progress=kill)
    with pytest.raises(StoreError, match="different fine-tune"):  # never resumes someone else's state
        finetune(_cfg(tiny), RECORDS, tmp_path / "other")


def test_records_and_cli(tiny, tmp_path):
    from cleanroom.cli import app

    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    assert load_records([tmp_path / "d.jsonl"]) == RECORDS
    (tmp_path / "bad.jsonl").write_text('{"body": 1}\n')
    with pytest.raises(InputError, match="neither `text`"):
        load_records([tmp_path / "bad.jsonl"])
    r = CliRunner().invoke(app, ["finetune", "--model", str(tiny), "--data", str(tmp_path / "d.jsonl"),
                                 "--out", str(tmp_path / "m"), "--epochs", "1", "--max-len", "64", "--threads", "1"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "m" / "config.json").is_file()
    r = CliRunner().invoke(app, ["finetune", "--model", str(tiny), "--out", str(tmp_path / "m")])
    assert r.exit_code == 2 and "exactly one of" in r.output


def test_an_epoch_export_cut_short_is_written_on_resume(tiny, tmp_path, monkeypatch):
    import cleanroom.finetune as ft

    real = ft._export

    def broken(model, tok, dest, info, lora):
        raise OSError("disk full")

    monkeypatch.setattr(ft, "_export", broken)
    with pytest.raises(OSError):
        finetune(_cfg(tiny, export_epochs=[1]), RECORDS, tmp_path / "m")
    monkeypatch.setattr(ft, "_export", real)
    info = finetune(_cfg(tiny, export_epochs=[1]), RECORDS, tmp_path / "m")
    assert json.loads((tmp_path / "m" / "epoch-1" / "finetune.json").read_text())["epochs_done"] == 1
    assert len(info["losses"]) == 3 * 4
