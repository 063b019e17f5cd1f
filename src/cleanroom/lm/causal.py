"""`CausalLM`: answers `LM` requests with any causal network; a backend (`native.py`, `hf.py`) only says
how to run the network (`_hidden` / `_head` / `_forward`), how to tokenize (`Codec`) and how to decode
with a KV cache (`_decoder`).

**Scoring** (`loglikelihood`). Tokenization follows lm-evaluation-harness: the context is BOS (when
the model uses one) + encode(context); the continuation's tokens are encode(context + continuation)
minus the context's, so a BPE merge across the boundary cannot make one option look cheaper. The last
continuation token is never fed (it is only read), so a one-token option costs nothing beyond its
context. Three strategies give the same numbers:

- `packed` (the fast path): the requests' token sequences (context + continuation minus its last
  token) are sorted and merged into a *prefix tree* per row: a shared prefix (the MMLU header, a
  question its twins repeat with other options, the context of four options) runs once. Every token
  attends to its ancestors only (a tree mask) at the position of its depth, so each sequence sees
  exactly what it would see alone. Rows are sorted by length and batched by a token budget.
- `padded`: one right-padded row per request (padding never reaches a real position).
- `naive`: one request per forward call (the baseline in `bench/eval_throughput.py`).
The batched strategies apply the vocabulary head only at the positions read (for a small model the
head is the largest matmul).

**Generation** (`generate`; `generate_until` is its text). Prompts are sorted by length and batched by
a token budget; each batch decodes step by step through the backend's decoder (KV-cached for both
backends; `RecomputeDecoder`, which reruns the prefix, for the naive strategy and models without a
cache). A row leaves the batch the moment it hits EOS, a stop string or its `max_tokens`, so one long
answer never keeps finished rows computing. Greedy at temperature 0, else top-p sampling with an
optional per-request seed (its own generator, so a row's sample does not depend on its batch) and an
optional repetition penalty over the completion's own tokens. Tests check that every path generates
the same greedy text.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from cleanroom.errors import InputError
from cleanroom.lm.api import (
    Completion,
    GenerateRequest,
    Loglikelihood,
    LoglikelihoodRequest,
    RequestCounts,
    cut_at_stop,
    plain_transcript,
)

Strategy = Literal["packed", "padded", "naive"]
BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"


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


# ------------------------------------------------------------------------------------- prefix trees


@dataclass
class _Row:
    """One scored row: a prefix tree of token sequences flattened in insertion order."""

    tokens: list[int]
    parents: list[int]  # -1 for a root
    depths: list[int]  # the position id of each token
    reads: list[tuple[int, int, int]]  # (request index, node whose logits are read, target token)
    children: list[dict[int, int]]  # node -> {token: child node}
    roots: dict[int, int]  # {token: root node}

    @classmethod
    def empty(cls) -> _Row:
        return cls([], [], [], [], [], {})

    def cost(self, seq: Sequence[int]) -> int:
        """How many new nodes `seq` would add."""
        kids = self.roots
        for k, t in enumerate(seq):
            nxt = kids.get(t)
            if nxt is None:
                return len(seq) - k
            kids = self.children[nxt]
        return 0

    def insert(self, seq: Sequence[int]) -> list[int]:
        """Node index of every token of `seq` (shared prefixes reuse nodes)."""
        path, node, kids = [], -1, self.roots
        for t in seq:
            nxt = kids.get(t)
            if nxt is None:
                nxt = len(self.tokens)
                self.tokens.append(t)
                self.parents.append(node)
                self.depths.append(0 if node < 0 else self.depths[node] + 1)
                self.children.append({})
                kids[t] = nxt
            path.append(nxt)
            node, kids = nxt, self.children[nxt]
        return path

    def is_chain(self) -> bool:
        return all(p == i - 1 for i, p in enumerate(self.parents))

    def ancestors(self, T: int) -> np.ndarray:
        """[T, T] bool: node i may attend to node j (j is i or an ancestor of i); padding sees itself."""
        n = len(self.tokens)
        m = np.zeros((T, T), dtype=bool)
        for i, p in enumerate(self.parents):
            if p >= 0:
                m[i] = m[p]
            m[i, i] = True
        m[np.arange(n, T), np.arange(n, T)] = True
        return m


# ------------------------------------------------------------------------------------- the model


class CausalLM:
    """Answers `loglikelihood`, `generate` and `generate_until` requests; see the module doc."""

    supports_tree_mask = False  # backends whose `_hidden` honours `mask` + `positions` set True
    name = "causal-lm"
    identity = "causal-lm"

    def __init__(self, codec: Codec, *, max_len: int, device: str = "cpu", dtype: str = "fp32",
                 batch_size: int = 64, strategy: Strategy = "packed", batch_tokens: int = 16384,
                 row_tokens: int = 1024, eos_ids: Sequence[int] = ()):
        if strategy == "packed" and not self.supports_tree_mask:
            strategy = "padded"
        self.codec, self.max_len, self.device = codec, int(max_len), torch.device(device)
        self.dtype, self.batch_size, self.strategy = dtype, max(1, int(batch_size)), strategy
        self.batch_tokens, self.row_tokens = int(batch_tokens), int(row_tokens)
        self.eos_ids = {i for i in (codec.eos_id, *eos_ids) if i is not None}
        self.counts = RequestCounts()

    # backends ----------------------------------------------------------------------------------
    def _forward(self, ids: torch.Tensor, positions: torch.Tensor | None,
                 mask: torch.Tensor | None) -> torch.Tensor:
        """ids [B,T] -> logits [B,T,V]; `mask` [B,T,T] bool (True = may attend) or None = causal."""
        return self._head(self._hidden(ids, positions, mask))

    def _hidden(self, ids: torch.Tensor, positions: torch.Tensor | None,
                mask: torch.Tensor | None) -> torch.Tensor | None:
        """ids [B,T] -> final hidden states [B,T,D] (after the last norm), or None if unsupported."""
        return None

    def _head(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden [N,D] -> logits [N,V]."""
        raise NotImplementedError

    def _decoder(self, seqs: list[list[int]]) -> Decoder:
        """How decoding gets next-token logits; backends return a KV-cached decoder."""
        return RecomputeDecoder(self, seqs)

    def apply_chat_template(self, messages: list[dict]) -> str:
        return plain_transcript(messages)

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
        """Logits [N,V] (fp32) at positions (rows[i], cols[i]) of the batch (the head only there,
        except for `naive`, which computes every position's logits as a plain scorer would)."""
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

    def _bos(self) -> list[int]:
        return [] if self.codec.bos_id is None else [self.codec.bos_id]

    def _batches(self, lengths: list[int]) -> Iterator[list[int]]:
        """Indices, longest first, in batches of at most `batch_size` rows and about `batch_tokens`
        padded positions (a prompt batch sized by length); one per batch for `naive`."""
        if self.strategy == "naive":
            yield from ([i] for i in range(len(lengths)))
            return
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        batch: list[int] = []
        for i in order:
            width = lengths[batch[0]] if batch else lengths[i]
            if batch and (len(batch) >= self.batch_size or (len(batch) + 1) * width > self.batch_tokens):
                yield batch
                batch = []
            batch.append(i)
        if batch:
            yield batch

    # loglikelihood -----------------------------------------------------------------------------
    def encode_requests(self, requests: Sequence[LoglikelihoodRequest]) -> list[tuple[list[int], list[int]]]:
        """(context ids with BOS, continuation ids) per request, lm-evaluation-harness style."""
        unique = list(dict.fromkeys(r.context for r in requests))
        bare = dict(zip(unique, self.codec.encode_batch(unique), strict=True))
        wholes = self.codec.encode_batch([r.context + r.continuation for r in requests])
        out = []
        for r, whole in zip(requests, wholes, strict=True):
            cont = whole[len(bare[r.context]):]
            if not cont:
                raise InputError(f"continuation {r.continuation!r} encodes to no tokens after its context")
            out.append((self._bos() + bare[r.context], cont))
        return out

    def _fit(self, ctx: list[int], cont_len: int) -> list[int]:
        room = self.max_len - cont_len
        if room < 1:
            raise InputError(f"a continuation of {cont_len} tokens does not fit the model window "
                             f"({self.max_len} tokens)")
        return ctx[-room:]

    def _rows(self, encoded: list[tuple[list[int], list[int]]]) -> list[_Row]:
        seqs = []
        for ctx, cont in encoded:
            c = self._fit(ctx, len(cont))
            seqs.append((c + cont[:-1], len(c), cont))
        rows: list[_Row] = []
        if self.strategy != "packed":
            for i, (seq, n_ctx, cont) in enumerate(seqs):
                row = _Row.empty()
                path = row.insert(seq)
                row.reads = [(i, path[n_ctx - 1 + t], cont[t]) for t in range(len(cont))]
                rows.append(row)
            return rows
        budget = max(self.row_tokens, 1)
        row = _Row.empty()
        for i in sorted(range(len(seqs)), key=lambda i: seqs[i][0]):  # neighbours share prefixes
            seq, n_ctx, cont = seqs[i]
            if row.tokens and len(row.tokens) + row.cost(seq) > budget:
                rows.append(row)
                row = _Row.empty()
            path = row.insert(seq)
            row.reads += [(i, path[n_ctx - 1 + t], cont[t]) for t in range(len(cont))]
        if row.tokens:
            rows.append(row)
        return rows

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[Loglikelihood]:
        """log P(continuation | context) per request, summed over tokens, in request order."""
        if not requests:
            return []
        t0 = time.perf_counter()
        encoded = self.encode_requests(requests)
        rows = self._rows(encoded)
        total = [0.0] * len(requests)
        greedy = [True] * len(requests)
        for batch in self._batches([len(r.tokens) for r in rows]):
            B, T = len(batch), max(len(rows[i].tokens) for i in batch)
            ids = torch.full((B, T), self.codec.pad_id, dtype=torch.long)
            for b, i in enumerate(batch):
                ids[b, :len(rows[i].tokens)] = torch.tensor(rows[i].tokens)
            mask = positions = None
            if not all(rows[i].is_chain() for i in batch):  # a tree: ancestors-only mask, depth positions
                mask = torch.from_numpy(np.stack([rows[i].ancestors(T) for i in batch]))
                positions = torch.zeros((B, T), dtype=torch.long)
                for b, i in enumerate(batch):
                    positions[b, :len(rows[i].depths)] = torch.tensor(rows[i].depths)
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
    def _prompt_ids(self, requests: Sequence[GenerateRequest]) -> list[list[int]]:
        """BOS + the raw context, or the chat-templated message (the template brings its own specials)."""
        texts = [self.apply_chat_template(r.messages()) if r.chat else r.context for r in requests]
        return [ids if r.chat else self._bos() + ids
                for r, ids in zip(requests, self.codec.encode_batch(texts), strict=True)]

    def generate_until(self, requests: Sequence[GenerateRequest]) -> list[str]:
        """The generated text per request, cut before its first stop string, in request order."""
        return [c.text for c in self.generate(requests)]

    def generate(self, requests: Sequence[GenerateRequest]) -> list[Completion]:
        """Decode every request (see the module doc); token counts exclude padding and the end token."""
        if not requests:
            return []
        t0 = time.perf_counter()
        prompts = [self._fit(p, r.max_tokens) for p, r in zip(self._prompt_ids(requests), requests, strict=True)]
        out: list[Completion | None] = [None] * len(requests)
        for batch in self._batches([len(p) for p in prompts]):
            reqs = [requests[i] for i in batch]
            for i, c in zip(batch, self._decode_batch([prompts[i] for i in batch], reqs), strict=True):
                out[i] = c
        self.counts.generate += len(requests)
        self._timed("generate_s", t0)
        return out  # type: ignore[return-value]

    def _decode_batch(self, prompts: list[list[int]], reqs: list[GenerateRequest]) -> list[Completion]:
        new: list[list[int]] = [[] for _ in reqs]
        reason = ["length"] * len(reqs)
        gens = [None if r.temperature <= 0 or r.seed is None
                else torch.Generator().manual_seed(int(r.seed)) for r in reqs]
        tails = [2 * max((len(s) for s in r.until if s), default=0) + 8 for r in reqs]
        live = [b for b in range(len(reqs)) if reqs[b].max_tokens > 0]
        decoder = self._decoder([prompts[b] for b in live]) if live else None
        while live:
            logits = decoder.logits()  # [len(live), V], row j = live[j]
            toks = self._pick(logits, [reqs[b] for b in live], [new[b] for b in live], [gens[b] for b in live])
            keep = []
            for j, (b, tok) in enumerate(zip(live, toks, strict=True)):
                if tok in self.eos_ids:
                    reason[b] = "stop"
                    continue
                new[b].append(tok)
                until = reqs[b].until
                if until and any(u and u in self.codec.decode(new[b][-tails[b]:]) for u in until):
                    reason[b] = "stop"
                    continue
                if len(new[b]) < reqs[b].max_tokens:
                    keep.append(j)
            if not keep:
                break
            live = [live[j] for j in keep]
            decoder.step(keep, [toks[j] for j in keep])
        out = []
        for b, r in enumerate(reqs):
            text = self.codec.decode(new[b])
            cut = cut_at_stop(text, r.until)
            out.append(Completion(cut, len(prompts[b]), len(new[b]), "stop" if len(cut) < len(text) else reason[b]))
        return out

    @staticmethod
    def _pick(logits: torch.Tensor, reqs: list[GenerateRequest], new: list[list[int]],
              gens: list[torch.Generator | None]) -> list[int]:
        """The next token per live row: argmax at temperature 0, else a top-p sample."""
        greedy = logits.argmax(dim=-1).cpu().tolist()
        if all(r.temperature <= 0 for r in reqs):
            return greedy
        logits = logits.float().cpu()
        for j, r in enumerate(reqs):
            if r.temperature <= 0:
                continue
            row = logits[j].clone()
            if r.repetition_penalty and new[j]:
                seen = torch.tensor(sorted(set(new[j])))
                v = row[seen]
                row[seen] = torch.where(v > 0, v / r.repetition_penalty, v * r.repetition_penalty)
            probs = torch.softmax(row / r.temperature, dim=-1)
            if r.top_p < 1.0:
                p, idx = probs.sort(descending=True)
                drop = p.cumsum(0) - p > r.top_p  # keep the smallest set whose mass reaches top_p
                p[drop] = 0.0
                probs = torch.zeros_like(probs).scatter(0, idx, p)
            greedy[j] = int(torch.multinomial(probs, 1, generator=gens[j]).item())
        return greedy


class Decoder:
    """Next-token logits for a batch of prompts that shrinks as rows finish."""

    def logits(self) -> torch.Tensor:  # [live, V] for the rows still decoding
        raise NotImplementedError

    def step(self, keep: list[int], tokens: list[int]) -> None:
        """Keep rows `keep` (indices into the current live rows) and append one token to each."""
        raise NotImplementedError


class RecomputeDecoder(Decoder):
    """Decoding without a cache: every step reruns each live row's whole prefix (right-padded, so
    padding never reaches a real position); the baseline every model supports."""

    def __init__(self, lm: CausalLM, seqs: list[list[int]]):
        self.lm, self.seqs = lm, [list(x) for x in seqs]

    def logits(self) -> torch.Tensor:
        T = max(len(s) for s in self.seqs)
        ids = torch.full((len(self.seqs), T), self.lm.codec.pad_id, dtype=torch.long)
        for j, s in enumerate(self.seqs):
            ids[j, :len(s)] = torch.tensor(s)
        last = torch.tensor([len(s) - 1 for s in self.seqs])
        return self.lm._run(ids, None, None, torch.arange(len(self.seqs)), last)

    def step(self, keep: list[int], tokens: list[int]) -> None:
        self.seqs = [self.seqs[j] + [t] for j, t in zip(keep, tokens, strict=True)]


def left_padded(seqs: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids [B,T], keep [B,T] bool) with every row's last token at T-1."""
    B, T = len(seqs), max(len(x) for x in seqs)
    ids = torch.full((B, T), pad, dtype=torch.long)
    keep = torch.zeros((B, T), dtype=torch.bool)
    for b, x in enumerate(seqs):
        ids[b, T - len(x):] = torch.tensor(x)
        keep[b, T - len(x):] = True
    return ids, keep
