"""Plumbing every benchmark shares: `--quick`, exactly one JSON line on stdout, logs on stderr.

A benchmark is `python bench/<name>.py [--quick] [...]`. It compares against a baseline run in the
same process (ratios, not absolute times: machines are shared and noisy) and prints one JSON object
on one line, so `... | tail -1 | python -c 'import json,sys; json.load(sys.stdin)'` always works;
anything else it says goes to stderr. `--quick` runs the same code paths at sizes that take seconds:
CI runs every benchmark that way (`.ci/run`), so a benchmark cannot rot unseen.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

# test doubles (tiny models, planted corpora) live under tests/, not in the package
TESTS = Path(__file__).resolve().parents[2] / "tests"
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))


def parser(doc: str | None) -> argparse.ArgumentParser:
    """An argument parser with the module docstring as help and the shared `--quick` flag."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="seconds-long run for CI: small sizes, the same code paths")
    return ap


def _clean(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None  # JSON has no NaN / Infinity
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    return x


def emit(result: dict[str, Any]) -> dict[str, Any]:
    """Print `result` as one JSON line on stdout (the benchmark's only stdout output)."""
    sys.stdout.write(json.dumps(_clean(result), default=str) + "\n")
    sys.stdout.flush()
    return result


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
