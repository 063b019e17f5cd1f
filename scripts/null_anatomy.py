"""Where the null controls' false positives come from: each null pair's statistics per relation, and
their intervals with the report's bootstrap (entity clusters) beside a crossed one (entity x relation).

    .venv/bin/python scripts/null_anatomy.py runs/validate-seed-0 runs/validate-seed-1 runs/validate-seed-2

Reads `config.toml` and `evals/` only, so a run stopped after `cleanroom eval` will do. A null pair is
two models of one recipe that differ only in their init and data-order seed, so any decided statistic
is a false positive. If the per-run interval missed only the correlation of items that share a relation
(a model that picks up a relation's mapping gets all its items right), the crossed (pigeonhole)
bootstrap would repair it; if the two models differ everywhere at once (a model-wide shift), no
resampling of one run's items can, and only replicate models (seeds) can: that is what
`scripts/seed_sweep.py`'s pooled row does. Prints Markdown.

The last table sizes that model-wide part per statistic over all the null pairs given: a null pair's
difference d has variance 2 s^2 + v (s^2: between-model variance of one recipe's statistic; v: the item
bootstrap's variance, from its 95% interval), so s^2 = mean(d^2 - v) / 2 (method of moments, floored at
0), and replicates per recipe R = 2 s^2 / v make the model part of a claim's variance (2 s^2 / R) no
larger than the item part. Few pairs make s^2 rough: read it as an order of magnitude.
"""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path

import numpy as np

from cleanroom.config import NULL_PREFIX
from cleanroom.evals.stats import paired_diff, verdict
from cleanroom.report.claims import NULL_BOOT_SHIFT, null_statistics
from cleanroom.store import RunStore

N_BOOT = 2000  # the report's (`eval.bootstrap`), and its bootstrap seeds, so the entity column is the report's


def interval(a: np.ndarray, b: np.ndarray, clusters, seed: int) -> tuple[float, str, str, float]:
    """(effect, its Markdown cell, verdict, width of the 95% interval)."""
    eff, lo, hi = paired_diff(a, b, N_BOOT, seed, clusters)
    return eff, f"{eff:+.3f} [{lo:+.3f}, {hi:+.3f}]", verdict(lo, hi), hi - lo


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", type=Path, nargs="+", help="finished run directories with null_<recipe> models")
    args = ap.parse_args()
    rows, decided, ratios = [], {"entity": 0, "entity x relation": 0}, []
    moments: dict[str, list[tuple[float, float]]] = {}  # statistic -> (d, item variance) per null pair
    total = 0
    for run in args.runs:
        store = RunStore(run)
        cfg = tomllib.loads((run / "config.toml").read_text())  # a run that stopped after `eval` has no summary
        recipes, base = cfg["recipes"]["names"], cfg["seed"] + NULL_BOOT_SHIFT
        for null in [r for r in recipes if r.startswith(NULL_PREFIX)]:
            for k, p in enumerate(null_statistics(store, null.removeprefix(NULL_PREFIX))):
                name = f"{p.label.split(':')[0]} {null}"
                d, one, v1, w1 = interval(p.a, p.b, p.clusters, base + k)
                moments.setdefault(name, []).append((d, (w1 / (2 * 1.96)) ** 2))
                _, two, v2, w2 = interval(p.a, p.b, np.stack([p.clusters, p.relations], axis=1), base + k)
                ratios.append(w2 / w1 if w1 > 0 else float("nan"))
                rel = np.asarray(p.relations)
                parts = ", ".join(f"{r} {p.a[rel == r].mean() - p.b[rel == r].mean():+.2f}"
                                  for r in sorted(set(p.relations)) if not r.startswith("arithmetic"))
                total += 1
                decided["entity"] += v1 != "inconclusive"
                decided["entity x relation"] += v2 != "inconclusive"
                rows.append(f"| {run.name} | {name} | {one} {v1} | {two} {v2} | {parts} |")
    print("| run | statistic | entity clusters (the report's) | entity x relation (pigeonhole) "
          "| per relation (null - recipe) |\n|---|---|---|---|---|")
    print("\n".join(rows))
    print("\nDecided (false positives): " + "; ".join(f"{k} {v} of {total}" for k, v in decided.items())
          + f". The crossed interval is {np.nanmedian(ratios):.2f}x as wide as the report's (median).")
    print("\n| statistic | null pairs | RMS difference | item SE | between-model SD | replicates per recipe "
          "for model variance <= item variance |\n|---|---|---|---|---|---|")
    for name, dv in moments.items():
        d, v = np.array(dv).T
        s2 = max(0.0, float(np.mean(d ** 2 - v)) / 2)
        print(f"| {name} | {len(d)} | {np.sqrt(np.mean(d ** 2)):.3f} | {np.sqrt(np.mean(v)):.3f} | {np.sqrt(s2):.3f} "
              f"| {int(np.ceil(2 * s2 / np.mean(v))) if s2 > 0 else 1} |")


if __name__ == "__main__":
    main()
