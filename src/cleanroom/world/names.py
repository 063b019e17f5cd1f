"""Fictional but pronounceable names from syllables. Nothing here names a real thing on purpose."""

from __future__ import annotations

import numpy as np

ONSETS = ["b", "br", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "th", "sh", "h", "j"]
VOWELS = ["a", "e", "i", "o", "u", "ei", "ou"]
CODAS = ["", "", "", "n", "r", "l", "s", "m"]


def _syllables(rng: np.random.Generator, n: int) -> str:
    return "".join(
        ONSETS[rng.integers(len(ONSETS))] + VOWELS[rng.integers(len(VOWELS))] + CODAS[rng.integers(len(CODAS))]
        for _ in range(n)
    )


class NameMaker:
    """Draws unique names across all kinds, so no entity shares a name with another."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.used: set[str] = set()

    def word(self, min_syl: int = 2, max_syl: int = 2, suffix: str = "", capital: bool = True) -> str:
        for _ in range(10_000):
            w = _syllables(self.rng, int(self.rng.integers(min_syl, max_syl + 1))) + suffix
            w = w.capitalize() if capital else w
            if len(w) >= 4 and w.lower() not in self.used:
                self.used.add(w.lower())
                return w
        raise RuntimeError("name space exhausted; lower the world sizes")

    def many(self, n: int, **kw) -> list[str]:
        return [self.word(**kw) for _ in range(n)]

    def person(self) -> str:
        for _ in range(10_000):
            first = _syllables(self.rng, 2).capitalize()
            last = _syllables(self.rng, 2).capitalize()
            name = f"{first} {last}"
            if name.lower() not in self.used and len(first) >= 3:
                self.used.add(name.lower())
                return name
        raise RuntimeError("name space exhausted; lower the world sizes")
