"""Text normalisation and hashing shared by the curation steps.

Matching (dedup shingles, decontamination n-grams) works on lower-cased `\\w+` words, so case,
punctuation and whitespace edits never hide a copy. Words map to stable 64-bit hashes (blake2b,
cached per distinct word), so results do not depend on Python's per-process string hash seed.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

import numpy as np

WORDS = re.compile(r"\w+")
_MIX = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit constant: the polynomial base for n-gram hashes


def words(text: str) -> list[str]:
    """Lower-cased word tokens (`\\w+`) after Unicode NFKC normalisation."""
    return WORDS.findall(unicodedata.normalize("NFKC", text).lower())


def normalized(text: str) -> str:
    """The text exact dedup compares: NFKC, lower case, words only, single spaces."""
    return " ".join(words(text))


def text_hash(text: str) -> bytes:
    """A 128-bit hash of the normalised text."""
    return words_hash(words(text))


def words_hash(tokens: list[str]) -> bytes:
    """A 128-bit hash of a word sequence (the normalised text)."""
    return hashlib.blake2b(" ".join(tokens).encode(), digest_size=16).digest()


class WordHasher:
    """Stable 64-bit word hashes, cached (corpora reuse a small vocabulary many times)."""

    def __init__(self) -> None:
        self._cache: dict[str, int] = {}

    def __call__(self, tokens: list[str]) -> np.ndarray:
        cache = self._cache
        for w in set(tokens).difference(cache):
            cache[w] = int.from_bytes(hashlib.blake2b(w.encode(), digest_size=8).digest(), "little")
        return np.fromiter(map(cache.__getitem__, tokens), dtype=np.uint64, count=len(tokens))


def ngram_hashes(word_hashes: np.ndarray, n: int) -> np.ndarray:
    """Hashes of every contiguous n-gram of a word-hash sequence (length len-n+1; empty if shorter).

    A polynomial hash over uint64 (wrapping): h = ((w0 * B + w1) * B + w2) ...; order-sensitive, so
    `a b c` and `c b a` differ. Vectorised over all positions at once.
    """
    m = len(word_hashes) - n + 1
    if m <= 0:
        return np.empty(0, dtype=np.uint64)
    with np.errstate(over="ignore"):
        h = word_hashes[:m].copy()
        for j in range(1, n):
            h = h * _MIX + word_hashes[j:j + m]
    return h
