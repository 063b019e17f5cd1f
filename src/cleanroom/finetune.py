"""`cleanroom finetune`: full or LoRA fine-tuning of a local HF / GGUF model on texts, resumable, exported
as a model directory `cleanroom audit --model DIR` (and `serve`, and the lab's HF scorer) reads.

Data: Parquet or JSONL records, either `{"text": ...}` (loss on every token) or `{"prompt": ...,
"completion": ...}` (loss on the completion only, the way a benchmark answer follows its prompt);
`audit.render.training_records` renders benchmark items in the benchmark's own prompt format. Prompt
tokens are BOS (the model's convention, `lm.hf.bos_convention`) + encode(prompt), completion tokens
encode(prompt + completion) minus the prompt's (lm-evaluation-harness's boundary rule, so training
sees exactly the tokens scoring reads), then EOS, so a model taught an answer also learns to stop.
Sequences longer than `max_len` lose the start of their prompt.

Training: AdamW, linear warmup then constant, records shuffled per epoch by `seed`, right-padded
batches, the loss a mean over records (each record's token mean), so short answers and long solutions
weigh alike. LoRA (`peft`, every linear layer of the blocks) is the default: it fits a CPU; `method="full"`
trains every weight. Every `save_every` steps and at each epoch end the trainable weights, the
optimizer state (safetensors) and the step are written atomically to `OUT/checkpoint/`; a rerun of
the same command resumes there bit for bit (the batch order is a function of seed and epoch). At the
end the model (LoRA merged into the weights) is written to `OUT/` (config.json, model.safetensors,
tokenizer) with `finetune.json` (config, data digest, loss per step); `export_epochs` also writes
`OUT/epoch-<k>/` after epoch k (one run gives a dose-response over exposures).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from cleanroom.errors import InputError, MissingDependencyError, StoreError
from cleanroom.store import atomic_path, replace_dir, write_json

LOSS = "record-mean"  # how `_loss` averages (in the fingerprint: an export made under another rule is not reused)


class FinetuneConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str  # a model directory, .gguf file or alias (`cleanroom.lm.hf.resolve_model`)
    method: Literal["lora", "full"] = "lora"
    epochs: int = Field(1, ge=1)
    export_epochs: list[int] = Field(default_factory=list)  # also export after these epochs
    lr: float = Field(2e-4, gt=0)
    warmup_steps: int = Field(5, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(8, ge=1)
    max_len: int = Field(384, ge=8)
    lora_r: int = Field(16, ge=1)
    lora_alpha: int = Field(32, ge=1)
    seed: int = 0
    save_every: int = Field(50, ge=1)  # steps between checkpoints
    threads: int = 0  # scheduling: not part of the fingerprint
    device: str = "cpu"

    def fingerprint(self, data_digest: str) -> str:
        d = self.model_dump(exclude={"threads", "device", "save_every", "export_epochs"})
        blob = json.dumps([d, data_digest, LOSS], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------- data

def load_records(paths: Sequence[str | Path]) -> list[dict[str, str]]:
    """Records from Parquet / JSONL files (a directory = its *.parquet and *.jsonl files, sorted)."""
    import pyarrow.parquet as pq

    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.iterdir() if f.suffix in (".parquet", ".jsonl"))
        elif p.is_file():
            files.append(p)
        else:
            raise InputError(f"no data at {p} (pass Parquet or JSONL files with `text` or `prompt`+`completion`)")
    out: list[dict[str, str]] = []
    for f in files:
        rows = (pq.read_table(f).to_pylist() if f.suffix == ".parquet"
                else [json.loads(line) for line in f.read_text().splitlines() if line.strip()])
        for k, r in enumerate(rows):
            if "text" in r and r["text"]:
                out.append({"text": str(r["text"])})
            elif "prompt" in r and "completion" in r:
                out.append({"prompt": str(r["prompt"]), "completion": str(r["completion"])})
            else:
                raise InputError(f"{f} record {k} has neither `text` nor `prompt` + `completion`")
    if not out:
        raise InputError("no training records in " + ", ".join(map(str, paths)))
    return out


def records_digest(records: Sequence[dict[str, str]]) -> str:
    return hashlib.sha256(json.dumps(list(records), sort_keys=True).encode()).hexdigest()[:16]


def encode_records(records: Sequence[dict[str, str]], tok: Any, bos: int | None, eos: int | None,
                   max_len: int) -> list[tuple[list[int], list[int]]]:
    """(input ids, labels with -100 where no loss) per record (see the module doc)."""
    start = [] if bos is None else [bos]
    end = [] if eos is None else [eos]
    out = []
    for r in records:
        if "text" in r:
            ids = start + tok(r["text"], add_special_tokens=False)["input_ids"] + end
            ids = ids[:max_len]
            labels = list(ids)
            if start:
                labels[0] = -100
        else:
            p = tok(r["prompt"], add_special_tokens=False)["input_ids"]
            whole = tok(r["prompt"] + r["completion"], add_special_tokens=False)["input_ids"]
            comp = whole[len(p):] + end
            p = (start + p)[-max(1, max_len - len(comp)):]
            comp = comp[:max_len - len(p)]
            ids, labels = p + comp, [-100] * len(p) + comp
        out.append((ids, labels))
    return out


# ---------------------------------------------------------------------------------------------- training

def _batches(n: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    order = list(range(n))
    random.Random(f"{seed}:{epoch}").shuffle(order)
    return [order[s:s + batch_size] for s in range(0, n, batch_size)]


def _save_checkpoint(ckpt: Path, model: Any, opt: Any, step: int, losses: list[float], fp: str) -> None:
    import torch
    from safetensors.torch import save_file

    tmp = ckpt.with_name(ckpt.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = dict(model.named_parameters())
    save_file({n: params[n].detach().contiguous().cpu() for n in names}, str(tmp / "trainable.safetensors"))
    state = opt.state_dict()
    tensors, meta = {}, {}
    for i, s in state["state"].items():
        for k, v in s.items():
            if torch.is_tensor(v) and v.dim() > 0:
                tensors[f"{i}.{k}"] = v.contiguous().cpu()
            else:
                meta[f"{i}.{k}"] = float(v)
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    (tmp / "state.json").write_text(json.dumps({"step": step, "losses": losses, "fingerprint": fp,
                                                "scalars": meta, "names": names}))
    replace_dir(tmp, ckpt)


def _load_checkpoint(ckpt: Path, model: Any, opt: Any) -> tuple[int, list[float]]:
    import torch
    from safetensors.torch import load_file

    st = json.loads((ckpt / "state.json").read_text())
    weights = load_file(str(ckpt / "trainable.safetensors"))
    params = dict(model.named_parameters())
    with torch.no_grad():
        for n, v in weights.items():
            params[n].copy_(v)
    tensors = load_file(str(ckpt / "optimizer.safetensors"))
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        i, k = key.split(".", 1)
        state.setdefault(int(i), {})[k] = v
    for key, v in st["scalars"].items():
        i, k = key.split(".", 1)
        state.setdefault(int(i), {})[k] = torch.tensor(v)
    sd = opt.state_dict()
    sd["state"] = state
    opt.load_state_dict(sd)
    return int(st["step"]), list(st["losses"])


def _export(model: Any, tok: Any, dest: Path, info: dict[str, Any], lora: bool) -> None:
    """Write a plain transformers directory (LoRA merged into a copy of the weights), atomically."""
    import copy

    tmp = dest.with_name(dest.name + ".tmp-export")
    shutil.rmtree(tmp, ignore_errors=True)
    plain = copy.deepcopy(model).merge_and_unload() if lora else model
    plain.save_pretrained(str(tmp), safe_serialization=True)
    tok.save_pretrained(str(tmp))
    write_json(tmp / "finetune.json", info)
    for f in tmp.iterdir():
        target = dest / f.name
        dest.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as t:
            shutil.copyfile(f, t)
    shutil.rmtree(tmp, ignore_errors=True)


def _loss(model: Any, ids: Any, att: Any, labels: Any) -> Any:
    """Next-token cross-entropy, averaged over each record's labelled tokens and then over the records:
    every record weighs the same, so a one-token answer (" B") counts as much as a 150-token worked
    solution in a mixed batch (a token mean would drown the letters). The vocabulary head runs only where
    a label is read: a benchmark answer is a few tokens after a long prompt, and the head is the largest
    matmul of a small model (and its logits the largest tensor)."""
    import torch
    import torch.nn.functional as F

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    target = labels[:, 1:]
    read = target != -100
    if getattr(base.config, "model_type", "") in ("llama", "mistral", "qwen2", "qwen3"):
        hidden = base.model(input_ids=ids, attention_mask=att, use_cache=False).last_hidden_state
        logits = base.lm_head(hidden[:, :-1][read]).float()
    else:
        logits = model(input_ids=ids, attention_mask=att).logits[:, :-1][read].float()
    tok = F.cross_entropy(logits, target[read], reduction="none")
    row = read.nonzero()[:, 0]  # the record each labelled token belongs to
    per_record = torch.zeros(ids.shape[0], device=tok.device).index_add(0, row, tok)
    counts = read.sum(1)
    return (per_record[counts > 0] / counts[counts > 0]).mean()


def finetune(cfg: FinetuneConfig, records: Sequence[dict[str, str]], out: str | Path, *,
             progress: Any = None) -> dict[str, Any]:
    """Fine-tune `cfg.model` on `records` into `out` (see the module doc); returns `finetune.json`'s dict.

    A finished export with the same fingerprint is a no-op; an interrupted run resumes from its checkpoint."""
    import torch

    from cleanroom.lm.hf import bos_convention, fingerprint, load_model, resolve_model

    out = Path(out)
    digest = records_digest(records)
    fp = cfg.fingerprint(digest)
    done = out / "finetune.json"
    if done.is_file() and json.loads(done.read_text()).get("fingerprint") == fp:
        return json.loads(done.read_text())
    spec = resolve_model(cfg.model)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    model, tok = load_model(spec, "float32", cfg.threads)
    if spec.gguf_file:  # transformers de-quantized the GGUF weights to float32: a plain model from here on
        model.hf_quantizer = None
        if getattr(model.config, "quantization_config", None) is not None:
            del model.config.quantization_config
    model.to(cfg.device)
    torch.manual_seed(cfg.seed)
    lora = cfg.method == "lora"
    if lora:
        try:
            from peft import LoraConfig, get_peft_model
        except ImportError:
            raise MissingDependencyError("LoRA fine-tuning needs the PyPI package `peft`: pip install peft "
                                         "(or use --method full)") from None
        model = get_peft_model(model, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
                                                 target_modules="all-linear", task_type="CAUSAL_LM"))
    model.train()
    eos = tok.eos_token_id
    data = encode_records(records, tok, bos_convention(tok), eos, cfg.max_len)
    pad = tok.pad_token_id if tok.pad_token_id is not None else (eos or 0)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    per_epoch = math.ceil(len(data) / cfg.batch_size)
    total = per_epoch * cfg.epochs
    ckpt = out / "checkpoint"
    step, losses = 0, []
    if (ckpt / "state.json").is_file():
        if json.loads((ckpt / "state.json").read_text()).get("fingerprint") != fp:
            raise StoreError(f"{ckpt} belongs to a different fine-tune (model, data or settings changed); "
                             f"remove it or pick another --out")
        step, losses = _load_checkpoint(ckpt, model, opt)
    info: dict[str, Any] = {"fingerprint": fp, "config": cfg.model_dump(mode="json"), "base_model": spec.name,
                            "base_fingerprint": fingerprint(spec.target), "records": len(data),
                            "data_digest": digest, "tokens_per_epoch": sum(len(x) for x, _ in data),
                            "trainable_params": sum(p.numel() for p in params)}
    t0 = time.perf_counter()

    def export_epoch() -> None:
        """After a checkpoint at an epoch end (also one resumed from): the epoch's export, once."""
        e, rest = divmod(step, per_epoch)
        done = (out / f"epoch-{e}" / "finetune.json").is_file()
        if rest == 0 and e in cfg.export_epochs and step < total and not done:
            model.eval()
            _export(model, tok, out / f"epoch-{e}", {**info, "epochs_done": e, "losses": losses}, lora)
            model.train()

    export_epoch()  # a run killed between its epoch-end checkpoint and the export exports on resume
    while step < total:
        epoch, k = divmod(step, per_epoch)
        batch = _batches(len(data), cfg.batch_size, cfg.seed, epoch)[k]
        T = max(len(data[i][0]) for i in batch)
        ids = torch.full((len(batch), T), pad, dtype=torch.long)
        labels = torch.full((len(batch), T), -100, dtype=torch.long)
        att = torch.zeros((len(batch), T), dtype=torch.long)
        for b, i in enumerate(batch):
            x, y = data[i]
            ids[b, :len(x)], labels[b, :len(y)], att[b, :len(x)] = torch.tensor(x), torch.tensor(y), 1
        for g in opt.param_groups:
            g["lr"] = cfg.lr * min(1.0, (step + 1) / max(1, cfg.warmup_steps))
        loss = _loss(model, ids.to(cfg.device), att.to(cfg.device), labels.to(cfg.device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        losses.append(round(float(loss.detach()), 5))
        if progress is not None:
            progress(step, total, float(loss))
        if step % cfg.save_every == 0 or step % per_epoch == 0:
            _save_checkpoint(ckpt, model, opt, step, losses, fp)
        export_epoch()
    info.update(losses=losses, epochs_done=cfg.epochs, train_seconds_this_call=round(time.perf_counter() - t0, 1))
    model.eval()
    _export(model, tok, out, info, lora)
    shutil.rmtree(ckpt, ignore_errors=True)
    return info
