"""WordNet noun glosses from the Debian package `wordnet-base` (the WordNet 3.0 database files).

A line of `data.noun` reads `offset lex_filenum ss_type w_cnt word lex_id [word lex_id ...] p_cnt
[pointers...] | gloss`; we keep the first word as the title and the gloss (definition plus example
sentences) as the passage. `lex_filenum` indexes `lexnames` (noun.animal, noun.artifact, ...).
"""

from __future__ import annotations

import os
from pathlib import Path

from cleanroom.errors import SourceMissingError
from cleanroom.sources import Seed

DEFAULT_DIR = Path("/usr/share/wordnet")
# lex_filenum -> lexicographer file (wndb(5WN)); 3..28 are the noun files
NOUN_LEXNAMES = ["Tops", "act", "animal", "artifact", "attribute", "body", "cognition", "communication",
                 "event", "feeling", "food", "group", "location", "motive", "object", "person", "phenomenon",
                 "plant", "possession", "process", "quantity", "relation", "shape", "state", "substance", "time"]


def wordnet_dir() -> Path:
    d = Path(os.environ.get("WORDNET_DIR", DEFAULT_DIR))
    if not (d / "data.noun").is_file():
        raise SourceMissingError(f"seed source `wordnet` needs the Debian package `wordnet-base` "
                                 f"(no {d / 'data.noun'}): apt-get install wordnet-base")
    return d


def parse_data_line(line: str) -> tuple[str, int, str] | None:
    """(first lemma, lex_filenum, gloss) of one synset line; None for the license header."""
    if not line or line.startswith(" "):
        return None
    head, sep, gloss = line.partition(" | ")
    if not sep:
        return None
    parts = head.split()
    lemma = parts[4].replace("_", " ")
    if "(" in lemma:  # adjective markers like "(a)"
        lemma = lemma[: lemma.index("(")]
    return lemma, int(parts[1]), gloss.strip()


def load_wordnet(min_gloss_words: int = 6) -> list[Seed]:
    d = wordnet_dir()
    lexnames = {3 + i: f"noun.{n}" for i, n in enumerate(NOUN_LEXNAMES)}
    seeds = []
    with open(d / "data.noun", encoding="utf-8", errors="replace") as f:
        for line in f:
            rec = parse_data_line(line)
            if rec is None:
                continue
            lemma, lex, gloss = rec
            if len(gloss.split()) >= min_gloss_words:
                seeds.append(Seed(lemma, gloss, "wordnet", lexnames.get(lex, "")))
    return seeds
