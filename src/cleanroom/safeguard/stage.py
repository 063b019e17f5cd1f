"""The `safeguard` stage: post-hoc safeguards on a trained model, the alternative to filtering its data.

Each arm `<base>+<safeguard>` starts from `models/<base>/` (only read) and writes `models/<base>+<safeguard>/`,
which the eval and tamper stages then treat like any model. What a defender has, and what it does not:
- the base recipe's corpus, and its own safety classifier's verdicts on it: the documents the curate
  stage's safety filter removed from the web stream are the *forget* set (what the safeguard must
  remove), the rest of the base's corpus the *retain* set (what it must keep);
- a probe of its own: questions about the attack split's facts (compounds the evaluation never asks
  about). It checks the probe every `safeguard.check_every` steps and stops when the probe is within
  `stop_margin` of chance, or after `max_steps`. The held-out evaluation items are never seen.

Safeguards:
- `unlearn`: NPO (negative preference optimisation, Zhang et al. 2024) on forget documents, against a
  frozen copy of the base model, plus `retain_weight` x next-token loss on retain documents. Gradient
  ascent's bounded cousin: the forget loss saturates instead of diverging.
- `refusal`: a supervised fine-tune that answers restricted-domain questions about the defender's
  compounds with a refusal ("I cannot help with that."), plus the same retain loss: the shape of
  refusal training in deployed models. Scored by log-likelihood over the options, it shows whether a
  refusal also removes the knowledge behind it.
"""

from __future__ import annotations

import copy
import time

import numpy as np
import torch

from cleanroom.config import ExperimentConfig, train_seed
from cleanroom.contract import StageResult, check_cancelled
from cleanroom.corpus import corpus_dir, lineage_path
from cleanroom.errors import InputError, StoreError
from cleanroom.evals.tasks import chance_level, evaluate_items
from cleanroom.lm.native import NativeLM
from cleanroom.rng import rng_for
from cleanroom.runtime import pick_device, set_threads
from cleanroom.store import RunStore
from cleanroom.tokenize.tokenizer import encode_documents
from cleanroom.train import finetune
from cleanroom.train.export import export_hf
from cleanroom.ui import progress, say
from cleanroom.world.items import qa_items
from cleanroom.world.schema import RELATIONS, fill
from cleanroom.world_store import load_pools, load_table

REFUSAL = "I cannot help with that."


def split_corpus(cfg: ExperimentConfig, store: RunStore, base: str) -> tuple[list[str], list[str]]:
    """(forget, retain) texts of the base recipe's corpus, by the curate stage's safety-filter verdicts."""
    removed = lineage_path("filtered_web")
    if not store.path(removed).exists():
        raise StoreError(f"safeguards need the safety filter's verdicts ({removed}): "
                         "keep `filtered_web` in recipes.names")
    flagged = {r["id"] for r in store.read_parquet(removed).to_pylist()
               if r["step"] == "safety"}
    docs = store.read_parquet(corpus_dir(cfg, store, base), columns=["id", "text"]).to_pylist()
    forget = [d["text"] for d in docs if d["id"] in flagged]
    retain = [d["text"] for d in docs if d["id"] not in flagged]
    if not forget:
        raise InputError(f"the safety filter flagged none of `{base}`'s documents: nothing to unlearn")
    return forget, retain


def defender_probe(cfg: ExperimentConfig, store: RunStore) -> list[dict]:
    """Questions about the attack split's facts: the defender's own check (never the evaluation items)."""
    facts = [f for f in load_table(store, "facts")
             if f["domain"] == "restricted" and f["split"] == "attack"]
    return qa_items("probe", facts, cfg.items.n_restricted, "probe", load_pools(store),
                    cfg.items.n_options, rng_for(cfg.seed, "safeguard/probe"))


def refusal_texts(store: RunStore) -> list[str]:
    """Every question form about the defender's (attack-split) compounds, answered with a refusal."""
    facts = [f for f in load_table(store, "facts")
             if f["domain"] == "restricted" and f["split"] == "attack"]
    return [f"Question: {fill(q, f['subject'])}\nAnswer: {REFUSAL}" for f in facts for q in RELATIONS[f["relation"]].qa]


def run_safeguard(cfg: ExperimentConfig, store: RunStore, arm: str) -> StageResult:
    """Pipeline entry point for the per-arm `safeguard` stage (`arm` = `<base>+<safeguard>`)."""
    set_threads(cfg.runtime)
    t0 = time.perf_counter()
    base_name, _, kind = arm.partition("+")
    device = str(pick_device(cfg.runtime))
    sc = cfg.safeguard
    base = NativeLM.load(store.path(f"models/{base_name}"), device=device, dtype=cfg.eval.dtype,
                              batch_size=cfg.eval.batch_size)
    tok, pad, limit = base.codec.tokenizer, base.codec.pad_id, base.max_len + 1
    forget, retain = split_corpus(cfg, store, base_name)

    def encode(texts: list[str]) -> list[list[int]]:  # framed as the corpus was: <bos> text <eos>
        return [ids[:limit] for ids in encode_documents(tok, texts)]

    seed = train_seed(cfg.seed, arm)  # each replicate's safeguard sees its own document order
    retain_batches = finetune.DocumentBatches(encode(retain), sc.batch_size, pad, seed + 1, "retain documents")
    if kind == "unlearn":
        target_batches = finetune.DocumentBatches(encode(forget), sc.batch_size, pad, seed, "forget documents")
    else:
        target_batches = finetune.DocumentBatches(encode(refusal_texts(store)), sc.batch_size, pad, seed,
                                                  "refusal examples")
    model = copy.deepcopy(base.model).to(device)
    reference = base.model.to(device).eval()  # NPO's frozen reference: the base model itself
    for p in reference.parameters():
        p.requires_grad_(False)
    opt = finetune.optimizer(model, cfg, sc.lr)
    probe = defender_probe(cfg, store)
    chance = chance_level(probe)

    def probe_acc() -> float:
        scorer = NativeLM(model.eval(), base.codec, device=device, dtype=cfg.eval.dtype,
                               batch_size=cfg.eval.batch_size)
        acc = float(np.mean([r["correct"] for r in evaluate_items(scorer, probe)]))
        model.train()
        return acc

    history = [{"step": 0, "probe_acc": probe_acc()}]
    steps = 0
    with progress(f"safeguard {arm}", total=sc.max_steps) as bar:
        while steps < sc.max_steps and history[-1]["probe_acc"] > chance + sc.stop_margin:
            check_cancelled()
            x, y = target_batches.next()
            if kind == "unlearn":
                ratio = (finetune.sequence_logprob(model, x, y, device, cfg.eval.dtype)
                         - finetune.sequence_logprob(reference, x, y, device, cfg.eval.dtype).detach())
                target = -2.0 / sc.npo_beta * torch.nn.functional.logsigmoid(-sc.npo_beta * ratio).mean()
            else:
                target = finetune.nll(model, x, y, device, cfg.eval.dtype)
            rx, ry = retain_batches.next()
            loss = target + sc.retain_weight * finetune.nll(model, rx, ry, device, cfg.eval.dtype)
            finetune.step(model, opt, loss, cfg.train.grad_clip)
            steps += 1
            bar.advance(1, info=f"loss {loss.detach().item():.3f} · probe {history[-1]['probe_acc']:.2f}")
            if steps % sc.check_every == 0 or steps == sc.max_steps:
                history.append({"step": steps, "probe_acc": probe_acc()})
    export_hf(model, cfg, store.path("tokenizer.json"), store.path(f"models/{arm}"))
    stats = {"safeguard": kind, "base": base_name, "steps": steps, "probe": history, "probe_chance": chance,
             "stopped": "probe at chance" if history[-1]["probe_acc"] <= chance + sc.stop_margin else "max_steps",
             "forget_docs": len(forget), "retain_docs": len(retain), "seconds": round(time.perf_counter() - t0, 2)}
    say(f"  {arm}: {steps} steps, defender's probe {history[0]['probe_acc']:.2f} → {history[-1]['probe_acc']:.2f} "
        f"(chance {chance:.2f}; {stats['stopped']})")
    return StageResult(outputs=[f"models/{arm}"], stats=stats)
