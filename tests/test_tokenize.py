"""The tokenize stage: tokenizer training, token files, validation split, streaming resume."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from cleanroom.config import load_config
from cleanroom.store import RunStore, StoreError
from cleanroom.tokenize import stage as tokenize_mod
from cleanroom.tokenize.stage import is_validation, run_tokenize, token_dtype
from cleanroom.tokenize.tokenizer import BOS, EOS, PAD, encode_documents, load_tokenizer

WORDS = ("the quartz mineral melts at high heat while the singer Ana Velo released an album in spring "
         "and the river town of Porto Nara trades salt").split()


def write_corpus(store: RunStore, recipe: str, n_docs: int, shards: int = 2, seed: int = 0) -> dict[str, str]:
    """A synthetic corpus in the generate stage's format; returns {id: text} in shard order."""
    rng = np.random.default_rng(seed)
    texts = [" ".join(rng.choice(WORDS, size=int(rng.integers(20, 60)))) + "." for _ in range(n_docs)]
    per = -(-n_docs // shards)
    out = {}
    for s in range(shards):
        chunk = texts[s * per:(s + 1) * per]
        ids = [f"{recipe}-{s}-{i}" for i in range(len(chunk))]
        store.write_parquet(f"corpora/{recipe}/part-{s:05d}.parquet", pa.table({
            "id": ids, "text": chunk, "recipe": [recipe] * len(chunk), "source": ["synthetic"] * len(chunk),
            "meta": ["{}"] * len(chunk),
        }))
        out.update(zip(ids, chunk, strict=True))
    return out


def small_cfg(**over):
    sets = [f"{k}={v}" for k, v in {"recipes.names": '["web", "textbook"]', "tokenizer.vocab_size": 400,
                                      "tokenizer.val_fraction": 0.1, "model.seq_len": 32, **over}.items()]
    return load_config("smoke", overrides=sets)


@pytest.fixture()
def corpus_store(tmp_path):
    store = RunStore(tmp_path / "run")
    texts = {"web": write_corpus(store, "web", 300, seed=1), "textbook": write_corpus(store, "textbook", 200, seed=2)}
    return store, texts


def test_tokenize_writes_streams_that_decode_to_the_corpus(corpus_store):
    store, texts = corpus_store
    cfg = small_cfg()
    result = run_tokenize(cfg, store)
    tok = load_tokenizer(store.path("tokenizer.json"))
    assert 300 < tok.get_vocab_size() <= 400  # a tiny corpus may run out of merges first
    assert [tok.token_to_id(s) for s in (BOS, EOS, PAD)] == [0, 1, 2]
    for recipe in ("web", "textbook"):
        meta = json.loads(store.path(f"tokens/{recipe}.json").read_text())
        assert meta["dtype"] == "uint16"
        train = np.fromfile(store.path(f"tokens/{recipe}.bin"), dtype="<u2")
        val = np.fromfile(store.path(f"tokens/{recipe}.val.bin"), dtype="<u2")
        idx = np.fromfile(store.path(f"tokens/{recipe}.idx"), dtype="<i8")
        assert len(train) == meta["train_tokens"] and len(val) == meta["val_tokens"]
        assert meta["train_docs"] + meta["val_docs"] == len(texts[recipe])
        assert 0 < meta["val_docs"] < meta["train_docs"]
        assert idx[-1] == len(train) and len(idx) == meta["train_docs"] + 1
        # every document is framed <|bos|> ... <|eos|> and decodes back to its text
        docs = [train[idx[i]:idx[i + 1]] for i in range(len(idx) - 1)]
        assert all(d[0] == 0 and d[-1] == 1 for d in docs)
        decoded = [tok.decode(d[1:-1].tolist()) for d in docs]
        assert decoded == [t for k, t in texts[recipe].items() if not is_validation(k, cfg.seed, 0.1)]
    assert {"tokenizer.json", "tokens/web.bin", "tokens/web.val.bin"} <= set(result.outputs)
    assert not store.path("tokens/.partial").exists()


def test_encode_documents_frames_each_text():
    from cleanroom.tokenize.tokenizer import train_tokenizer

    tok = train_tokenizer([" ".join(WORDS)] * 20, 300)
    ids = encode_documents(tok, ["the quartz", "salt"])
    assert ids[0][0] == tok.token_to_id(BOS) and ids[0][-1] == tok.token_to_id(EOS)
    assert tok.decode(ids[1][1:-1]) == "salt"


def test_validation_split_is_seeded_and_stable():
    keys = [f"doc-{i}" for i in range(5000)]
    a = [is_validation(k, 0, 0.1) for k in keys]
    assert a == [is_validation(k, 0, 0.1) for k in keys]
    assert a != [is_validation(k, 1, 0.1) for k in keys]
    assert 0.08 < sum(a) / len(a) < 0.12


def test_token_dtype():
    assert token_dtype(4096) == np.uint16 and token_dtype(65536) == np.uint16 and token_dtype(65537) == np.uint32


class Crash(Exception):
    pass


def test_interrupted_tokenize_resumes_from_finished_shards(corpus_store, monkeypatch):
    store, _ = corpus_store
    cfg = small_cfg()
    calls, crash = [], [True]
    real = tokenize_mod._tokenize_shard

    def flaky(tok, shard, out, *args):
        calls.append(shard.name)
        if crash[0] and len(calls) == 2:
            raise Crash  # the process dies after finishing one shard
        return real(tok, shard, out, *args)

    monkeypatch.setattr(tokenize_mod, "_tokenize_shard", flaky)
    with pytest.raises(Crash):
        run_tokenize(cfg, store)
    assert store.path("tokens/.partial/web/00000.npz").exists()
    calls.clear()
    crash[0] = False
    run_tokenize(cfg, store)
    assert calls == ["part-00001.parquet", "part-00000.parquet", "part-00001.parquet"]  # web shard 0 reused
    resumed = store.path("tokens/web.bin").read_bytes()

    fresh = RunStore(store.root.parent / "fresh")
    write_corpus(fresh, "web", 300, seed=1)
    write_corpus(fresh, "textbook", 200, seed=2)
    monkeypatch.setattr(tokenize_mod, "_tokenize_shard", real)
    run_tokenize(cfg, fresh)
    assert fresh.path("tokens/web.bin").read_bytes() == resumed


def test_missing_corpus_is_a_clear_error(tmp_path):
    with pytest.raises(StoreError, match="run `cleanroom generate` first"):
        run_tokenize(small_cfg(), RunStore(tmp_path))
