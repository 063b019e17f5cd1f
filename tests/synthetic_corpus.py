"""Synthetic corpora with planted duplicates, for the curation tests and `bench/dedup_throughput.py`.

Base documents are random prose over a Zipf-distributed pseudo-word vocabulary (plus English
function words), so unrelated documents share almost no shingles; planted copies are then known
exactly: exact duplicates (verbatim, or differing only in case and whitespace) and near-duplicates
(a few word substitutions, insertions or deletions).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cleanroom.curate.base import Document

FUNCTION_WORDS = ["the", "of", "and", "to", "in", "is", "that", "it", "was", "for", "on", "with", "as", "by"]
SYLLABLES = ["ka", "lo", "mi", "ren", "tu", "sha", "vel", "dor", "qui", "zan", "bex", "oru", "pim", "lat", "nes"]


def vocabulary(rng: np.random.Generator, size: int = 6000) -> list[str]:
    """Distinct pseudo-words of 2-4 syllables."""
    words: set[str] = set()
    while len(words) < size:
        k = int(rng.integers(2, 5))
        words.add("".join(SYLLABLES[i] for i in rng.integers(len(SYLLABLES), size=k)))
    return sorted(words)


def random_text(rng: np.random.Generator, vocab: list[str], n_words: int) -> str:
    """Sentences of Zipf-distributed pseudo-words, a quarter of them function words."""
    ranks = np.minimum(rng.zipf(1.1, size=n_words), len(vocab)) - 1
    perm = rng.permutation(len(vocab))  # which pseudo-words are frequent differs per call
    out = []
    for i, r in enumerate(ranks):
        w = FUNCTION_WORDS[int(rng.integers(len(FUNCTION_WORDS)))] if rng.random() < 0.25 else vocab[perm[r]]
        out.append(w.capitalize() if i % 12 == 0 else w)
        if i % 12 == 11:
            out[-1] += "."
    return " ".join(out) + "."


def edit_words(text: str, rng: np.random.Generator, n_edits: int, vocab: list[str]) -> str:
    """`n_edits` random word substitutions, insertions or deletions."""
    words = text.split()
    for _ in range(n_edits):
        op = int(rng.integers(3))
        i = int(rng.integers(len(words)))
        if op == 0:
            words[i] = vocab[int(rng.integers(len(vocab)))]
        elif op == 1:
            words.insert(i, vocab[int(rng.integers(len(vocab)))])
        elif len(words) > 1:
            del words[i]
    return " ".join(words)


@dataclass
class PlantedCorpus:
    docs: list[Document]
    exact: set[str] = field(default_factory=set)  # ids of planted exact copies (to be removed)
    near: set[str] = field(default_factory=set)  # ids of planted near-duplicates (to be removed)

    @property
    def texts(self) -> list[str]:
        return [d.text for d in self.docs]


def planted_corpus(n_base: int, n_exact: int, n_near: int, seed: int = 0, min_words: int = 80,
                   max_words: int = 200, max_edits: int = 3) -> PlantedCorpus:
    """`n_base` random documents, then copies of earlier ones inserted at random later positions."""
    rng = np.random.default_rng(seed)
    vocab = vocabulary(rng)
    base = [random_text(rng, vocab, int(rng.integers(min_words, max_words + 1))) for _ in range(n_base)]
    order: list[tuple[str, str]] = [(f"base-{i:06d}", t) for i, t in enumerate(base)]
    planted: list[tuple[str, str, str]] = []
    for k in range(n_exact):
        src = base[int(rng.integers(n_base))]
        text = src.upper() if k % 3 == 1 else "  " + src.replace(" ", "\n", 3) if k % 3 == 2 else src
        planted.append((f"exact-{k:06d}", text, "exact"))
    for k in range(n_near):
        src = base[int(rng.integers(n_base))]
        planted.append((f"near-{k:06d}", edit_words(src, rng, int(rng.integers(1, max_edits + 1)), vocab), "near"))
    corpus = PlantedCorpus(docs=[])
    # every copy goes after all base documents so its source is always earlier (dedup keeps the first)
    rest = [(pid, text) for pid, text, _ in planted]
    for j in rng.permutation(len(rest)):
        order.append(rest[j])
    for pid, _text, kind in planted:
        (corpus.exact if kind == "exact" else corpus.near).add(pid)
    corpus.docs = [Document(id=i, text=t, meta={}, row={"id": i, "text": t}) for i, t in order]
    return corpus
