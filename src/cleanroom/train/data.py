"""Batches from the token files written by the `tokenize` stage.

Training order is a pure function of (seed, step, rank): the stream is cut into `seq_len`-token
chunks, each epoch visits every chunk once in a seeded random order, and each epoch shifts chunk
boundaries by a seeded offset so that documents are not always split at the same place. Because
the batch for step `s` never depends on earlier batches, resuming at step `s` needs no saved data
cursor, and `world_size` processes with `batch_size` B each see exactly the samples one process with
batch `world_size * B` would see (so DDP and single-process runs are comparable).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from cleanroom.store import StoreError


def open_tokens(tokens_dir: Path, recipe: str, split: str = "train") -> np.ndarray:
    """Memory-map `tokens/<recipe>.bin` (train) or `.val.bin` (val) without reading it."""
    meta_path = tokens_dir / f"{recipe}.json"
    if not meta_path.exists():
        raise StoreError(f"no token files for recipe `{recipe}` in {tokens_dir} (run `cleanroom tokenize` first)")
    meta = json.loads(meta_path.read_text())
    path = tokens_dir / (f"{recipe}.bin" if split == "train" else f"{recipe}.val.bin")
    expected = meta[f"{split}_tokens"]
    dtype = np.dtype(meta["dtype"]).newbyteorder("<")
    if not path.exists() or path.stat().st_size != expected * dtype.itemsize:
        raise StoreError(f"corrupted token file {path}: expected {expected} tokens (re-run tokenize with --force)")
    return np.memmap(path, dtype=dtype, mode="r")


class TrainBatches:
    """Seeded epoch-permuted chunks; `batch(step, rank, world_size, batch_size)` -> (x, y) int64."""

    def __init__(self, tokens: np.ndarray, seq_len: int, seed: int):
        self.tokens, self.seq_len, self.seed = tokens, seq_len, seed
        # one sample = seq_len + 1 tokens (inputs and shifted targets); a shift < seq_len must still fit
        self.n_chunks = (len(tokens) - seq_len) // seq_len
        if self.n_chunks < 1:
            raise StoreError(f"only {len(tokens)} training tokens: need at least 2 * seq_len = {2 * seq_len}")
        self._epochs: dict[int, tuple[int, np.ndarray]] = {}

    def _epoch(self, e: int) -> tuple[int, np.ndarray]:
        if e not in self._epochs:
            rng = np.random.default_rng([self.seed, e])
            self._epochs = {k: v for k, v in self._epochs.items() if k >= e - 1}  # keep at most two
            self._epochs[e] = (int(rng.integers(0, self.seq_len)), rng.permutation(self.n_chunks))
        return self._epochs[e]

    def starts(self, first: int, count: int) -> np.ndarray:
        """Start offsets of global samples first .. first + count - 1."""
        out = np.empty(count, dtype=np.int64)
        for i, g in enumerate(range(first, first + count)):
            e, j = divmod(g, self.n_chunks)
            offset, perm = self._epoch(e)
            out[i] = offset + perm[j] * self.seq_len
        return out

    def epoch_of(self, step: int, world_size: int, batch_size: int) -> float:
        return step * world_size * batch_size / self.n_chunks

    def batch(self, step: int, rank: int, world_size: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        first = (step * world_size + rank) * batch_size
        return gather(self.tokens, self.starts(first, batch_size), self.seq_len)


def gather(tokens: np.ndarray, starts: np.ndarray, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    idx = starts[:, None] + np.arange(seq_len + 1)[None, :]
    chunk = torch.from_numpy(tokens[idx].astype(np.int64))
    return chunk[:, :-1], chunk[:, 1:]


def val_batches(tokens: np.ndarray, seq_len: int, batch_size: int,
                n_batches: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Fixed validation batches: consecutive chunks from the start of the val stream (fewer if it is short)."""
    n_chunks = (len(tokens) - 1) // seq_len
    if n_chunks < 1:
        raise StoreError(f"only {len(tokens)} validation tokens: need more than seq_len = {seq_len}")
    starts = np.arange(min(batch_size * n_batches, n_chunks), dtype=np.int64) * seq_len
    return [gather(tokens, starts[i:i + batch_size], seq_len) for i in range(0, len(starts), batch_size)]
