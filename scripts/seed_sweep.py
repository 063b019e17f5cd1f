"""Verdict stability over seeds: run the default experiment per seed and print a Markdown table.

    .venv/bin/python scripts/seed_sweep.py            # seeds 0 1 2 into runs/seed-<s>
    .venv/bin/python scripts/seed_sweep.py --seeds 0 1 2 3 --preset default

Finished runs are reused (the stage runner skips what is up to date), so the table can be printed again
for free.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from cleanroom.report.summary import Summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--preset", default="default")
    ap.add_argument("--runs", type=Path, default=Path("runs"))
    args = ap.parse_args()
    rows = []
    for seed in args.seeds:
        out = args.runs / f"seed-{seed}"
        cmd = [sys.executable, "-m", "cleanroom.cli", "run", "--preset", args.preset, "--out", str(out),
               "--set", f"seed={seed}"]
        subprocess.run(cmd, check=True)
        s = Summary.model_validate_json((out / "summary.json").read_text())
        cells = [f"{c.verdict} ({c.effect:+.3f} [{c.ci_low:+.3f}, {c.ci_high:+.3f}])" if c.effect is not None
                 else c.verdict for c in s.claims.values()]
        rows.append([str(seed)] + cells + [f"{sum(s.timings.values()) / 60:.1f}"])
    header = ["seed", "C1 benchmarks up", "C2a long tail down", "C2b twin drop larger", "C3 safer", "stage minutes"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
