"""How much does the attack's own document order move a model's held-out restricted accuracy?

    .venv/bin/python scripts/attack_order_noise.py runs/validate-seed-0 web web~1 --orders 3

The tamper stage fine-tunes each model once per (attack, learning rate), on the attack documents in one
seeded order (the run's seed), the same order for every model. This script repeats that fine-tune with
other orders (order 0 is the stage's own, so its numbers are the run's) and prints, per model, attack,
learning rate and step count, the held-out accuracy for each order and its range. A fine-tune moves
every item at once, so the spread is model-wide: a paired item bootstrap of one run does not see it.
Reads the run's config, world, tokenizer and models; writes nothing.
"""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path

from cleanroom.config import resolve
from cleanroom.runtime import set_threads
from cleanroom.store import RunStore
from cleanroom.tamper.attacks import attack_corpus
from cleanroom.tamper.stage import attack_curve, load_attacked
from cleanroom.tokenize.tokenizer import encode_documents, load_tokenizer
from cleanroom.world_store import load_items

ORDER_STRIDE = 7  # order k shuffles the attack documents with seed + k * this (order 0: the stage's own)


def order_curves(cfg, store: RunStore, model: str, attack: str, lr: float, steps: list[int],
                 orders: int) -> list[list[float]]:
    """Held-out restricted accuracy after each of `steps`, one list per document order."""
    base = load_attacked(cfg, store, model, "cpu")
    tok = load_tokenizer(store.path("tokenizer.json"))
    facts = store.read_parquet("world/facts.parquet").to_pylist()
    docs = [d[: base.max_len + 1] for d in encode_documents(tok, attack_corpus(attack, facts, cfg))]
    items = load_items(store, "restricted")
    out = []
    for k in range(orders):
        c = cfg.model_copy(update={"seed": cfg.seed + k * ORDER_STRIDE})
        out.append([r["acc"] for r in attack_curve(base.model, base.codec, docs, items, c, lr, steps, "cpu")])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("models", nargs="+")
    ap.add_argument("--orders", type=int, default=3)
    ap.add_argument("--attack", default="qa_other")
    ap.add_argument("--lrs", type=float, nargs="+", help="default: the run's tamper.lrs")
    ap.add_argument("--steps", type=int, nargs="+", help="default: the run's tamper.steps without 0")
    args = ap.parse_args()
    store = RunStore(args.run)
    cfg = resolve(tomllib.loads((args.run / "config.toml").read_text()))
    set_threads(cfg.runtime)
    steps = args.steps or [k for k in cfg.tamper.steps if k > 0]
    print("| model | attack | lr | steps | accuracy per order (order 0 = the run's) | range |")
    print("|---|---|---|---|---|---|")
    for model in args.models:
        for lr in args.lrs or cfg.tamper.lrs:
            curves = order_curves(cfg, store, model, args.attack, lr, steps, args.orders)
            for j, k in enumerate(sorted(set(steps))):
                accs = [c[j] for c in curves]
                print(f"| {model} | {args.attack} | {lr:g} | {k} | {' / '.join(f'{a:.3f}' for a in accs)} | "
                      f"{max(accs) - min(accs):.3f} |", flush=True)


if __name__ == "__main__":
    main()
