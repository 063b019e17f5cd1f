"""User-supplied seeds: a `.txt` file (one topic per line) or `.jsonl` ({"title", "passage"} per line)."""

from __future__ import annotations

import json
from pathlib import Path

from cleanroom.errors import SourceMissingError
from cleanroom.sources import Seed


def load_file(path: Path) -> list[Seed]:
    lines = path.read_text(encoding="utf-8").splitlines()
    if path.suffix == ".jsonl":
        seeds = []
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                seeds.append(Seed(str(rec["title"]), str(rec.get("passage", "")), path.name,
                                  str(rec.get("category", ""))))
            except (json.JSONDecodeError, KeyError, TypeError):
                raise SourceMissingError(f"{path}:{n}: expected a JSON object with a `title`") from None
        return seeds
    return [Seed(t.strip(), "", path.name) for t in lines if t.strip()]
