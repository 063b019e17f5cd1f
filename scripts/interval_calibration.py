"""How well each interval covers the truth when models differ: the table in docs/results.md.

    .venv/bin/python scripts/interval_calibration.py [--runs 400]

A thin caller of `cleanroom.stats.calibration.calibrate` (the simulation `tests/test_replicates.py` checks):
5 recipes x 2 replicates, 400 items in 100 entity clusters, the between-model SD planted at 0, 1 and 2.7
times the item SE (2.7 is what the lab measured for C3 before replicates), a zero and a non-zero effect.
Prints a Markdown table: per method, how often the 95% interval covers the truth and how often it
decides, for the claim (recipe vs recipe) and for the A/A control (replicate vs replicate).
"""

from __future__ import annotations

import argparse

from cleanroom.stats.calibration import METHODS, Design, calibrate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=400)
    args = ap.parse_args()
    se = calibrate(Design(), runs=40, methods=("contrast",))["contrast"]["item_se"]
    print(f"item SE of the contrast with no between-model variance: {se:.4f}\n")
    print("| between-model SD | true effect | method | claim: covered | claim: decided | A/A: covered | A/A: decided |")
    print("|---|---|---|---|---|---|---|")
    for ratio in (0.0, 1.0, 2.7):
        for effect in (0.0, 4 * se):
            res = calibrate(Design(effect=effect, between_sd=ratio * se), runs=args.runs)
            for m in METHODS:
                r = res[m]
                print(f"| {ratio:g} x item SE | {effect:.3f} | {m} | {r['claim_covered']:.3f} | "
                      f"{r['claim_decided']:.3f} | {r['aa_covered']:.3f} | {r['aa_decided']:.3f} |")


if __name__ == "__main__":
    main()
