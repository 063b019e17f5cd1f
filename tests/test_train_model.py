"""The Llama-style model: HF parity of the export, native reload, padding, learning."""

from __future__ import annotations

import pytest
import torch

from cleanroom.config import ModelConfig
from cleanroom.store import StoreError
from cleanroom.tokenize.tokenizer import BOS, EOS, PAD, save_tokenizer, train_tokenizer
from cleanroom.train.export import export_hf, load_native
from cleanroom.train.model import IGNORE_INDEX, Transformer

TEXTS = [f"mineral {i} melts at {i * 7 % 50} degrees and the singer number {i} sings" for i in range(300)]


@pytest.fixture(scope="module")
def tokenizer_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    save_tokenizer(train_tokenizer(TEXTS, 320), path)
    return path


def tiny(**kw) -> ModelConfig:
    base = dict(d_model=64, n_layers=2, n_heads=4, n_kv_heads=4, ffn_hidden=96, seq_len=48)
    return ModelConfig(**{**base, **kw})


@pytest.mark.parametrize("tie,kv", [(True, 4), (False, 2), (True, 1)])
def test_hf_export_gives_the_same_logits(tmp_path, tokenizer_path, tie, kv):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = tiny(tie_embeddings=tie, n_kv_heads=kv)
    torch.manual_seed(0)
    model = Transformer(cfg, 320).eval()
    with torch.no_grad():  # non-trivial norm gains, so a mis-mapped norm would show
        for n, p in model.named_parameters():
            if "norm" in n:
                p.uniform_(0.5, 1.5)
    out = export_hf(model, cfg, tokenizer_path, tmp_path / "model")
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "special_tokens_map.json"} <= {p.name for p in out.iterdir()}
    hf = AutoModelForCausalLM.from_pretrained(out).eval()
    assert type(hf).__name__ == "LlamaForCausalLM"
    idx = torch.randint(0, 320, (2, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        diff = (hf(idx).logits - model(idx)).abs().max().item()
    assert diff < 1e-3
    hf_tok = AutoTokenizer.from_pretrained(out)
    assert hf_tok.bos_token == BOS and hf_tok.eos_token == EOS and hf_tok.pad_token == PAD
    native, tok = load_native(out)
    assert hf_tok("mineral 7 melts").input_ids == tok.encode("mineral 7 melts").ids
    with torch.no_grad():
        assert torch.equal(native(idx), model(idx))


def test_load_native_rejects_a_missing_dir(tmp_path):
    with pytest.raises(StoreError, match="no exported model"):
        load_native(tmp_path)


def test_right_padding_needs_no_mask_and_left_padding_works_with_one():
    torch.manual_seed(0)
    model = Transformer(tiny(), 320).eval()
    a, b = torch.randint(3, 320, (1, 20)), torch.randint(3, 320, (1, 12))
    with torch.no_grad():
        la, lb = model(a), model(b)
        right = torch.cat([b, torch.full((1, 8), 2)], dim=1)
        batch = torch.cat([a, right])
        out = model(batch)  # causal attention: real positions never see the padding after them
        assert torch.allclose(out[1, :12], lb[0], atol=1e-5) and torch.allclose(out[0], la[0], atol=1e-5)
        mask = torch.ones(2, 20, dtype=torch.long)
        mask[1, 12:] = 0
        assert torch.allclose(model(batch, attention_mask=mask)[1, :12], lb[0], atol=1e-5)
        left = torch.cat([torch.full((1, 8), 2), b], dim=1)
        lmask = torch.cat([torch.zeros(1, 8, dtype=torch.long), torch.ones(1, 12, dtype=torch.long)], dim=1)
        out = model(left, attention_mask=lmask)
        assert not out.isnan().any()
        assert torch.allclose(out[0, 8:], lb[0], atol=1e-5)


def test_loss_ignores_padding_targets_and_the_model_learns():
    torch.manual_seed(0)
    model = Transformer(tiny(n_layers=1), 320)
    x = torch.randint(3, 320, (4, 16))
    y = torch.roll(x, -1, dims=1)
    y_pad = y.clone()
    y_pad[:, 8:] = IGNORE_INDEX
    _, full = model(x, y)
    logits, half = model(x, y_pad)
    ref = torch.nn.functional.cross_entropy(logits[:, :8].reshape(-1, 320), y[:, :8].reshape(-1))
    assert torch.allclose(half, ref) and not torch.allclose(half, full)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(60):
        _, loss = model(x, y)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.3 * first  # memorises 4 sequences


def test_the_vocabulary_head_runs_in_fp32_under_bf16_autocast():
    """bf16 logits slowed memorisation (docs/performance.md): under autocast the body runs in bf16, the
    head (and so the logits and the loss) in fp32, in the single and in the batched model."""
    from cleanroom.runtime import autocast
    from cleanroom.train.batched import BatchedTransformer

    cfg = tiny(d_model=32, n_heads=2, n_kv_heads=2, ffn_hidden=48, seq_len=16)
    model = Transformer(cfg, 320, seed=0)
    idx = torch.randint(0, 320, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), autocast("cpu", "bf16"):
        h = model.hidden(idx)
        logits = model(idx)
        assert model.layers[0].mlp.up_proj(h).dtype == torch.bfloat16  # autocast is on for the body
    assert logits.dtype == torch.float32
    assert torch.equal(logits, torch.nn.functional.linear(h.float(), model.lm_head.weight))  # an fp32 GEMM
    assert not torch.equal(logits, torch.nn.functional.linear(h.bfloat16(), model.lm_head.weight.bfloat16()).float())
    batched = BatchedTransformer(cfg, 320, [0])
    with torch.no_grad(), autocast("cpu", "bf16"):
        loss = batched(idx[None], idx[None].roll(-1, dims=-1))[0]
        _, ref = model(idx, idx.roll(-1, dims=-1))
    assert loss.dtype == torch.float32 and abs(loss.item() - ref.item()) < 1e-3


def test_rope_runs_in_fp32_under_bf16_autocast(monkeypatch):
    """Attention gets q and k rotated in fp32 (autocast rounds them to bf16 only inside attention)."""
    from cleanroom.runtime import autocast
    from cleanroom.train import model as model_module
    from cleanroom.train.model import apply_rope

    cfg = tiny(d_model=32, n_heads=2, n_kv_heads=2, ffn_hidden=48, seq_len=16)
    model = Transformer(cfg, 320, seed=0)
    idx = torch.randint(0, 320, (1, 16), generator=torch.Generator().manual_seed(0))
    seen = []
    sdpa = model_module.F.scaled_dot_product_attention
    monkeypatch.setattr(model_module.F, "scaled_dot_product_attention",
                        lambda q, k, v, **kw: seen.append(q) or sdpa(q, k, v, **kw))
    with torch.no_grad(), autocast("cpu", "bf16"):
        model(idx)
        attn, h = model.layers[0].self_attn, model.layers[0].input_layernorm(model.embed_tokens(idx))
        q = attn.q_proj(h).view(1, 16, 2, 16).transpose(1, 2)
    assert q.dtype == torch.bfloat16 and seen[0].dtype == torch.float32
    assert torch.equal(seen[0], apply_rope(q.float(), model.rope_cos[:16], model.rope_sin[:16]))
