"""Verdict stability over seeds: run an experiment per seed and print Markdown tables.

    .venv/bin/python scripts/seed_sweep.py                       # default preset, seeds 0 1 2 -> runs/seed-<s>
    .venv/bin/python scripts/seed_sweep.py --preset validate     # + controls, safeguards -> runs/validate-seed-<s>
    .venv/bin/python scripts/seed_sweep.py --seeds 0 1 2 3 --set runtime.jobs=2
    .venv/bin/python scripts/seed_sweep.py --no-run --runs /path/to/runs      # tables from finished runs only

Finished runs are reused (the stage runner skips what is up to date), so the tables can be printed again
for free; a `validate` run starts from a copy of the same seed's finished default run, whose models it
shares, so only the controls and safeguards are trained. The second table is the instrument's own
record: the null controls' claim statistics (which must be inconclusive; any that is not is a false
positive), whether the leaky control's contamination was detected, and what the diversity control did.

The claims table's last row, "seeds pooled" (and a last table, for the null controls' statistics),
takes the *seed* as the unit: a random-effects meta-analysis of the per-seed effects and their CIs
(`cleanroom.evals.stats.pool_runs`: DerSimonian-Laird between-seed variance, Student-t interval with
k - 1 degrees of freedom, modified Knapp-Hartung variance). A per-run CI resamples items and entity
clusters of one world and one training run; this one also carries what changes with the seed (the
world, the corpora, the init and data order), the variation the null control shows a per-run CI leaves
out. With three seeds the interval is wide (t = 4.30): it says "supported" only for an effect that is
large against its seed-to-seed spread.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from cleanroom.evals.stats import pool_runs, verdict
from cleanroom.report.summary import Comparison, Summary


def cell(c: Comparison) -> str:
    if c.effect is None:
        return c.verdict
    return f"{c.verdict} ({c.effect:+.3f} [{c.ci_low:+.3f}, {c.ci_high:+.3f}])"


def pooled(comparisons: list[Comparison]) -> str:
    """The seeds' comparisons pooled (`stats.pool_runs`: random effects, t over seeds) with the lab's verdict."""
    if len(comparisons) < 2:
        return "n/a (one seed)"
    mean, lo, hi = pool_runs(*zip(*[(c.effect, c.ci_low, c.ci_high) for c in comparisons], strict=True))
    return f"{verdict(lo, hi)} ({mean:+.3f} [{lo:+.3f}, {hi:+.3f}])"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--preset", default="default")
    ap.add_argument("--runs", type=Path, default=Path("runs"))
    ap.add_argument("--set", dest="sets", action="append", default=[], help="extra overrides for every run")
    ap.add_argument("--no-run", action="store_true", help="only read finished runs' summary.json (run nothing)")
    args = ap.parse_args()
    prefix = "seed" if args.preset == "default" else f"{args.preset}-seed"
    claims, controls = [], []
    claim_effects: dict[str, list[Comparison]] = {}
    null_effects: dict[str, list[Comparison]] = {}
    false_pos = tested = 0
    for seed in args.seeds:
        out = args.runs / f"{prefix}-{seed}"
        default_run = args.runs / f"seed-{seed}"
        if args.preset != "default" and not out.exists() and (default_run / "summary.json").exists():
            shutil.copytree(default_run, out)
        cmd = [sys.executable, "-m", "cleanroom.cli", "run", "--preset", args.preset, "--out", str(out),
               "--set", f"seed={seed}"] + [x for s in args.sets for x in ("--set", s)]
        if not args.no_run:
            subprocess.run(cmd, check=True)
        elif not (out / "summary.json").exists():
            sys.exit(f"--no-run: {out} has no summary.json (run it first, without --no-run)")
        s = Summary.model_validate_json((out / "summary.json").read_text())
        claims.append([str(seed)] + [cell(c.comparisons[0]) if c.comparisons else c.verdict
                                     for c in s.claims.values()] + [f"{sum(s.timings.values()) / 60:.1f}"])
        for name, c in s.claims.items():
            if c.comparisons and c.comparisons[0].effect is not None:
                claim_effects.setdefault(name, []).append(c.comparisons[0])
        row = [str(seed)]
        for name, c in s.controls.items():
            if name.startswith("null_"):
                decided = [cmp.statistic for cmp in c.comparisons if cmp.verdict != "inconclusive"]
                false_pos += len(decided)
                tested += len(c.comparisons)
                for cmp in c.comparisons:
                    if cmp.effect is not None:
                        null_effects.setdefault(f"{name} {cmp.statistic}", []).append(cmp)
                row.append(f"{name}: {len(decided)} of {len(c.comparisons)} decided"
                           + (f" ({', '.join(decided)})" if decided else ""))
            else:
                row.append(f"{name}: " + "; ".join(cell(cmp) for cmp in c.comparisons))
        controls.append(row)
    claims.append(["seeds pooled"] + [pooled(claim_effects.get(name, [])) for name in s.claims] + [""])
    print(table(["seed", "C1 benchmarks up", "C2a long tail down", "C2b twin drop larger", "C3 safer",
                 "stage minutes"], claims))
    print()
    width = max(len(r) for r in controls)
    print(table(["seed"] + ["control"] * (width - 1), [r + [""] * (width - len(r)) for r in controls]))
    if tested:
        print(f"\nnull control: {false_pos} of {tested} claim statistics decided where no difference exists "
              f"(false-positive rate {false_pos / tested:.2f}; nominal 0.05 per statistic)")
        print("\nnull control, seeds pooled (must be inconclusive):")
        print(table(["statistic", "seeds", "pooled"], [[k, str(len(v)), pooled(v)] for k, v in null_effects.items()]))


if __name__ == "__main__":
    main()
