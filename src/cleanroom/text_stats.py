"""Corpus statistics that need no tokenizer: word-unit counts and distinct-n-gram ratios.

Budgets are set before the run's BPE tokenizer exists, so they are counted in *word units*
(`\\w+|[^\\w\\s]`: words and punctuation marks, as GPT-2's pre-tokenizer splits them). The tokenize
stage reports the real BPE token counts per recipe.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

WORD_UNITS = re.compile(r"\w+|[^\w\s]")
WORDS = re.compile(r"\w+")


TOKEN_UNIT = "word units (\\w+|[^\\w\\s])"  # how budgets are counted, in reports


def count_tokens(text: str) -> int:
    """Word units in `text` (words + punctuation marks)."""
    return len(WORD_UNITS.findall(text))


def distinct_ngram_ratio(texts: Iterable[str], n: int) -> float:
    """Distinct word n-grams / all word n-grams (within documents), lower-cased. 1.0 = no repetition."""
    seen: set[int] = set()
    total = 0
    for t in texts:
        w = WORDS.findall(t.lower())
        grams = [hash(tuple(w[i:i + n])) for i in range(len(w) - n + 1)]
        total += len(grams)
        seen.update(grams)
    return len(seen) / total if total else 0.0


def top_opening_share(texts: Iterable[str], words: int = 3) -> float:
    """Share of documents that start with the single most common opening (first `words` words)."""
    openings = Counter(" ".join(WORDS.findall(t.lower())[:words]) for t in texts)
    total = sum(openings.values())
    return openings.most_common(1)[0][1] / total if total else 0.0
