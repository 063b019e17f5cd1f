"""Model adapters: answer batches of requests with a causal LM (our native model or any HF model).

All adapters share one scorer (`CausalLMAdapter`); a subclass only says how to run the network
(`_forward`) and how to tokenize (`Codec`). Three scoring strategies, all giving the same numbers:

- `packed` (the fast path): requests that share a context (the options of one multiple-choice item)
  become *one* row: `context + option_1 + option_2 + ...`, with a tree attention mask (each option
  sees the context and its own earlier tokens, never another option) and position ids that restart
  after the context for every option. The prompt is run through the model once per item instead of
  once per option. Rows are sorted by length and right-padded into batches.
- `padded`: one row per request (`context + continuation`), sorted by length and right-padded. Needs
  nothing but a causal forward: with right padding, padding never influences a real position.
- `naive`: one request per forward call, no batching (the baseline in `bench/eval_throughput.py`).

Tokenization follows lm-evaluation-harness: the context is `<|bos|>` + encode(context); the
continuation tokens are encode(context + continuation) minus the context's tokens, so a BPE merge
across the boundary cannot make one option look cheaper than another. Contexts that do not fit the
model's window are cut from the left.

The batched strategies also apply the vocabulary head only at the positions whose log-probabilities
are read (for a small model the head is the largest matmul).

Greedy generation (`generate_until`) batches rows by prompt length. The native fast path runs each
prompt once and decodes with a KV cache (`NativeKVDecoder`); otherwise (`RecomputeDecoder`, the HF
adapter and the naive strategy) every step reruns the right-padded prefix and each row reads the
logits at its own last real position, so padding never changes a result. Tests check that all paths
generate the same text.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F

from cleanroom.evals.requests import GenerateRequest, Loglikelihood, LoglikelihoodRequest, RequestCounts, cut_at_stop
from cleanroom.store import StoreError

Strategy = Literal["packed", "padded", "naive"]
BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"


class EvalError(StoreError):
    """An evaluation problem, phrased for the user (one line; the CLI prints it without a traceback)."""


# ------------------------------------------------------------------------------------- tokenization


@dataclass
class Codec:
    """Text <-> token ids for one tokenizer (a `tokenizers.Tokenizer` or a transformers tokenizer)."""

    tokenizer: Any
    bos_id: int | None
    eos_id: int | None
    pad_id: int

    @classmethod
    def from_tokenizers(cls, tok: Any) -> Codec:
        """Wrap a `tokenizers.Tokenizer` with the run's special tokens."""
        bos, eos, pad = tok.token_to_id(BOS), tok.token_to_id(EOS), tok.token_to_id(PAD)
        return cls(tok, bos, eos, pad if pad is not None else (eos if eos is not None else 0))

    @classmethod
    def from_transformers(cls, tok: Any) -> Codec:
        """Wrap a transformers tokenizer; BOS is its `bos_token_id`, else `<|bos|>` if it knows it."""
        def known(token: str) -> int | None:
            i = tok.convert_tokens_to_ids(token)
            return i if isinstance(i, int) and i != tok.unk_token_id and i >= 0 else None

        bos = tok.bos_token_id if tok.bos_token_id is not None else known(BOS)
        eos = tok.eos_token_id if tok.eos_token_id is not None else known(EOS)
        pad = tok.pad_token_id if tok.pad_token_id is not None else (eos if eos is not None else 0)
        return cls(tok, bos, eos, pad)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        if not texts:
            return []
        if hasattr(self.tokenizer, "encode_batch"):  # tokenizers.Tokenizer
            return [e.ids for e in self.tokenizer.encode_batch(list(texts), add_special_tokens=False)]
        return list(self.tokenizer(list(texts), add_special_tokens=False)["input_ids"])

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)


# ------------------------------------------------------------------------------------- the scorer


@dataclass
class _Scored:
    """One row of a batch: its tokens, positions, tree segments, and what to read from its logits."""

    tokens: list[int]
    positions: list[int]
    segments: list[int]  # 0 = shared context, j >= 1 = continuation j (attends to context + itself)
    reads: list[tuple[int, int, int]]  # (request index, position to read, target token)


class CausalLMAdapter:
    """Answers `loglikelihood` and `generate_until` requests with a causal LM; see the module doc."""

    supports_tree_mask = False  # subclasses whose `_forward` honours `mask` + `positions` set True

    def __init__(self, codec: Codec, *, max_len: int, device: str = "cpu", dtype: str = "fp32",
                 batch_size: int = 64, strategy: Strategy = "packed"):
        if strategy == "packed" and not self.supports_tree_mask:
            strategy = "padded"
        self.codec, self.max_len, self.device = codec, int(max_len), torch.device(device)
        self.dtype, self.batch_size, self.strategy = dtype, max(1, int(batch_size)), strategy
        self.counts = RequestCounts()

    # subclasses --------------------------------------------------------------------------------
    def _forward(self, ids: torch.Tensor, positions: torch.Tensor | None,
                 mask: torch.Tensor | None) -> torch.Tensor:
        """ids [B,T] -> logits [B,T,V]; `mask` [B,T,T] bool (True = may attend) or None = causal."""
        raise NotImplementedError

    def _hidden(self, ids: torch.Tensor, positions: torch.Tensor | None,
                mask: torch.Tensor | None) -> torch.Tensor | None:
        """ids [B,T] -> final hidden states [B,T,D] (after the last norm), or None if unsupported."""
        return None

    def _head(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden [N,D] -> logits [N,V]."""
        raise NotImplementedError

    # helpers -----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _autocast(self) -> Iterator[None]:
        if self.dtype == "bf16":
            with torch.autocast(self.device.type, dtype=torch.bfloat16):
                yield
        else:
            yield

    def _run(self, ids: torch.Tensor, positions: torch.Tensor | None, mask: torch.Tensor | None,
             rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """Logits [N,V] (fp32) at positions (rows[i], cols[i]) of the batch.

        The batched strategies apply the output head only at those positions (the vocabulary
        projection is the largest matmul of a small model); `naive` computes every position's
        logits, as a straightforward scorer would.
        """
        self.counts.forward_calls += 1
        self.counts.tokens += ids.numel()
        dev = self.device
        ids = ids.to(dev)
        positions = None if positions is None else positions.to(dev)
        mask = None if mask is None else mask.to(dev)
        rows, cols = rows.to(dev), cols.to(dev)
        with torch.inference_mode(), self._autocast():
            hidden = None if self.strategy == "naive" else self._hidden(ids, positions, mask)
            if hidden is not None:
                return self._head(hidden[rows, cols]).float()
            return self._forward(ids, positions, mask)[rows, cols].float()

    def _timed(self, key: str, t0: float) -> None:
        self.counts.extra[key] = self.counts.extra.get(key, 0.0) + time.perf_counter() - t0

    def _context_ids(self, contexts: Sequence[str]) -> dict[str, list[int]]:
        unique = list(dict.fromkeys(contexts))
        bos = [] if self.codec.bos_id is None else [self.codec.bos_id]
        return {c: bos + ids for c, ids in zip(unique, self.codec.encode_batch(unique), strict=True)}

    # loglikelihood -----------------------------------------------------------------------------
    def encode_requests(self, requests: Sequence[LoglikelihoodRequest]) -> list[tuple[list[int], list[int]]]:
        """(context ids with BOS, continuation ids) per request, lm-evaluation-harness style."""
        ctx = self._context_ids([r.context for r in requests])
        bare = {c: ids[1:] if self.codec.bos_id is not None else ids for c, ids in ctx.items()}
        wholes = self.codec.encode_batch([r.context + r.continuation for r in requests])
        out = []
        for r, whole in zip(requests, wholes, strict=True):
            cont = whole[len(bare[r.context]):]
            if not cont:
                raise EvalError(f"continuation {r.continuation!r} encodes to no tokens after its context")
            out.append((ctx[r.context], cont))
        return out

    def _fit(self, ctx: list[int], cont_len: int) -> list[int]:
        room = self.max_len - cont_len
        if room < 1:
            raise EvalError(f"a continuation of {cont_len} tokens does not fit the model window "
                            f"({self.max_len} tokens)")
        return ctx[-room:]

    def _rows(self, encoded: list[tuple[list[int], list[int]]]) -> list[_Scored]:
        rows: list[_Scored] = []
        if self.strategy != "packed":
            for i, (ctx, cont) in enumerate(encoded):
                c = self._fit(ctx, len(cont))
                toks = c + cont
                reads = [(i, len(c) - 1 + t, cont[t]) for t in range(len(cont))]
                rows.append(_Scored(toks, list(range(len(toks))), [0] * len(toks), reads))
            return rows
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, (ctx, _) in enumerate(encoded):
            groups.setdefault(tuple(ctx), []).append(i)
        for key, members in groups.items():
            ctx = list(key)
            row: _Scored | None = None
            for i in members:
                cont = encoded[i][1]
                if row is not None and len(row.tokens) + len(cont) > self.max_len:
                    rows.append(row)
                    row = None
                if row is None:
                    c = self._fit(ctx, len(cont))
                    row = _Scored(list(c), list(range(len(c))), [0] * len(c), [])
                n_ctx = row.segments.count(0)
                seg = max(row.segments) + 1
                start = len(row.tokens)
                row.tokens += cont
                row.positions += list(range(n_ctx, n_ctx + len(cont)))
                row.segments += [seg] * len(cont)
                # token t of the continuation is predicted from the context's last position (t = 0)
                # or from the continuation's previous token
                row.reads += [(i, n_ctx - 1 if t == 0 else start + t - 1, cont[t]) for t in range(len(cont))]
            if row is not None:
                rows.append(row)
        return rows

    def _batches(self, rows: list) -> Iterator[list[int]]:
        """Indices of rows, longest first, in batches (one row per batch for the naive strategy)."""
        if self.strategy == "naive":
            yield from ([i] for i in range(len(rows)))
            return
        order = sorted(range(len(rows)), key=lambda i: -len(rows[i].tokens))
        for s in range(0, len(order), self.batch_size):
            yield order[s:s + self.batch_size]

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[Loglikelihood]:
        """log P(continuation | context) per request, summed over tokens, in request order."""
        if not requests:
            return []
        t0 = time.perf_counter()
        encoded = self.encode_requests(requests)
        rows = self._rows(encoded)
        total = [0.0] * len(requests)
        greedy = [True] * len(requests)
        for batch in self._batches(rows):
            B, T = len(batch), max(len(rows[i].tokens) for i in batch)
            ids = torch.full((B, T), self.codec.pad_id, dtype=torch.long)
            pos = torch.zeros((B, T), dtype=torch.long)
            seg = torch.full((B, T), -1, dtype=torch.long)
            for b, i in enumerate(batch):
                r = rows[i]
                n = len(r.tokens)
                ids[b, :n] = torch.tensor(r.tokens)
                pos[b, :n] = torch.tensor(r.positions)
                seg[b, :n] = torch.tensor(r.segments)
            mask = None
            positions = None
            if bool((seg > 1).any()):  # several continuations share a row: tree mask + positions
                causal = torch.ones(T, T, dtype=torch.bool).tril()
                same = (seg[:, None, :] == 0) | (seg[:, None, :] == seg[:, :, None])
                mask = causal[None] & same & (seg[:, None, :] >= 0)
                mask |= torch.eye(T, dtype=torch.bool)[None]  # padding rows attend to themselves (no NaN)
                positions = pos
            req_idx, b_idx, p_idx, tgt = [], [], [], []
            for b, i in enumerate(batch):
                for ri, p, t in rows[i].reads:
                    req_idx.append(ri)
                    b_idx.append(b)
                    p_idx.append(p)
                    tgt.append(t)
            picked = self._run(ids, positions, mask, torch.tensor(b_idx), torch.tensor(p_idx))  # [N, V]
            logp = F.log_softmax(picked, dim=-1)
            tgt_t = torch.tensor(tgt, device=logp.device)
            tok_lp = logp.gather(1, tgt_t[:, None])[:, 0].cpu().tolist()
            is_max = (logp.argmax(dim=-1) == tgt_t).cpu().tolist()
            for ri, lp, g in zip(req_idx, tok_lp, is_max, strict=True):
                total[ri] += lp
                greedy[ri] = greedy[ri] and bool(g)
        self.counts.loglikelihood += len(requests)
        self._timed("loglikelihood_s", t0)
        return [Loglikelihood(total[i], len(encoded[i][1]), greedy[i]) for i in range(len(requests))]

    # generation --------------------------------------------------------------------------------
    def generate_until(self, requests: Sequence[GenerateRequest]) -> list[str]:
        """Greedy continuation per request, cut before its first stop string, in request order."""
        if not requests:
            return []
        t0 = time.perf_counter()
        ctx = self._context_ids([r.context for r in requests])
        out = [""] * len(requests)
        order = list(range(len(requests)))
        if self.strategy != "naive":
            order.sort(key=lambda i: -len(ctx[requests[i].context]))
        step = 1 if self.strategy == "naive" else self.batch_size
        for s in range(0, len(order), step):
            batch = order[s:s + step]
            seqs = [list(self._fit(ctx[requests[i].context], requests[i].max_tokens)) for i in batch]
            decoder = self._decoder(seqs)
            new: list[list[int]] = [[] for _ in batch]
            live = list(range(len(batch)))
            for _ in range(max(requests[i].max_tokens for i in batch)):
                live = [b for b in live if len(new[b]) < requests[batch[b]].max_tokens]
                if not live:
                    break
                nxt = decoder.next_logits(live).argmax(dim=-1).cpu().tolist()
                decoder.push(live, nxt)
                still = []
                for b, tok in zip(live, nxt, strict=True):
                    new[b].append(tok)
                    if tok == self.codec.eos_id:
                        new[b].pop()
                        continue
                    text = self.codec.decode(new[b])
                    if any(u and u in text for u in requests[batch[b]].until):
                        continue
                    still.append(b)
                live = still
            for b, i in enumerate(batch):
                out[i] = cut_at_stop(self.codec.decode(new[b]), requests[i].until)
        self.counts.generate += len(requests)
        self._timed("generate_s", t0)
        return out


    def _decoder(self, seqs: list[list[int]]) -> RecomputeDecoder:
        """How greedy decoding gets next-token logits; subclasses may return a KV-cached decoder."""
        return RecomputeDecoder(self, seqs)


class RecomputeDecoder:
    """Greedy decoding without a cache: every step reruns each live row's whole prefix (right-padded,
    so padding never reaches a real position); the baseline every model supports."""

    def __init__(self, adapter: CausalLMAdapter, seqs: list[list[int]]):
        self.adapter, self.seqs = adapter, [list(x) for x in seqs]

    def next_logits(self, live: list[int]) -> torch.Tensor:
        T = max(len(self.seqs[b]) for b in live)
        ids = torch.full((len(live), T), self.adapter.codec.pad_id, dtype=torch.long)
        for j, b in enumerate(live):
            ids[j, :len(self.seqs[b])] = torch.tensor(self.seqs[b])
        last = torch.tensor([len(self.seqs[b]) - 1 for b in live])
        return self.adapter._run(ids, None, None, torch.arange(len(live)), last)

    def push(self, live: list[int], tokens: list[int]) -> None:
        for b, t in zip(live, tokens, strict=True):
            self.seqs[b].append(t)


# ------------------------------------------------------------------------------------- adapters


class NativeKVDecoder:
    """KV-cached greedy decoding for our Transformer (`cleanroom.train.model.KVCache`): the prompt runs
    once (left-padded, pad keys masked, positions counted over real tokens, exactly as
    `Transformer.forward(attention_mask=...)` does), then each step runs one token per row against the
    cached keys and values. A test checks that it generates exactly what `RecomputeDecoder` generates."""

    def __init__(self, adapter: NativeAdapter, seqs: list[list[int]]):
        from cleanroom.train.model import KVCache

        self.adapter = adapter
        B, T = len(seqs), max(len(x) for x in seqs)
        ids = torch.full((B, T), adapter.codec.pad_id, dtype=torch.long)
        keep = torch.zeros((B, T), dtype=torch.bool)
        for b, x in enumerate(seqs):
            ids[b, T - len(x):] = torch.tensor(x)
            keep[b, T - len(x):] = True
        dev = adapter.device
        self.keep = keep.to(dev)
        self.next_pos = self.keep.long().sum(1)
        positions = (self.keep.long().cumsum(-1) - 1).clamp(min=0)
        causal = torch.ones(T, T, dtype=torch.bool, device=dev).tril()
        mask = ((causal[None] & self.keep[:, None, :]) | torch.eye(T, dtype=torch.bool, device=dev)[None])[:, None]
        self.cache = KVCache(len(adapter.model.layers))
        self.pending: torch.Tensor | None = None
        self.last = self._forward(ids.to(dev), positions, mask)

    def _forward(self, ids: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        a, m = self.adapter, self.adapter.model
        a.counts.forward_calls += 1
        a.counts.tokens += ids.numel()
        with torch.inference_mode(), a._autocast():
            return m.lm_head(m.hidden(ids, positions, mask, self.cache)[:, -1]).float()

    def next_logits(self, live: list[int]) -> torch.Tensor:
        if self.pending is not None:
            tok, self.pending = self.pending, None
            B = tok.shape[0]
            self.keep = torch.cat([self.keep, torch.ones(B, 1, dtype=torch.bool, device=self.keep.device)], 1)
            positions = self.next_pos[:, None]
            self.next_pos = self.next_pos + 1
            self.last = self._forward(tok[:, None], positions, self.keep[:, None, None, :])
        return self.last[torch.tensor(live, device=self.last.device)]

    def push(self, live: list[int], tokens: list[int]) -> None:
        tok = torch.full((self.last.shape[0],), self.adapter.codec.pad_id, dtype=torch.long)
        tok[torch.tensor(live)] = torch.tensor(tokens)
        self.pending = tok.to(self.adapter.device)


class NativeAdapter(CausalLMAdapter):
    """Our `cleanroom.train.model.Transformer`.

    The packed strategy calls `Transformer.hidden(ids, positions, mask)` with the tree mask (the same
    modules `forward` runs), and greedy decoding uses the model's `KVCache`. A model without `hidden`
    falls back to the padded strategy; a test checks that packed and padded scores agree.
    """

    def __init__(self, model: torch.nn.Module, codec: Codec, *, max_len: int | None = None,
                 kv_cache: bool = True, **kw: Any):
        self.model = model.eval()
        self.supports_tree_mask = hasattr(model, "hidden") and hasattr(model, "lm_head")
        self.kv_cache = kv_cache
        if max_len is None:
            cfg = getattr(model, "cfg", None)
            max_len = int(getattr(cfg, "seq_len", 0) or 2048)
        device = kw.pop("device", None) or str(next(model.parameters()).device)
        super().__init__(codec, max_len=max_len, device=device, **kw)

    @classmethod
    def load(cls, model_dir: str | Path, **kw: Any) -> NativeAdapter:
        """Load an exported model directory with `cleanroom.train.export.load_native`."""
        from cleanroom.train.export import load_native

        try:
            model, tok = load_native(model_dir, device=kw.get("device") or "cpu")
        except RuntimeError as e:  # StoreError / TokenizerError: already one user-facing line
            raise EvalError(str(e)) from None
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


_PLAIN_HEAD = {"llama", "mistral", "qwen2", "qwen3"}  # logits = lm_head(last hidden state), nothing else


class HFAdapter(CausalLMAdapter):
    """Any transformers causal LM (exported cleanroom models, or any local HF model)."""

    supports_tree_mask = True  # 4D boolean masks + position_ids

    def __init__(self, model: torch.nn.Module, tokenizer: Any, *, max_len: int | None = None, **kw: Any):
        self.model = model.eval()
        if max_len is None:
            max_len = int(getattr(model.config, "max_position_embeddings", 2048) or 2048)
        device = kw.pop("device", None) or str(next(model.parameters()).device)
        super().__init__(Codec.from_transformers(tokenizer), max_len=max_len, device=device, **kw)

    @classmethod
    def load(cls, path: str | Path, *, device: str = "cpu", **kw: Any) -> HFAdapter:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if not Path(path).is_dir():
            raise EvalError(f"no Hugging Face model directory at {path}")
        try:
            model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
            tok = AutoTokenizer.from_pretrained(str(path))
        except (OSError, ValueError) as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise EvalError(f"cannot load a Hugging Face causal LM from {path}: {first}") from None
        return cls(model.to(device), tok, device=device, **kw)

    def _hidden(self, ids, positions, mask):
        if getattr(self.model.config, "model_type", "") not in _PLAIN_HEAD or not hasattr(self.model, "model"):
            return None  # e.g. logit soft-capping after the head: use the model's own logits
        return self.model.model(
            input_ids=ids,
            attention_mask=None if mask is None else mask[:, None],
            position_ids=positions,
            use_cache=False,
        ).last_hidden_state

    def _head(self, hidden):
        return self.model.lm_head(hidden)

    def _forward(self, ids, positions, mask):
        return self.model(
            input_ids=ids,
            attention_mask=None if mask is None else mask[:, None],
            position_ids=positions,
            use_cache=False,
        ).logits
