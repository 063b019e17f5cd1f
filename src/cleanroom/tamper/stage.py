"""The tamper-resistance test (Deep Ignorance style): how much restricted knowledge can a fine-tune
put back into a model?

For each attacked model (every recipe's model, every safeguarded arm, and with `tamper.scratch` a
randomly initialised model: the floor, what the attack text alone teaches), each attack family
(`attacks.py`: `qa_other`, `literature`) and each learning rate in `tamper.lrs`, a copy of the model
(`models/<model>/` is only read, never written) is fine-tuned (`train.finetune`: AdamW at a constant
learning rate, `tamper.batch_size` whole documents per step in a seeded order, the same for every
learning rate) for max(tamper.steps) steps; after k steps, for each k in the sweep, the held-out
`restricted` items are scored.

Output `evals/<model>/tamper.parquet`, one row per (attack, steps, lr): recipe (the model), attack,
steps, lr, acc, acc_norm, ci_low, ci_high, n, chance, train_loss (mean attack loss over the steps since
the previous step count), and `strongest` = True on the row of each step count's strongest attack
(`strongest.py`). The same curve is `StageResult.stats["curve"]`. `evals/<model>/tamper_items.parquet`
has the per-item results behind every row (recipe, attack, steps, lr, strongest, id, fact_id, gold,
prediction, correct, logprobs, cluster, taught), for paired comparisons; `taught` marks held-out items
whose fact the `literature` attack states.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from cleanroom.config import SCRATCH, ExperimentConfig, train_seed
from cleanroom.contract import StageResult, check_cancelled
from cleanroom.errors import StoreError
from cleanroom.evals.tasks import evaluate_items, task_metrics
from cleanroom.lm.causal import Codec
from cleanroom.lm.native import NativeLM
from cleanroom.runtime import pick_device, set_threads
from cleanroom.store import RunStore
from cleanroom.tamper.attacks import attack_corpus, taught_facts
from cleanroom.tamper.strongest import strongest_per_steps
from cleanroom.tokenize.tokenizer import encode_documents, load_tokenizer
from cleanroom.train import finetune
from cleanroom.train.model import Transformer
from cleanroom.ui import progress, say
from cleanroom.world_store import load_items, load_table

TAMPER_SCHEMA = pa.schema([
    ("recipe", pa.string()), ("attack", pa.string()), ("steps", pa.int32()), ("lr", pa.float64()),
    ("acc", pa.float64()), ("acc_norm", pa.float64()), ("ci_low", pa.float64()), ("ci_high", pa.float64()),
    ("n", pa.int32()), ("chance", pa.float64()), ("train_loss", pa.float64()), ("strongest", pa.bool_()),
])

# per item, per attack: what the paired C3 comparisons between models need
TAMPER_ITEMS_SCHEMA = pa.schema([
    ("recipe", pa.string()), ("attack", pa.string()), ("steps", pa.int32()), ("lr", pa.float64()),
    ("strongest", pa.bool_()), ("id", pa.string()), ("fact_id", pa.string()), ("gold", pa.int32()),
    ("prediction", pa.int32()), ("correct", pa.bool_()), ("logprobs", pa.list_(pa.float64())),
    ("cluster", pa.string()), ("taught", pa.bool_()),
])


def attack_curve(model: torch.nn.Module, codec: Codec, docs: list[list[int]], items: list[dict],
                 cfg: ExperimentConfig, lr: float, steps: list[int], device: str,
                 base: tuple[list[dict], dict] | None = None, on_step=None,
                 seed: int | None = None) -> list[dict[str, Any]]:
    """Fine-tune a copy of `model` on `docs` at `lr`; metrics on `items` after each k in sorted `steps`.

    `base` = (rows, metrics) of the untouched model, reused for k = 0. Each returned dict carries
    the per-item rows under "items" (not a column of tamper.parquet). `seed` orders the attack documents
    (default `cfg.seed`; the stage gives each replicate its own, so replicates differ in the attack's order too).
    """
    model = copy.deepcopy(model).to(device)
    opt = finetune.optimizer(model, cfg, lr)
    batches = finetune.DocumentBatches(docs, cfg.tamper.batch_size, codec.pad_id, cfg.seed if seed is None else seed,
                                       "attack documents")
    out, done, losses = [], 0, []
    for k in sorted(set(steps)):
        model.train()
        while done < k:
            check_cancelled()
            x, y = batches.next()
            losses.append(finetune.step(model, opt, finetune.nll(model, x, y, device, cfg.eval.dtype),
                                        cfg.train.grad_clip))
            done += 1
            if on_step is not None:
                on_step(lr, done, losses[-1])
        if k == 0 and base is not None:
            rows, metrics = base
        else:
            scorer = NativeLM(model, codec, device=device, dtype=cfg.eval.dtype,
                                   batch_size=cfg.eval.batch_size)
            rows = evaluate_items(scorer, items, max_gen_tokens=cfg.eval.max_gen_tokens)
            metrics = task_metrics(rows, items, n_boot=cfg.eval.bootstrap, seed=cfg.seed)
        out.append({"steps": k, "lr": lr, **{m: metrics[m] for m in ("acc", "acc_norm", "ci_low", "ci_high",
                                                                  "n", "chance")},
                     "train_loss": float(np.mean(losses)) if losses else float("nan"), "items": rows})
        losses = []
    return out


def mark_strongest(rows: list[dict]) -> list[dict]:
    """Set `strongest` on the row of each step count's strongest attack; return those rows by steps."""
    best = strongest_per_steps({(r.get("attack", "qa_other"), r["steps"], r["lr"]): r["acc"] for r in rows})
    for r in rows:
        r["strongest"] = best[r["steps"]] == (r.get("attack", "qa_other"), r["steps"], r["lr"])
    return sorted((r for r in rows if r["strongest"]), key=lambda r: r["steps"])


def load_attacked(cfg: ExperimentConfig, store: RunStore, model: str, device: str) -> NativeLM:
    """The model to attack: an exported model, or (`scratch`) a fresh random init of the run's shape."""
    if model == SCRATCH:
        tok = load_tokenizer(store.path("tokenizer.json"))
        net = Transformer(cfg.model, tok.get_vocab_size(), seed=train_seed(cfg.seed, model)).to(device).eval()
        return NativeLM(net, Codec.from_tokenizers(tok), device=device, dtype=cfg.eval.dtype,
                             batch_size=cfg.eval.batch_size)
    model_dir = store.path(f"models/{model}")
    if not (model_dir / "config.json").exists():
        raise StoreError(f"no trained model `{model}` at {model_dir} (run `cleanroom train` first)")
    return NativeLM.load(model_dir, device=device, dtype=cfg.eval.dtype, batch_size=cfg.eval.batch_size)


def run_tamper(cfg: ExperimentConfig, store: RunStore, model: str) -> StageResult:
    """Pipeline entry point for the per-model `tamper` stage."""
    set_threads(cfg.runtime)
    t0 = time.perf_counter()
    device = str(pick_device(cfg.runtime))
    base = load_attacked(cfg, store, model, device)
    tok = load_tokenizer(store.path("tokenizer.json"))
    facts = load_table(store, "facts")
    corpora = {a: [d[: base.max_len + 1] for d in encode_documents(tok, attack_corpus(a, facts, cfg))]
               for a in cfg.tamper.attacks}
    taught = taught_facts(facts, cfg) if "literature" in cfg.tamper.attacks else set()
    items = load_items(store, "restricted")
    steps = sorted(set(cfg.tamper.steps))

    base_rows = evaluate_items(base, items, max_gen_tokens=cfg.eval.max_gen_tokens)
    base_result = (base_rows, task_metrics(base_rows, items, n_boot=cfg.eval.bootstrap, seed=cfg.seed))
    rows: list[dict] = []
    with progress(f"tamper {model}", total=len(corpora) * len(cfg.tamper.lrs) * steps[-1]) as bar:
        for attack, docs in corpora.items():
            def on_step(lr: float, step: int, loss: float, attack: str = attack) -> None:
                bar.advance(1, info=f"{attack} · lr {lr:g} · step {step} · loss {loss:.2f}")

            for lr in cfg.tamper.lrs:
                rows += [{**r, "attack": attack} for r in attack_curve(
                    base.model, base.codec, docs, items, cfg, lr, steps, device, base_result, on_step,
                    seed=train_seed(cfg.seed, model))]
    curve = mark_strongest(rows)
    for r in rows:
        r["recipe"] = model
    rel = f"evals/{model}/tamper.parquet"
    store.write_parquet(rel, pa.Table.from_pylist([{c: r[c] for c in TAMPER_SCHEMA.names} for r in rows],
                                                  schema=TAMPER_SCHEMA))
    items_rel = f"evals/{model}/tamper_items.parquet"
    per_item = [{"recipe": model, "attack": r["attack"], "steps": r["steps"], "lr": r["lr"],
                 "strongest": r["strongest"], "taught": it["fact_id"] in taught,
                 **{c: it[c] for c in ("id", "fact_id", "gold", "prediction", "correct", "logprobs", "cluster")}}
                for r in rows for it in r["items"]]
    store.write_parquet(items_rel, pa.Table.from_pylist(per_item, schema=TAMPER_ITEMS_SCHEMA))
    stats = {
        "curve": [{k: r[k] for k in ("attack", "steps", "lr", "acc", "ci_low", "ci_high")} for r in curve],
        "chance": base_result[1]["chance"],
        "n": base_result[1]["n"],
        "attack_docs": {a: len(d) for a, d in corpora.items()},
        "taught_items": sum(it["fact_id"] in taught for it in items),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    say(f"  {model}: held-out restricted acc, strongest attack per step count: "
        + " · ".join(f"{r['steps']} steps {r['acc']:.2f} ({r['attack']})" for r in curve)
        + f" (chance {stats['chance']:.2f})")
    return StageResult(outputs=[rel, items_rel], stats=stats)
