"""Scorers: the packed / padded / naive strategies agree, native and HF adapters agree on an exported
model, shuffling options does not change the answer, generation honours stops and max tokens."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from doubles import hf_tokenizer, tiny_llama, tiny_run, tiny_tokenizer

from cleanroom.errors import InputError
from cleanroom.evals.tasks import chance_level, evaluate_items
from cleanroom.lm.api import GenerateRequest, LoglikelihoodRequest, cut_at_stop
from cleanroom.lm.causal import Codec
from cleanroom.lm.hf import HFLM
from cleanroom.lm.native import NativeLM
from cleanroom.world_store import load_items

ITEMS = [
    {"id": f"q{i}", "task": "t", "kind": "choice", "prompt": f"Question: What colour is item {i}?\nAnswer:",
     "options": ["amber", "deep azure blue", "jade", "ivory white"], "gold": i % 4, "target": "", "decile": 0}
    for i in range(12)
] + [
    {"id": f"x{i}", "task": "t", "kind": "exact", "prompt": f"Add {i} and {i + 1}.\nAnswer:",
     "options": [str(2 * i + 1)], "gold": 0, "target": str(2 * i + 1), "decile": 0}
    for i in range(5)
]


@pytest.fixture(scope="module")
def tiny_hf():
    texts = [it["prompt"] + " " + o for it in ITEMS for o in it["options"]] * 3
    tok = tiny_tokenizer(texts, vocab_size=350)
    return tiny_llama(tok.get_vocab_size(), hidden=32), tok


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A run with a random native model exported to HF format."""
    cfg, store = tiny_run(tmp_path_factory.mktemp("eval_run"))
    return cfg, store


def _max_lp_diff(rows_a, rows_b):
    return max(abs(x - y) for a, b in zip(rows_a, rows_b, strict=True)
               for x, y in zip(a["logprobs"], b["logprobs"], strict=True))


def test_strategies_agree_and_packing_saves_tokens(tiny_hf):
    model, tok = tiny_hf
    rows, counts = {}, {}
    for s in ("packed", "padded", "naive"):
        a = HFLM(model, hf_tokenizer(tok), strategy=s, batch_size=5)
        rows[s] = evaluate_items(a, ITEMS, max_gen_tokens=4)
        counts[s] = a.counts
    for s in ("padded", "naive"):
        assert _max_lp_diff(rows["packed"], rows[s]) < 1e-4
        assert [r["prediction_text"] for r in rows[s]] == [r["prediction_text"] for r in rows["packed"]]
    assert counts["packed"].forward_calls < counts["padded"].forward_calls < counts["naive"].forward_calls
    # one row per item instead of one per option: far fewer token positions through the model
    assert counts["packed"].tokens < 0.6 * counts["naive"].tokens


def test_loglikelihood_matches_a_direct_forward(tiny_hf):
    model, tok = tiny_hf
    a = HFLM(model, hf_tokenizer(tok))
    req = LoglikelihoodRequest("Question: What colour is item 3?\nAnswer:", " deep azure blue")
    (res,) = a.loglikelihood([req])
    bos = tok.token_to_id("<|bos|>")
    ctx = [bos] + tok.encode(req.context).ids
    cont = tok.encode(req.context + req.continuation).ids[len(ctx) - 1:]
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ctx + cont])).logits[0].float(), -1)
    direct = sum(float(logp[len(ctx) - 1 + t, c]) for t, c in enumerate(cont))
    assert res.n_tokens == len(cont) >= 2
    assert res.logprob == pytest.approx(direct, abs=1e-4)


def test_context_longer_than_the_window_is_cut_from_the_left(tiny_hf):
    model, tok = tiny_hf
    a = HFLM(model, hf_tokenizer(tok), max_len=16)
    long_ctx = "Question: What colour is item 1? " * 10 + "\nAnswer:"
    (res,) = a.loglikelihood([LoglikelihoodRequest(long_ctx, " jade")])
    # the answer is a direct forward of the window: the context's last 16 - |continuation| tokens (its
    # beginning, <|bos|> included, cut off), then the continuation
    ctx = [tok.token_to_id("<|bos|>")] + tok.encode(long_ctx).ids
    cont = tok.encode(long_ctx + " jade").ids[len(ctx) - 1:]
    window = ctx[-(16 - len(cont)):]
    assert len(ctx) > 2 * len(window) and window[0] != ctx[0]
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([window + cont])).logits[0].float(), -1)
    assert res.logprob == pytest.approx(sum(float(logp[len(window) - 1 + t, c]) for t, c in enumerate(cont)), abs=1e-4)
    with torch.no_grad():  # and it is not what the whole context (cut from the right, or not at all) gives
        whole = torch.log_softmax(model(torch.tensor([ctx + cont])).logits[0].float(), -1)
    assert res.logprob != pytest.approx(sum(float(whole[len(ctx) - 1 + t, c]) for t, c in enumerate(cont)), abs=1e-4)
    with pytest.raises(InputError, match="does not fit the model window"):
        HFLM(model, hf_tokenizer(tok), max_len=2).loglikelihood([LoglikelihoodRequest("x", " deep azure blue")])


def test_generation_stops_and_respects_max_tokens(tiny_hf):
    model, tok = tiny_hf
    reqs = [GenerateRequest(it["prompt"], ("\n", "."), 3) for it in ITEMS] + [
        GenerateRequest("Answer:", (), 5)]
    a = HFLM(model, hf_tokenizer(tok), strategy="packed", batch_size=4)
    b = HFLM(model, hf_tokenizer(tok), strategy="naive")
    out_a, out_b = a.generate_until(reqs), b.generate_until(reqs)
    assert out_a == out_b  # batching with right padding never changes a greedy continuation
    for r, text in zip(reqs, out_a, strict=True):
        assert not any(s in text for s in r.until)
        assert len(tok.encode(text).ids) <= r.max_tokens + 1  # re-encoding may split differently
    assert cut_at_stop("42.\nmore", ["\n", "."]) == "42" and cut_at_stop("abc", ["\n"]) == "abc"


def test_native_and_hf_agree_on_an_exported_model(exported):
    cfg, store = exported
    items = load_items(store, "bench") + load_items(store, "restricted")
    native = NativeLM.load(store.path("models/web"), dtype="fp32", batch_size=16)
    hf = HFLM.load(store.path("models/web"), dtype="fp32", batch_size=16)
    assert native.strategy == hf.strategy == "packed"
    rows_n = evaluate_items(native, items, max_gen_tokens=cfg.eval.max_gen_tokens)
    rows_h = evaluate_items(hf, items, max_gen_tokens=cfg.eval.max_gen_tokens)
    assert [r["prediction"] for r in rows_n] == [r["prediction"] for r in rows_h]
    assert [r["prediction_text"] for r in rows_n] == [r["prediction_text"] for r in rows_h]
    assert _max_lp_diff(rows_n, rows_h) < 1e-3


def test_native_packed_equals_padded(exported):
    _, store = exported
    items = load_items(store, "twin")
    packed = NativeLM.load(store.path("models/web"), dtype="fp32", strategy="packed")
    padded = NativeLM.load(store.path("models/web"), dtype="fp32", strategy="padded")
    rows_p, rows_q = evaluate_items(packed, items), evaluate_items(padded, items)
    assert _max_lp_diff(rows_p, rows_q) < 1e-4
    assert [r["prediction"] for r in rows_p] == [r["prediction"] for r in rows_q]


def test_shuffling_options_does_not_change_the_scored_answer(exported):
    _, store = exported
    items = [it for it in load_items(store, "longtail") if it["kind"] == "choice"]
    model = NativeLM.load(store.path("models/web"), dtype="fp32")
    rng = np.random.default_rng(0)
    shuffled = []
    for it in items:
        perm = rng.permutation(len(it["options"]))
        opts = [it["options"][i] for i in perm]
        shuffled.append({**it, "options": opts, "gold": opts.index(it["options"][it["gold"]])})
    a, b = evaluate_items(model, items), evaluate_items(model, shuffled)
    assert [r["prediction_text"] for r in a] == [r["prediction_text"] for r in b]
    assert [r["correct"] for r in a] == [r["correct"] for r in b]
    assert sorted(a[0]["logprobs"]) == pytest.approx(sorted(b[0]["logprobs"]), abs=1e-5)


def test_codec_specials_and_chance_level(tiny_hf):
    _, tok = tiny_hf
    c = Codec.from_tokenizers(tok)
    assert (c.bos_id, c.eos_id, c.pad_id) == (0, 1, 2)
    h = Codec.from_transformers(hf_tokenizer(tok))
    assert (h.bos_id, h.eos_id, h.pad_id) == (0, 1, 2)
    assert c.encode_batch(["Answer: jade"]) == h.encode_batch(["Answer: jade"])
    assert chance_level(ITEMS) == pytest.approx(12 / 17 * 0.25)


def test_native_kv_cached_generation_equals_recomputation(exported):
    _, store = exported
    prompts = [it["prompt"] for t in ("bench", "twin", "restricted") for it in load_items(store, t)][:40]
    reqs = [GenerateRequest(p, (), 8) for p in prompts] + [GenerateRequest(p, ("\n", "."), 8) for p in prompts]
    cached = NativeLM.load(store.path("models/web"), dtype="fp32", batch_size=16)
    plain = NativeLM.load(store.path("models/web"), dtype="fp32", batch_size=16, kv_cache=False)
    out_c, out_p = cached.generate_until(reqs), plain.generate_until(reqs)
    assert out_c == out_p
    assert all(len(o) > 0 for o in out_c[:40])  # no stop strings: 8 real tokens each
    assert cached.counts.tokens < plain.counts.tokens / 3  # the prompt ran once, not once per step
