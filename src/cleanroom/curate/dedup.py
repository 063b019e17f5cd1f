"""Exact and near-duplicate removal. Both keep the first copy in corpus order and drop later ones.

- `ExactDedup`: a 128-bit hash of the normalised text (case, punctuation and whitespace ignored).
- `NearDedup`: MinHash over word shingles, computed in bulk by `rensa` (Rust), then LSH banding
  (`bands` bands of `num_perm / bands` rows) to find candidates among the documents kept so far, and
  a check that the estimated Jaccard similarity (share of equal MinHash values) reaches `threshold`.
  The check is what the threshold means; the bands only decide which pairs get checked (the S-curve
  (1/bands)^(1/rows) should sit below the threshold so true duplicates become candidates).
"""

from __future__ import annotations

import numpy as np

from cleanroom.config import ConfigError
from cleanroom.curate.base import Document, Removal, Step, require
from cleanroom.curate.text import WordHasher, ngram_hashes, words_hash


class ExactDedup(Step):
    """Drop documents whose normalised text equals an earlier document's."""

    name = "exact_dedup"

    def __init__(self) -> None:
        super().__init__()
        self._first: dict[bytes, str] = {}

    def features(self, batch: list[Document]) -> list[bytes]:
        """The hash of each document's normalised text (pure: any worker may compute it)."""
        return [words_hash(doc.words) for doc in batch]

    def judge(self, batch: list[Document]) -> list[Removal | None]:
        return self.decide(batch, self.features(batch))

    def decide(self, batch: list[Document], hashes: list[bytes]) -> list[Removal | None]:
        """Keep a document unless an earlier one had the same hash (call in corpus order)."""
        out: list[Removal | None] = []
        for doc, h in zip(batch, hashes, strict=True):
            first = self._first.get(h)
            if first is None:
                self._first[h] = doc.id
                out.append(None)
            else:
                out.append(self.remove(doc, "exact_duplicate", 1.0, matched=first))
        return out


def shingle_sets(word_lists: list[list[str]], shingle_size: int, hasher: WordHasher) -> tuple[np.ndarray, np.ndarray]:
    """Word-shingle hashes of every document as one flat uint64 array plus row offsets (n + 1).

    Vectorised over the whole batch: one hash lookup pass over all words, one n-gram pass over the
    concatenation, then shingles that straddle two documents are dropped. A document shorter than
    one shingle contributes one shingle of all its words; an empty one none.
    """
    lengths = np.fromiter(map(len, word_lists), dtype=np.int64, count=len(word_lists))
    flat_words = hasher([w for toks in word_lists for w in toks])
    starts = np.concatenate([[0], np.cumsum(lengths)])
    grams = ngram_hashes(flat_words, shingle_size)
    # shingle i starts at word i; keep it if it ends inside the same document
    doc_of = np.repeat(np.arange(len(word_lists)), lengths)
    keep = np.zeros(len(grams), dtype=bool)
    if len(grams):
        keep = doc_of[: len(grams)] == doc_of[shingle_size - 1:]
    counts = np.maximum(lengths - shingle_size + 1, 0)
    parts, short = grams[keep], np.flatnonzero((lengths > 0) & (lengths < shingle_size))
    if len(short):  # short documents: one shingle of all their words, spliced in document order
        extra = {int(i): ngram_hashes(flat_words[starts[i]:starts[i + 1]], int(lengths[i]))[0] for i in short}
        counts[short] = 1
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.uint64)
        out = np.empty(int(offsets[-1]), dtype=np.uint64)
        pos = 0
        for i in range(len(word_lists)):
            c = int(counts[i])
            if i in extra:
                out[int(offsets[i])] = extra[i]
            elif c:
                out[int(offsets[i]):int(offsets[i]) + c] = parts[pos:pos + c]
                pos += c
        return out, offsets
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.uint64)
    return parts, offsets


def minhash_signatures(flat: np.ndarray, offsets: np.ndarray, num_perm: int, seed: int) -> np.ndarray:
    """MinHash signatures (n, num_perm) uint32 of the shingle sets, computed by rensa in one call."""
    rensa = require("rensa")
    if len(offsets) <= 1:
        return np.empty((0, num_perm), dtype=np.uint32)
    matrix = rensa.RMinHash.digest_matrix_from_flat_token_hashes(flat, offsets, num_perm, seed)
    return np.asarray(matrix.to_rows(), dtype=np.uint32).reshape(len(offsets) - 1, num_perm)


def band_keys(signatures: np.ndarray, bands: int) -> np.ndarray:
    """One uint64 key per (document, band): a polynomial hash of the band's `rows` MinHash values."""
    n, num_perm = signatures.shape
    rows = num_perm // bands
    sig = signatures[:, : bands * rows].reshape(n, bands, rows).astype(np.uint64)
    key = np.zeros((n, bands), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for r in range(rows):
            key = key * np.uint64(0x100000001B3) + sig[:, :, r]
    return key


class NearDedup(Step):
    """MinHash-LSH near-duplicate removal against all documents kept so far (keep the first copy)."""

    name = "near_dedup"

    def __init__(self, shingle_size: int = 5, num_perm: int = 128, bands: int = 16, threshold: float = 0.8,
                 seed: int = 0) -> None:
        super().__init__()
        if bands > num_perm:
            raise ConfigError(f"config key `curate.bands` ({bands}) must be <= curate.num_perm ({num_perm})")
        self.shingle_size, self.num_perm, self.bands, self.threshold = shingle_size, num_perm, bands, threshold
        self.seed = seed
        self._hasher = WordHasher()
        # One index for all bands (a band's key is salted with its band number): sorted key and
        # kept-document arrays, searched with np.searchsorted, merged once per batch.
        self._salt = np.random.default_rng(seed).integers(1, 2**63, size=bands, dtype=np.uint64)
        self._keys = np.empty(0, dtype=np.uint64)
        self._docs = np.empty(0, dtype=np.int64)
        self._kept_sigs: list[np.ndarray] = []
        self._kept_ids: list[str] = []
        self._need = int(np.ceil(threshold * num_perm - 1e-9))  # equal MinHash values that reach threshold

    def features(self, batch: list[Document]) -> list[tuple[np.ndarray, bool]]:
        """Each document's MinHash signature and whether it has any shingle (pure: any worker may compute
        them; a signature depends on its document alone, whatever else is in the batch)."""
        flat, offsets = shingle_sets([d.words for d in batch], self.shingle_size, self._hasher)
        sigs = minhash_signatures(flat, offsets, self.num_perm, self.seed)
        has_words = np.diff(offsets) > 0
        return list(zip(sigs, has_words.tolist(), strict=True))

    def judge(self, batch: list[Document]) -> list[Removal | None]:
        return self.decide(batch, self.features(batch))

    def decide(self, batch: list[Document], features: list[tuple[np.ndarray, bool]]) -> list[Removal | None]:
        """Near-duplicate verdicts against every document kept so far (call in corpus order)."""
        if not batch:
            return []
        sigs = np.stack([f[0] for f in features]).astype(np.uint32, copy=False)
        has_words = np.fromiter((f[1] for f in features), dtype=bool, count=len(features))
        keys = band_keys(sigs, self.bands) ^ self._salt  # (n, bands)
        # Fast path, vectorised: a document none of whose band keys occurs in the index or elsewhere in
        # the batch cannot be a near-duplicate of anything, so it is kept without a look at the others.
        flat_keys = keys.ravel()
        _, inverse, counts = np.unique(flat_keys, return_inverse=True, return_counts=True)
        collides = (counts[inverse] > 1) | np.isin(flat_keys, self._keys)
        suspect = collides.reshape(keys.shape).any(axis=1) & has_words
        out: list[Removal | None] = [None] * len(batch)
        kept = list(np.flatnonzero(~suspect & has_words))
        first_new = len(self._kept_ids)
        self._kept_ids += [batch[i].id for i in kept]
        self._kept_sigs += list(sigs[kept])
        batch_index: dict[int, list[int]] = {}  # keys of suspects kept in this batch
        for i in np.flatnonzero(suspect).tolist():  # in corpus order: dedup keeps the first copy
            row = keys[i]
            match, equal = self._best_match(sigs[i], row, batch_index)
            if match >= 0:
                out[i] = self.remove(batch[i], "near_duplicate", equal / self.num_perm, matched=self._kept_ids[match])
                continue
            idx = len(self._kept_ids)
            self._kept_ids.append(batch[i].id)
            self._kept_sigs.append(sigs[i])
            kept.append(i)
            for key in row.tolist():
                batch_index.setdefault(key, []).append(idx)
        # merge this batch's kept documents into the sorted index (kept order == index order)
        new_keys = keys[kept].ravel()
        new_docs = np.repeat(np.arange(first_new, first_new + len(kept), dtype=np.int64), self.bands)
        all_keys = np.concatenate([self._keys, new_keys])
        order = np.argsort(all_keys, kind="stable")
        self._keys, self._docs = all_keys[order], np.concatenate([self._docs, new_docs])[order]
        return out

    def _best_match(self, sig: np.ndarray, keys: np.ndarray, batch_index: dict[int, list[int]]) -> tuple[int, int]:
        """A kept document (the earliest-kept first) whose estimated Jaccard reaches the threshold."""
        lo = np.searchsorted(self._keys, keys, side="left")
        hi = np.searchsorted(self._keys, keys, side="right")
        candidates = {int(d) for a, b in zip(lo.tolist(), hi.tolist(), strict=True) if b > a
                      for d in self._docs[a:b]}
        for key in keys.tolist():
            candidates.update(batch_index.get(key, ()))
        for idx in sorted(candidates):
            equal = int(np.count_nonzero(self._kept_sigs[idx] == sig))
            if equal >= self._need:
                return idx, equal
        return -1, 0
