"""A Llama-style decoder-only Transformer in one file (nanoGPT / nanochat style).

    tokens -> embed -> n_layers x [x + Attn(RMSNorm(x)); x + SwiGLU(RMSNorm(x))] -> RMSNorm -> lm_head

Choices, and why:
- RMSNorm (no mean subtraction, no bias): cheaper than LayerNorm and what Llama uses; statistics are
  computed in fp32 even under bf16 autocast, because a bf16 mean of squares loses too many bits.
- RoPE (rotary position embeddings) in the *non-interleaved* "rotate_half" layout that Hugging Face
  `LlamaForCausalLM` uses (the first half of each head's channels pairs with the second half), so an
  exported checkpoint needs no weight permutation and gives the same logits in `transformers`.
- SwiGLU MLP (`down(silu(gate(x)) * up(x))`): better loss per FLOP than a GELU MLP at equal size.
- `F.scaled_dot_product_attention`: one fused kernel (flash attention on CPU and CUDA) instead of
  materialising the T x T score matrix in Python ops.
- Grouped-query attention via `n_kv_heads < n_heads`: fewer key/value heads, each shared by
  `n_heads / n_kv_heads` query heads (HF's `repeat_kv` order: kv head j serves query heads
  j*r .. j*r + r - 1).
- No biases anywhere, optional tied input/output embeddings (saves vocab x d_model parameters, which
  is most of a tiny model).
- Under bf16 autocast the vocabulary head (`head`) and RoPE still run in fp32: in bf16 they slowed the
  memorisation of facts (see `head`; docs/performance.md).
- A KV cache (`KVCache`) lives beside the model, as in nanochat: greedy decoding runs the prompt once,
  then one token per step against the cached keys and values, through the same modules as training.
- Parameter names mirror Hugging Face Llama (`layers.0.self_attn.q_proj.weight`, ...) so export is
  a rename-free copy with a `model.` prefix.

Padding. `forward(idx, attention_mask=...)` takes an optional `[B, T]` mask (1 = real token, 0 = pad):
- Right-padded batches (an evaluator scoring several continuations at once) need no mask at all:
  attention is causal, so a real token at position t only sees positions <= t, which are all real.
  Logits at pad positions are meaningless; give them target -100 (ignored by the loss).
- With a mask, pad keys are masked out and positions are counted over real tokens only
  (`cumsum(mask) - 1`), so left-padded batches (batched greedy generation) also give each row the
  logits it would have alone. (Hugging Face's plain forward uses 0..T-1 positions instead; its
  `generate` counts like we do.)
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from cleanroom.config import ModelConfig

IGNORE_INDEX = -100  # targets with this value do not count in the loss (padding)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # same op order as HF LlamaRMSNorm: normalise in fp32, cast back, then scale
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


def rope_cache(head_dim: int, length: int, theta: float, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of shape [length, head_dim] in the rotate_half layout (frequencies repeated twice)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim))
    freqs = torch.outer(torch.arange(length, dtype=torch.float32, device=device), inv_freq)
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos(), emb.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: [B, H, T, hd]; cos/sin: [T, hd] or [B, 1, T, hd]."""
    return x * cos + rotate_half(x) * sin


class KVCache:
    """Keys and values of every layer for the tokens run so far (batched greedy decoding).

    `Attention` appends a step's keys and values and attends over all of them; the caller passes the
    new tokens' positions and a mask over every cached key ([B, 1, T_new, T_cached + T_new]).
    """

    def __init__(self, n_layers: int):
        self.k: list[torch.Tensor | None] = [None] * n_layers
        self.v: list[torch.Tensor | None] = [None] * n_layers

    def extend(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append k, v [B, Hkv, T, hd] to `layer`'s cache; return everything cached for it."""
        if self.k[layer] is not None:
            k = torch.cat([self.k[layer], k], dim=2)
            v = torch.cat([self.v[layer], v], dim=2)
        self.k[layer], self.v[layer] = k, v
        return k, v


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.n_kv_heads = cfg.n_heads, cfg.n_kv_heads
        self.head_dim = cfg.d_model // cfg.n_heads
        self.q_proj = nn.Linear(cfg.d_model, cfg.n_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(cfg.d_model, cfg.n_kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(cfg.d_model, cfg.n_kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(cfg.n_heads * self.head_dim, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None,
                cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # [B, H, T, hd]
        k = self.k_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # [B, Hkv, T, hd]
        v = self.v_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        # RoPE in fp32 even under bf16 autocast: cos/sin stay fp32 and q, k promote (autocast rounds them
        # to bf16 only as attention's inputs); bf16 rotations slowed memorisation (docs/performance.md)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache.extend(layer, k, v)
        if self.n_kv_heads != self.n_heads:  # GQA: share each kv head across a group of query heads
            r = self.n_heads // self.n_kv_heads
            k, v = k.repeat_interleave(r, dim=1), v.repeat_interleave(r, dim=1)
        # no mask -> the fused causal kernel; with a mask -> an explicit [B, 1, T, T] boolean mask
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.d_model, cfg.ffn_hidden, bias=False)
        self.up_proj = nn.Linear(cfg.d_model, cfg.ffn_hidden, bias=False)
        self.down_proj = nn.Linear(cfg.ffn_hidden, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin, mask, cache: KVCache | None = None, layer: int = 0):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache, layer)
        return x + self.mlp(self.post_attention_layernorm(x))


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig, vocab_size: int, seed: int | None = None):
        """`seed`: initialise from a private generator, so models built at once in parallel threads
        get the same weights as when built alone (the global RNG is shared between threads)."""
        super().__init__()
        self.cfg, self.vocab_size = cfg, vocab_size
        self.embed_tokens = nn.Embedding(vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.d_model, vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        self.head_dim = cfg.d_model // cfg.n_heads
        cos, sin = rope_cache(self.head_dim, cfg.seq_len, cfg.rope_theta)
        # buffers (move with .to(device)) but not persistent: recomputed, never saved in checkpoints
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        gen = None if seed is None else torch.Generator().manual_seed(seed)
        for m in self.modules():
            if isinstance(m, nn.Linear | nn.Embedding):
                nn.init.normal_(m.weight, mean=0.0, std=0.02, generator=gen)
        # GPT-2 / nanoGPT: scale the projections that write into the residual stream by 1/sqrt(2L),
        # so the residual's variance does not grow with depth at init
        for name, p in self.named_parameters():
            if name.endswith(("o_proj.weight", "down_proj.weight")):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layers), generator=gen)

    def num_params(self, exclude_embeddings: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())  # tied weights are counted once
        return n - self.embed_tokens.weight.numel() if exclude_embeddings else n

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs per token (PaLM appendix B): 6 x matmul params + 12 x L x d x T for attention."""
        T = seq_len or self.cfg.seq_len
        matmul = self.num_params() - self.embed_tokens.weight.numel() + self.lm_head.weight.numel()
        matmul -= sum(p.numel() for n, p in self.named_parameters() if "norm" in n)
        return 6.0 * matmul + 12.0 * self.cfg.n_layers * self.cfg.d_model * T

    def rope(self, T: int, positions: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        need = T if positions is None else int(positions.max()) + 1
        if need > self.rope_cos.shape[0]:  # longer than training: extend (RoPE extrapolates poorly)
            cos, sin = rope_cache(self.head_dim, need, self.cfg.rope_theta, self.rope_cos.device)
            self.rope_cos, self.rope_sin = cos, sin
        if positions is None:
            return self.rope_cos[:T], self.rope_sin[:T]
        return self.rope_cos[positions].unsqueeze(1), self.rope_sin[positions].unsqueeze(1)  # [B,1,T,hd]

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None):
        """idx: [B, T] token ids. Returns logits [B, T, V], or (logits, loss) when targets are given.

        attention_mask: optional [B, T] (1 real, 0 pad); see the module docstring for padding.
        The loss is mean cross-entropy over targets != -100, computed in fp32.
        """
        B, T = idx.shape
        mask = positions = None
        if attention_mask is not None:
            keep = attention_mask.bool()
            positions = (keep.long().cumsum(-1) - 1).clamp(min=0)
            causal = torch.ones(T, T, dtype=torch.bool, device=idx.device).tril()
            # a query may see causal, non-pad keys; and always itself, so a pad row is never empty (NaN)
            mask = (causal & keep[:, None, None, :]) | torch.eye(T, dtype=torch.bool, device=idx.device)
        logits = self.head(self.hidden(idx, positions, mask))
        if targets is None:
            return logits
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1),
                               ignore_index=IGNORE_INDEX)
        return logits, loss

    def head(self, h: torch.Tensor) -> torch.Tensor:
        """Logits [..., V] of final hidden states, in fp32 even under bf16 autocast.

        A bf16 head rounds every logit to 8 significant bits (steps of 0.06-0.125 at the |logit| ~ 10-20 of
        a memorised fact) and its backward rounds the logit gradients and the tied embedding's gradient
        the same way; trained like that, the default textbook model ended at val loss 0.73 instead of 0.61
        after its second epoch (docs/performance.md, scripts/bf16_curves.py). The head is a quarter of the
        model's FLOPs; the rest of the model keeps bf16. In fp32 this is exactly `lm_head(h)`.
        """
        with torch.autocast(h.device.type, enabled=False):
            return self.lm_head(h.float())

    def hidden(self, idx: torch.Tensor, positions: torch.Tensor | None = None, mask: torch.Tensor | None = None,
               cache: KVCache | None = None) -> torch.Tensor:
        """Final hidden states [B, T, D] (after the last norm) of tokens `idx` [B, T].

        positions: [B, T] (default 0..T-1); mask: [B, 1, T, S] bool, True = may attend (default: causal);
        cache: a `KVCache` the keys and values are appended to (then `positions` and `mask` are needed).
        The evaluator uses this with a tree mask to score several options after one shared prompt.
        """
        cos, sin = self.rope(idx.shape[1], positions)
        x = self.embed_tokens(idx)
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, mask, cache, i)
        return self.norm(x)
