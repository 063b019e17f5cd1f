"""The `tokenize` stage: train the run's tokenizer, then turn each recipe's corpus into token files.

Outputs (run root):
- `tokenizer.json`: the byte-level BPE trained on the union of the experiment's recipes' corpora (web,
  textbook, filtered_web, mix; not the controls, so adding a control never changes the other models).
- `tokens/<recipe>.bin` / `tokens/<recipe>.val.bin`: the training / validation token streams, each the
  concatenation of `<|bos|> text <|eos|>` over documents, raw little-endian `uint16` (or `uint32`
  when the vocabulary exceeds 65,536), readable with `numpy.memmap`.
- `tokens/<recipe>.idx` / `tokens/<recipe>.val.idx`: raw little-endian `int64` document start offsets
  into the matching stream, plus a final entry equal to the stream length (so doc i is
  `tokens[idx[i]:idx[i+1]]`).
- `tokens/<recipe>.json`: the index metadata (dtype, token and document counts, tokenizer checksum).

The validation split is by document, chosen by a seeded hash of the document id, so it does not move
when shards are re-ordered or another recipe changes. Work is streamed shard by shard (memory stays
flat whatever the corpus size) and each finished shard is kept under `tokens/.partial/` until the
stage ends, so an interrupted stage resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from cleanroom.config import RECIPES, ExperimentConfig
from cleanroom.contract import StageResult
from cleanroom.corpus import corpus_dir
from cleanroom.store import RunStore, StoreError, atomic_path, sha256_file, write_json
from cleanroom.tokenize.tokenizer import encode_documents, load_tokenizer, save_tokenizer, train_tokenizer
from cleanroom.ui import progress, say

PARTIAL = "tokens/.partial"
BATCH_ROWS = 1000


def token_dtype(vocab_size: int) -> np.dtype:
    """The narrowest unsigned dtype that holds every token id."""
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


def corpus_shards(cfg: ExperimentConfig, store: RunStore, recipe: str) -> list[Path]:
    d = store.path(corpus_dir(cfg, store, recipe))
    shards = sorted(d.glob("*.parquet")) if d.is_dir() else []
    if not shards:
        raise StoreError(f"no corpus for recipe `{recipe}` in {d} (run `cleanroom generate` first)")
    return shards


def _iter_batches(shard: Path, columns: list[str]) -> Iterator[dict[str, list]]:
    try:
        pf = pq.ParquetFile(shard)
    except Exception as e:
        raise StoreError(f"corrupted file {shard}: not readable as Parquet ({e})") from None
    cols = [c for c in columns if c in pf.schema_arrow.names]
    if "text" not in cols:
        raise StoreError(f"corpus shard {shard} has no `text` column")
    for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=cols):
        yield batch.to_pydict()


def is_validation(doc_key: str, seed: int, fraction: float) -> bool:
    """Seeded, stable per-document split: the same document always lands on the same side."""
    h = hashlib.blake2b(f"{seed}:{doc_key}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") / 2**64 < fraction


def _state_key(cfg: ExperimentConfig, shards: dict[str, list[Path]]) -> str:
    """What partial results depend on: tokenizer config, seed, and the corpus files (name + size)."""
    h = hashlib.sha256(cfg.fingerprint("tokenizer").encode())
    for recipe in sorted(shards):
        for s in shards[recipe]:
            h.update(f"{recipe}/{s.name}:{s.stat().st_size}\n".encode())
    return h.hexdigest()[:16]


def _tokenize_shard(tok, shard: Path, out: Path, seed: int, val_fraction: float, dtype: np.dtype, task) -> None:
    """Encode one shard into `out` (an .npz of train/val tokens and per-document lengths)."""
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": []}
    lens: dict[str, list[int]] = {"train": [], "val": []}
    for batch in _iter_batches(shard, ["id", "text"]):
        texts = batch["text"]
        keys = batch.get("id") or [hashlib.sha1(t.encode()).hexdigest() for t in texts]
        for key, ids in zip(keys, encode_documents(tok, texts), strict=True):
            split = "val" if is_validation(str(key), seed, val_fraction) else "train"
            parts[split].append(np.asarray(ids, dtype=dtype))
            lens[split].append(len(ids))
        task.advance(len(texts))
    arrays = {
        f"{split}_tokens": np.concatenate(parts[split]) if parts[split] else np.zeros(0, dtype)
        for split in parts
    }
    arrays.update({f"{split}_lens": np.asarray(lens[split], dtype=np.int64) for split in lens})
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


def _concat_parts(parts: list[Path], split: str, bin_path: Path, idx_path: Path) -> tuple[int, int]:
    """Stream shard parts into one token file and one offsets file; return (tokens, documents)."""
    n_tokens = n_docs = 0
    with atomic_path(bin_path) as tmp_bin, atomic_path(idx_path) as tmp_idx:
        with open(tmp_bin, "wb") as fb, open(tmp_idx, "wb") as fi:
            for p in parts:
                with np.load(p, allow_pickle=False) as z:
                    toks, lens = z[f"{split}_tokens"], z[f"{split}_lens"]
                fb.write(toks.tobytes())
                starts = n_tokens + np.concatenate([[0], np.cumsum(lens)[:-1]]) if len(lens) else lens
                fi.write(np.asarray(starts, dtype="<i8").tobytes())
                n_tokens += int(toks.size)
                n_docs += int(lens.size)
            fi.write(np.asarray([n_tokens], dtype="<i8").tobytes())
    return n_tokens, n_docs


def run_tokenize(cfg: ExperimentConfig, store: RunStore) -> StageResult:
    """Train the tokenizer on the experiment's recipes, then write each corpus's token files (resumable).

    A recipe's replicates have no token files of their own: they train on the recipe's. The BPE learns
    from the world lab's main recipes only, so adding a control or a `[corpora.NAME]` recipe changes no
    other recipe's tokens (and retrains no other model)."""
    recipes = cfg.recipe_names()
    main = [r for r in recipes if r in RECIPES]
    shards = {r: corpus_shards(cfg, store, r) for r in recipes}
    key = _state_key(cfg, shards)
    partial = store.path(PARTIAL)
    state_path = partial / "state.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    if state.get("key") != key:  # different config or corpora: partial work is stale
        shutil.rmtree(partial, ignore_errors=True)
        state = {"key": key}
    n_docs = {r: sum(pq.ParquetFile(s).metadata.num_rows for s in shards[r]) for r in recipes}

    tok_path = store.path("tokenizer.json")
    if state.get("tokenizer_sha256") and tok_path.exists() and sha256_file(tok_path) == state["tokenizer_sha256"]:
        tok = load_tokenizer(tok_path)
        say(f"  tokenizer: reusing {tok_path} (vocab {tok.get_vocab_size()})")
    else:
        with progress("tokenizer (BPE)", total=sum(n_docs[r] for r in main)) as task:

            def texts() -> Iterator[str]:
                for r in main:
                    for s in shards[r]:
                        for batch in _iter_batches(s, ["text"]):
                            task.advance(len(batch["text"]))
                            yield from batch["text"]

            tok = train_tokenizer(texts(), cfg.tokenizer.vocab_size, cfg.tokenizer.min_frequency)
            task.set(info=f"vocab {tok.get_vocab_size()}")
        save_tokenizer(tok, tok_path)
        state["tokenizer_sha256"] = sha256_file(tok_path)
        write_json(state_path, state)

    vocab = tok.get_vocab_size()
    dtype = token_dtype(vocab)
    stats: dict = {"vocab_size": vocab, "dtype": dtype.name, "recipes": {}}
    outputs = ["tokenizer.json"]
    for r in recipes:
        parts = []
        with progress(f"tokenize {r}", total=n_docs[r]) as task:
            for i, s in enumerate(shards[r]):
                part = partial / r / f"{i:05d}.npz"
                if part.exists():
                    task.advance(pq.ParquetFile(s).metadata.num_rows)
                else:
                    _tokenize_shard(tok, s, part, cfg.seed, cfg.tokenizer.val_fraction, dtype, task)
                parts.append(part)
            n_train, d_train = _concat_parts(parts, "train", store.path(f"tokens/{r}.bin"),
                                             store.path(f"tokens/{r}.idx"))
            n_val, d_val = _concat_parts(parts, "val", store.path(f"tokens/{r}.val.bin"),
                                         store.path(f"tokens/{r}.val.idx"))
            task.set(info=f"{n_train:,} train + {n_val:,} val tokens")
        if n_val <= cfg.model.seq_len:
            raise StoreError(
                f"recipe `{r}` has only {n_val} validation tokens (need > model.seq_len={cfg.model.seq_len}); "
                f"raise tokenizer.val_fraction or the corpus size"
            )
        meta = {
            "recipe": r, "dtype": dtype.name, "vocab_size": vocab,
            "train_tokens": n_train, "train_docs": d_train, "val_tokens": n_val, "val_docs": d_val,
            "tokenizer_sha256": state["tokenizer_sha256"], "corpus": corpus_dir(cfg, store, r),
            "format": "raw little-endian tokens (.bin) and int64 document start offsets + total (.idx)",
        }
        store.write_json(f"tokens/{r}.json", meta)
        stats["recipes"][r] = {k: meta[k] for k in ("train_tokens", "val_tokens", "train_docs", "val_docs")}
        outputs += [f"tokens/{r}{suffix}" for suffix in (".bin", ".idx", ".val.bin", ".val.idx", ".json")]
    shutil.rmtree(partial, ignore_errors=True)
    return StageResult(outputs=outputs, stats=stats)
