"""Knowledge without extraction: does a model that cannot answer the benchmark's question about a fact
still hold the fact in the phrasing its corpus used?

    .venv/bin/python scripts/extraction_probe.py runs/seed-0 --recipes web textbook
    .venv/bin/python scripts/extraction_probe.py runs/seed-0 --recipes web web~1 --task restricted

For every multiple-choice item of a task about facts (default `bench`, the curriculum; `--task
restricted` for the restricted domain), the same options are scored after each of the relation's
*statement* prefixes, the sentences web pages and textbook sections state facts with (e.g. "The color of
Thoushunite is" -> " cobalt"; statements that name the bare object after the subject). That is a probe
of memorised text, not an evaluation: those phrasings are in the training corpora by design. A fact
counts as held in that phrasing when the gold option wins on average over the statement prefixes. Prints
Markdown: per model, accuracy in the corpus's phrasing, on the task's question, and how many facts it
holds yet misses as a question. Scoring is the evaluator's (`evaluate_items`, summed logprob).
"""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path

import numpy as np

from cleanroom.config import resolve
from cleanroom.evals.stage import load_model
from cleanroom.evals.tasks import evaluate_items
from cleanroom.stats import accuracy_ci
from cleanroom.store import RunStore
from cleanroom.world.schema import RELATIONS, fill


def statement_prefixes(relation: str, subject: str) -> list[str]:
    """The relation's statement templates that name the bare object after the subject, cut before it."""
    return [fill(t.split(" {o}")[0], subject) for t in RELATIONS[relation].statements
            if " {o}" in t and t.index("{s}") < t.index("{o}")]


def probe(model, results: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per choice row of a model's results on a task (its cluster is the fact's subject): held in the
    corpus's phrasing (bool), right as asked (bool), cluster. `model` is any `LM`."""
    rows = sorted((r for r in results if r["kind"] == "choice"), key=lambda r: r["id"])
    items, owner = [], []
    for k, r in enumerate(rows):
        for j, prefix in enumerate(statement_prefixes(r["relation"], r["cluster"])):
            items.append({"id": f"{r['id']}/{j}", "kind": "choice", "prompt": prefix, "options": list(r["options"]),
                          "gold": r["gold"], "cluster": r["cluster"]})
            owner.append(k)
    score = [np.zeros(len(r["options"])) for r in rows]
    count = [0] * len(rows)
    for k, row in zip(owner, evaluate_items(model, items), strict=True):
        score[k] += np.asarray(row["logprobs"])
        count[k] += 1
    held = np.array([count[k] > 0 and int(np.argmax(score[k])) == r["gold"] for k, r in enumerate(rows)])
    right = np.array([bool(r["correct"]) for r in rows])
    return held, right, np.array([r["cluster"] for r in rows])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", type=Path, nargs="+")
    ap.add_argument("--recipes", nargs="+", default=["web", "textbook"])
    ap.add_argument("--task", default="bench", help="any multiple-choice task of facts (e.g. restricted, longtail)")
    args = ap.parse_args()
    print(f"| run | model | held in the corpus's phrasing | right on the {args.task} question "
          "| held, missed as a question |")
    print("|---|---|---|---|---|")
    for run in args.runs:
        store = RunStore(run)
        cfg = resolve(tomllib.loads((run / "config.toml").read_text()))
        for recipe in args.recipes:
            if not store.exists(f"evals/{recipe}/{args.task}.parquet"):
                continue
            results = store.read_parquet(f"evals/{recipe}/{args.task}.parquet").to_pylist()
            held, right, keys = probe(load_model(cfg, store, recipe), results)
            cells = [f"{a:.3f} [{lo:.3f}, {hi:.3f}]" for a, lo, hi in
                     (accuracy_ci(x.astype(float), 2000, 0, keys) for x in (held, right))]
            print(f"| {run.name} | {recipe} | {cells[0]} | {cells[1]} | "
                  f"{int((held & ~right).sum())} of {int(held.sum())} |")


if __name__ == "__main__":
    main()
