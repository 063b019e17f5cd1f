"""A model's benchmark accuracy by how popular the benchmark item's mineral is (its popularity decile in
the world, 1 = most popular), beside its long-tail accuracy by decile: does a model that learned the
long tail from the web by popularity also pick up the benchmark's subject where the web talks most?

    .venv/bin/python scripts/bench_by_popularity.py runs/web-zipf-s0 runs/web-zipf-s1 --recipe web

Multiple-choice bench items only (arithmetic has no mineral); items about a mineral group have no decile
and are left out. The world gives minerals a popularity from the long tail's Zipf law; the web follows it
when `recipes.web_curriculum_popularity` is "zipf" (uniform otherwise, so the deciles are then a control).
Prints Markdown, one row per run: accuracy and item count per decile, with a 95% cluster-bootstrap CI for
the top three deciles pooled and for the rest.
"""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path

import numpy as np

from cleanroom.stats import accuracy_ci
from cleanroom.store import RunStore

TOP = 3  # deciles 1-3 against 4-10


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", type=Path, nargs="+")
    ap.add_argument("--recipe", default="web")
    args = ap.parse_args()
    print(f"| run | popularity | deciles 1-{TOP} | deciles {TOP + 1}-10 | per decile 1..10 (longtail for comparison) |")
    print("|---|---|---|---|---|")
    for run in args.runs:
        store = RunStore(run)
        recipes = tomllib.loads((run / "config.toml").read_text()).get("recipes", {})
        popularity = recipes.get("web_curriculum_popularity", "uniform")
        decile = {e["name"]: int(e["decile"]) for e in store.read_parquet("world/entities.parquet").to_pylist()
                  if e["type"] == "mineral"}
        rows = [r for r in store.read_parquet(f"evals/{args.recipe}/bench.parquet").to_pylist()
                if r["kind"] == "choice" and decile.get(r["cluster"], 0) > 0]
        d = np.array([decile[r["cluster"]] for r in rows])
        c = np.array([bool(r["correct"]) for r in rows], dtype=float)
        keys = np.array([r["cluster"] for r in rows])
        cells = []
        for sel in (d <= TOP, d > TOP):
            acc, lo, hi = accuracy_ci(c[sel], 2000, 0, keys[sel])
            cells.append(f"{acc:.3f} [{lo:.3f}, {hi:.3f}] (n={int(sel.sum())})")
        tail = store.read_parquet(f"evals/{args.recipe}/longtail.parquet").to_pylist()
        td = np.array([int(r["decile"]) for r in tail])
        tc = np.array([bool(r["correct"]) for r in tail], dtype=float)
        per = ", ".join(f"{c[d == k].mean():.2f} ({tc[td == k].mean():.2f})" for k in range(1, 11))
        print(f"| {run.name} | {popularity} | {cells[0]} | {cells[1]} | {per} |")


if __name__ == "__main__":
    main()
