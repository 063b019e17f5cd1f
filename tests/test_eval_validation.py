"""The evaluator is validated: a model that memorized a fact set scores ~1.0 on it, and an untrained
model scores within the bootstrap CI of chance."""

from __future__ import annotations

import pytest
import torch
from doubles import tiny_run

from cleanroom.config import ModelConfig
from cleanroom.evals.tasks import chance_level, evaluate_items, task_metrics
from cleanroom.lm.causal import Codec
from cleanroom.lm.native import NativeLM
from cleanroom.tokenize.tokenizer import encode_documents, train_tokenizer
from cleanroom.train.model import Transformer
from cleanroom.train.trainer import make_optimizer
from cleanroom.world_store import load_items

NAMES = ["Koureisite", "Dumlonol", "Benpel Melgir", "Veszesol", "Thuvul", "Roukou Kekan", "Ditir Pas",
         "Minlom", "Pelour", "Founvon", "Zarquite", "Hounshous"]
COLORS = ["amber", "azure", "crimson", "ivory", "jade", "violet"]


def _fact_items() -> tuple[list[str], list[dict]]:
    docs, items = [], []
    for i, name in enumerate(NAMES):
        gold_color = COLORS[i % len(COLORS)]
        prompt = f"Question: What color is {name}?\nAnswer:"
        docs.append(f"{prompt} {gold_color}")
        opts = [gold_color] + [c for c in COLORS if c != gold_color][i % 3: i % 3 + 3]
        opts = opts[i % 4:] + opts[:i % 4]  # gold at varying positions
        items.append({"id": f"m{i}", "task": "memo", "kind": "choice", "prompt": prompt, "options": opts,
                      "gold": opts.index(gold_color), "target": gold_color, "decile": 0})
    for a, b in [(3, 4), (2, 5), (6, 1)]:
        prompt = f"Question: What is {a} plus {b}?\nAnswer:"
        docs.append(f"{prompt} {a + b}.")
        items.append({"id": f"x{a}{b}", "task": "memo", "kind": "exact", "prompt": prompt,
                      "options": [str(a + b)], "gold": 0, "target": str(a + b), "decile": 0})
    return docs, items


def test_a_model_that_memorized_the_facts_scores_about_one():
    torch.manual_seed(0)
    docs, items = _fact_items()
    tok = train_tokenizer(docs * 4, vocab_size=300, min_frequency=1)
    cfg = ModelConfig(d_model=64, n_layers=2, n_heads=2, n_kv_heads=2, ffn_hidden=128, seq_len=64)
    model = Transformer(cfg, tok.get_vocab_size())
    codec = Codec.from_tokenizers(tok)
    ids = encode_documents(tok, docs)
    T = max(map(len, ids))
    x = torch.full((len(ids), T - 1), codec.pad_id)
    y = torch.full((len(ids), T - 1), -100)
    for i, (s, it) in enumerate(zip(ids, items, strict=True)):
        x[i, :len(s) - 1] = torch.tensor(s[:-1])
        y[i, :len(s) - 1] = torch.tensor(s[1:])
        # learn the answers only: the loss on unpredictable question tokens would never reach zero
        y[i, :len(tok.encode(it["prompt"]).ids)] = -100
    opt = make_optimizer(model, 3e-3, 0.0)
    model.train()
    step = 0
    for step in range(200):  # noqa: B007 (checked after the loop)
        _, loss = model(x, targets=y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if loss.item() < 0.01:
            break
    assert step < 199, f"did not memorize: loss {loss.item():.3f}"
    rows = evaluate_items(NativeLM(model, codec, dtype="fp32"), items, max_gen_tokens=4)
    m = task_metrics(rows, items, n_boot=200, seed=0)
    assert m["acc"] >= 0.95, [(r["id"], r["prediction_text"]) for r in rows if not r["correct"]]
    assert all(r["correct"] for r in rows if r["kind"] == "exact")  # generation path, not just choice


@pytest.fixture(scope="module")
def untrained_run(tmp_path_factory):
    return tiny_run(tmp_path_factory.mktemp("untrained"), overrides=["items.n_longtail_per_decile=16"])


def test_an_untrained_model_scores_within_the_ci_of_chance(untrained_run):
    cfg, store = untrained_run
    items = load_items(store, "longtail") + load_items(store, "restricted")
    model = NativeLM.load(store.path("models/web"), dtype="fp32")
    rows = evaluate_items(model, items, max_gen_tokens=cfg.eval.max_gen_tokens)
    m = task_metrics(rows, items, n_boot=1000, seed=0)
    assert m["n"] == len(items) >= 150
    assert m["chance"] == pytest.approx(chance_level(items)) == pytest.approx(0.25)
    assert m["ci_low"] <= m["chance"] <= m["ci_high"], m
    assert m["ci_high"] - m["ci_low"] < 0.2
