"""The sizing criteria of a set of finished runs: the power-and-cost table in docs/results.md.

    .venv/bin/python scripts/sizing_table.py RUN [RUN ...]

Per run (its `summary.json`): (a) whether `leaky`'s own bench - twin drop is detected, (b) how many of the
A/A controls' statistics came out decided, (c) the web group's benchmark accuracy (its replicates together,
CI over models and items) against chance, and the run's minutes (all stages; training alone). These are
the criteria the default is sized by; the claims' verdicts are not read. CPU minutes (all stages) are what the
run costs whatever else the machine was doing: on an idle 2-core machine that keeps both cores busy, wall
time is about half of them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cleanroom.report.summary import Summary


def row(run: Path) -> str:
    s = Summary.model_validate_json((run / "summary.json").read_text())
    leaky = s.controls.leaky
    own = None if leaky is None else leaky.comparisons[0]
    detected = "n/a" if own is None else (f"{'yes' if own.verdict == 'supported' else 'no'} "
                                          f"({own.effect:+.3f} [{own.ci_low:+.3f}, {own.ci_high:+.3f}])")
    aa = [c for ctl in s.controls.null.values() for c in ctl.comparisons]
    decided = sum(c.verdict != "inconclusive" for c in aa)
    web = s.group_results.get("web", {}).get("bench")
    above = "n/a" if web is None else (f"{'yes' if web.ci_low > web.chance else 'no'} ({web.acc:.3f} "
                                       f"[{web.ci_low:.3f}, {web.ci_high:.3f}], chance {web.chance:.3f})")
    cpu = sum(s.cpu_seconds.values()) if s.cpu_seconds else float("nan")
    return (f"| {run} | {s.seed} | {detected} | {decided} of {len(aa)} | {above} | "
            f"{sum(s.timings.values()) / 60:.1f} ({s.timings.get('train', 0) / 60:.1f}) | {cpu / 60:.1f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", type=Path, nargs="+")
    args = ap.parse_args()
    print("| run | seed | (a) leaky's own drop detected | (b) A/A statistics decided | (c) web bench above chance "
          "| minutes (training) | CPU minutes |")
    print("|---|---|---|---|---|---|---|")
    for run in args.runs:
        print(row(run))


if __name__ == "__main__":
    main()
