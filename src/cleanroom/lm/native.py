"""cleanroom's own Transformer (`cleanroom.train.model`) behind the `LM` interface.

Packed scoring calls `Transformer.hidden(ids, positions, mask)` with the prefix-tree mask (the same
modules `forward` runs); decoding uses the model's `KVCache`: the prompt runs once (left-padded, pad
keys masked, positions counted over real tokens, exactly as `Transformer.forward(attention_mask=...)`
does), then one token per live row per step; a finished row's keys and values are dropped. A model
without `hidden` falls back to the padded strategy; tests check that every path gives the same answers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from cleanroom.errors import ModelError
from cleanroom.lm.causal import CausalLM, Codec, Decoder, RecomputeDecoder, left_padded


class NativeKVDecoder(Decoder):
    def __init__(self, lm: NativeLM, seqs: list[list[int]]):
        from cleanroom.train.model import KVCache

        self.lm = lm
        ids, keep = left_padded(seqs, lm.codec.pad_id)
        dev = lm.device
        T = ids.shape[1]
        self.keep = keep.to(dev)
        self.next_pos = self.keep.long().sum(1)
        positions = (self.keep.long().cumsum(-1) - 1).clamp(min=0)
        causal = torch.ones(T, T, dtype=torch.bool, device=dev).tril()
        mask = ((causal[None] & self.keep[:, None, :]) | torch.eye(T, dtype=torch.bool, device=dev)[None])[:, None]
        self.cache = KVCache(len(lm.model.layers))
        self.last = self._forward(ids.to(dev), positions, mask)

    def _forward(self, ids: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        lm, m = self.lm, self.lm.model
        lm.counts.forward_calls += 1
        lm.counts.tokens += ids.numel()
        with torch.inference_mode(), lm._autocast():
            return m.lm_head(m.hidden(ids, positions, mask, self.cache)[:, -1]).float()

    def logits(self) -> torch.Tensor:
        return self.last

    def step(self, keep: list[int], tokens: list[int]) -> None:
        idx = torch.tensor(keep, device=self.keep.device)
        if len(keep) < self.keep.shape[0]:  # drop finished rows from the cache
            self.cache.k = [k[idx] for k in self.cache.k]
            self.cache.v = [v[idx] for v in self.cache.v]
            self.keep, self.next_pos = self.keep[idx], self.next_pos[idx]
        B = len(keep)
        self.keep = torch.cat([self.keep, torch.ones(B, 1, dtype=torch.bool, device=self.keep.device)], 1)
        positions = self.next_pos[:, None]
        self.next_pos = self.next_pos + 1
        tok = torch.tensor(tokens, dtype=torch.long, device=self.keep.device)[:, None]
        self.last = self._forward(tok, positions, self.keep[:, None, None, :])


class NativeLM(CausalLM):
    """Our `cleanroom.train.model.Transformer` (see the module doc)."""

    def __init__(self, model: torch.nn.Module, codec: Codec, *, max_len: int | None = None,
                 kv_cache: bool = True, name: str = "native", **kw: Any):
        self.model = model.eval()
        self.supports_tree_mask = hasattr(model, "hidden") and hasattr(model, "lm_head")
        self.kv_cache = kv_cache
        self.name = self.identity = name
        if max_len is None:
            cfg = getattr(model, "cfg", None)
            max_len = int(getattr(cfg, "seq_len", 0) or 2048)
        device = kw.pop("device", None) or str(next(model.parameters()).device)
        super().__init__(codec, max_len=max_len, device=device, **kw)

    @classmethod
    def load(cls, model_dir: str | Path, **kw: Any) -> NativeLM:
        """Load an exported model directory with `cleanroom.train.export.load_native`."""
        from cleanroom.train.export import load_native

        try:
            model, tok = load_native(model_dir, device=kw.get("device") or "cpu")
        except RuntimeError as e:  # a StoreError (no model or tokenizer): already one user-facing line
            raise ModelError(str(e)) from None
        kw.setdefault("name", Path(model_dir).name)
        return cls(model, Codec.from_tokenizers(tok), **kw)

    def _forward(self, ids, positions, mask):
        if mask is None:
            out = self.model(ids)
            return out[0] if isinstance(out, tuple) else out
        return self._head(self._hidden(ids, positions, mask))

    def _hidden(self, ids, positions, mask):
        if not self.supports_tree_mask:
            return None
        return self.model.hidden(ids, positions, None if mask is None else mask[:, None])

    def _head(self, hidden):
        return self.model.lm_head(hidden)

    def _decoder(self, seqs):
        if self.strategy == "naive" or not self.supports_tree_mask or not self.kv_cache:
            return RecomputeDecoder(self, seqs)
        return NativeKVDecoder(self, seqs)
