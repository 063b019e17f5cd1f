"""How much of the long tail each model knows, asked three ways: a diagnostic for the C2a probe.

    .venv/bin/python scripts/probe_formats.py runs/default [--recipes web textbook]

For every long-tail item of a finished run (the same facts, options and answers), scores each model on:
- `seen`: a statement template the corpora render ("Limro Tibal is" -> "a cellist"): memorised prose;
- `cloze`: the held-out cloze stem of task `longtail` ("By trade, Limro Tibal is"), which no recipe renders;
- `question`: task `longtail_qa` ("Question: What is the profession of Limro Tibal?\\nAnswer:").
Prints one JSON object: accuracy per recipe and phrasing, overall and per popularity decile.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from cleanroom.evals.tasks import evaluate_items
from cleanroom.lm.native import NativeLM
from cleanroom.store import RunStore
from cleanroom.world.schema import RELATIONS, article, fill
from cleanroom.world_store import load_items


def seen_phrasing(item: dict, k: int) -> dict:
    """`item` with a corpus statement template cut before its object as the prompt."""
    rel = RELATIONS[item["relation"]]
    stems = [t for t in rel.statements if t.rstrip(".").endswith(("{o}", "{a_o}"))]
    t = stems[k % len(stems)]
    with_article = t.rstrip(".").endswith("{a_o}")
    prompt = fill(t[:t.index("{a_o}" if with_article else "{o}")].rstrip(), item["subject"])
    options = [article(o) if with_article else o for o in item["options"]]
    return {**item, "prompt": prompt, "options": options, "task": "seen"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("--recipes", nargs="+", default=["web", "textbook", "filtered_web", "mix"])
    args = ap.parse_args()
    store = RunStore(args.run)
    cloze = load_items(store, "longtail")
    probes = {"seen": [seen_phrasing(it, k) for k, it in enumerate(cloze)], "cloze": cloze,
              "question": load_items(store, "longtail_qa")}
    out: dict[str, dict] = {}
    for recipe in args.recipes:
        model = NativeLM.load(store.path(f"models/{recipe}"), device="cpu", dtype="fp32", batch_size=64)
        out[recipe] = {}
        for name, items in probes.items():
            correct = np.array([r["correct"] for r in evaluate_items(model, items)], dtype=float)
            deciles = np.array([it["decile"] for it in items])
            out[recipe][name] = {"acc": round(float(correct.mean()), 3),
                                 "by_decile": [round(float(correct[deciles == d].mean()), 2)
                                               for d in sorted(set(deciles.tolist()))]}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
