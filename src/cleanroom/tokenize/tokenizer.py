"""The run's tokenizer: one byte-level BPE (Hugging Face `tokenizers`) trained on the union of all
recipes, so that every recipe's model sees the same vocabulary and losses are comparable.

Byte-level means every string is encodable (no unknown token); the vocabulary is the 256 bytes plus
learned merges plus three special tokens. Documents are encoded as `<|bos|> text <|eos|>` and
concatenated into one token stream per recipe (see `encode_documents`). The tokenizer has no
post-processor: `tokenizer.encode(text)` returns the text's tokens only, and callers that want the
training-time framing add BOS themselves (`[bos_id] + encode(text).ids`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from cleanroom.errors import StoreError
from cleanroom.store import atomic_path

BOS = "<|bos|>"
EOS = "<|eos|>"
PAD = "<|pad|>"
SPECIAL_TOKENS = [BOS, EOS, PAD]


def new_tokenizer() -> Tokenizer:
    """An untrained byte-level BPE, GPT-2 style pre-tokenization (split on spaces/punctuation)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    return tok


def train_tokenizer(texts: Iterable[str], vocab_size: int, min_frequency: int = 2,
                    length: int | None = None) -> Tokenizer:
    """Train a BPE on a stream of texts (the iterator is consumed once; memory does not grow with it).

    Special tokens get the first ids (0, 1, 2), then the 256 bytes, then merges in learned order.
    """
    tok = new_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_batched(texts), trainer=trainer, length=length)
    return tok


def _batched(texts: Iterable[str], size: int = 1000) -> Iterator[list[str]]:
    batch: list[str] = []
    for t in texts:
        batch.append(t)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def save_tokenizer(tok: Tokenizer, path: str | Path) -> None:
    """Write `tokenizer.json` atomically."""
    with atomic_path(path) as tmp:
        tok.save(str(tmp))


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Load a `tokenizer.json` written by `save_tokenizer` (or an exported model's)."""
    p = Path(path)
    if p.is_dir():
        p = p / "tokenizer.json"
    if not p.exists():
        raise StoreError(f"tokenizer not found: {p} (run `cleanroom tokenize` first)")
    try:
        tok = Tokenizer.from_file(str(p))
    except Exception as e:  # the Rust side raises plain Exception subclasses
        raise StoreError(f"corrupted tokenizer file {p}: {e}") from None
    for s in SPECIAL_TOKENS:
        if tok.token_to_id(s) is None:
            raise StoreError(f"tokenizer {p} lacks the special token {s}")
    return tok


def special_ids(tok: Tokenizer) -> tuple[int, int, int]:
    """(bos_id, eos_id, pad_id)."""
    return tok.token_to_id(BOS), tok.token_to_id(EOS), tok.token_to_id(PAD)


def encode_documents(tok: Tokenizer, texts: list[str]) -> list[list[int]]:
    """Each text as `[bos] + tokens + [eos]` (batched in Rust, multi-threaded)."""
    bos, eos, _ = special_ids(tok)
    return [[bos, *enc.ids, eos] for enc in tok.encode_batch(texts, add_special_tokens=False)]
