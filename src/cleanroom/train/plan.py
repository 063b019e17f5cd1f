"""`cleanroom run --dry-run`: will a preset's training fit on a GPU, and how long will it take? Checked on
the CPU, before anyone rents a GPU, without importing torch or building the model.

Everything follows from the config's shapes (`model`, `train`, `tokenizer.vocab_size`), per GPU process
(DDP keeps a full replica per GPU; `train.batch_size` is per process):

- **parameters** of the Llama-style model in `train/model.py` (equal to `Transformer.num_params()`;
  `tests/test_plan.py` checks it for every preset), with the vocabulary at `tokenizer.vocab_size` (the
  trained BPE may come out a little smaller);
- **weights, gradients and AdamW state**: fp32 weights (4 B/param), fp32 gradients (4), AdamW's two fp32
  moments (8), plus the bf16 weight copies autocast caches during a step (2);
- **activations**: the tensors autograd saves for the backward pass, per token and layer (below), times
  `batch_size x seq_len`; no activation checkpointing; attention through SDPA's fused kernel (no T x T
  score matrix); plus the logits, which at large vocabularies dominate (bf16 logits, their fp32 copy,
  the saved log-softmax and its gradient). `tests/test_plan.py` checks the estimate against the bytes
  autograd really saves in one CPU training step of the smoke and default models (within 20%);
- **FLOPs per step**: `Transformer.flops_per_token` (PaLM: 6 x matmul parameters + 12 x layers x width x
  seq_len for attention) times tokens per step (`batch_size x seq_len x GPUs`), and the time at an assumed
  model-FLOPs utilisation (MFU) of the GPU's dense peak: 35% by default, what nanoGPT-class trainers
  reach on A100/H100 with `torch.compile` at ~100M parameters;
- the **tamper** sweep's fine-tuning, as an upper bound (every attack sequence padded to `seq_len`).

A shape that cannot run is an error (a head dimension RoPE cannot split, more tokens per step than a
kernel can index); a preset whose per-GPU memory exceeds `--gpu-memory` is refused, naming the batch size
that would fit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cleanroom.config import ConfigError, ExperimentConfig, ModelConfig

GIB = 1024**3
# dense peak TFLOP/s of one H100 SXM (bf16 tensor cores; plain fp32), NVIDIA's data sheet
H100_PEAK_TFLOPS = {"bf16": 989.0, "fp32": 67.0}
DEFAULT_MFU = 0.35
OVERHEAD_GIB = 1.5  # CUDA context, cuBLAS/cuDNN workspaces, the caching allocator's slack
WORD_UNITS_TO_TOKENS = 1.3  # BPE tokens per budget word unit, about (the tokenize stage reports the real ratio)


def param_count(m: ModelConfig, vocab: int) -> int:
    """Parameters of `train.model.Transformer(m, vocab)` (tied embeddings counted once)."""
    hd = m.d_model // m.n_heads
    attn = m.d_model * (m.n_heads * hd) * 2 + m.d_model * (m.n_kv_heads * hd) * 2  # q, o; k, v
    mlp = 3 * m.d_model * m.ffn_hidden
    layer = attn + mlp + 2 * m.d_model  # + two RMSNorm weights
    head = 0 if m.tie_embeddings else vocab * m.d_model
    return vocab * m.d_model + m.n_layers * layer + m.d_model + head


def flops_per_token(m: ModelConfig, vocab: int) -> float:
    """Training FLOPs per token, exactly as `Transformer.flops_per_token` counts them."""
    norms = (2 * m.n_layers + 1) * m.d_model
    matmul = param_count(m, vocab) - norms  # a tied head is a matmul too: its weight counts once as a parameter
    return 6.0 * matmul + 12.0 * m.n_layers * m.d_model * m.seq_len


def saved_bytes_per_token(m: ModelConfig, vocab: int, bf16: bool) -> float:
    """Bytes autograd saves per token for the backward pass (see the module docstring).

    The residual stream and RMSNorm are fp32 (the model normalises in fp32 on purpose); matmul inputs and
    outputs are bf16 under autocast (`bf16`), else fp32. RoPE saves only its (tiny, shared) cos/sin.
    """
    d, f, h = m.d_model, m.ffn_hidden, m.n_heads
    kv = m.n_kv_heads * (d // h)
    a = 2 if bf16 else 4  # bytes of a matmul-side activation
    norm = 4 * d * 2 + a * d  # its input, the normalised input (fp32), the matmul input after the weight
    attn = (norm
            + a * d + a * 2 * (d if kv != d else kv)  # SDPA's q, k, v (k, v repeated to every query head under GQA)
            + a * d + 4 * h  # SDPA's output and log-sum-exp
            + a * d)  # o_proj's input (heads merged)
    mlp = norm + a * 4 * f  # gate, silu(gate), up, their product
    return m.n_layers * (attn + mlp) + norm + 4 * vocab  # + the final norm and the saved log-softmax


def activation_bytes_per_token(m: ModelConfig, vocab: int, bf16: bool) -> float:
    """Peak activation bytes per token: what autograd saves, plus the logits alive at the start of the
    backward pass (the logits, and the gradients of their fp32 and matmul-dtype copies)."""
    a = 2 if bf16 else 4
    return saved_bytes_per_token(m, vocab, bf16) + (2 * a + 4) * vocab


@dataclass
class Plan:
    params: int
    weights_state_bytes: int  # weights + gradients + AdamW moments + autocast weight copies
    activation_bytes: int  # one micro-batch, per GPU
    total_bytes: int
    tokens_per_step: int
    flops_per_step: float
    steps: int
    models: int
    train_seconds: float  # every model, one after the other
    tamper_seconds: float
    epochs: float
    peak_tflops: float
    mfu: float
    gpus: int
    gpu_memory: int | None
    max_batch: int | None  # the largest train.batch_size that fits `gpu_memory`

    @property
    def fits(self) -> bool:
        return self.gpu_memory is None or self.total_bytes <= self.gpu_memory


def parse_memory(text: str) -> int:
    """'80GB', '80GiB', '80g', '24' (GiB) -> bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(g|gb|gib|m|mb|mib)?\s*", text.lower())
    if not m:
        raise ConfigError(f"--gpu-memory expects a size such as 80GB or 40GiB, got `{text}`")
    scale = GIB if (m.group(2) or "g").startswith("g") else 1024**2
    return int(float(m.group(1)) * scale)


def check_shapes(cfg: ExperimentConfig) -> None:
    """Shapes the model cannot run with, as one-line errors (pydantic already checked head divisibility)."""
    m = cfg.model
    hd = m.d_model // m.n_heads
    if hd % 2:
        raise ConfigError(f"model.d_model / model.n_heads = {hd} must be even: RoPE rotates channel pairs")
    if cfg.train.batch_size * m.seq_len > 2**31:
        raise ConfigError(f"train.batch_size x model.seq_len = {cfg.train.batch_size * m.seq_len:,} tokens per step "
                          f"per GPU exceeds 2^31: an index no kernel can address")


def plan(cfg: ExperimentConfig, gpus: int = 1, gpu_memory: int | None = None, mfu: float = DEFAULT_MFU,
         peak_tflops: float | None = None) -> Plan:
    """Memory, FLOPs and time of training `cfg`'s models on `gpus` GPUs (DDP)."""
    if gpus < 1:
        raise ConfigError(f"--gpus must be >= 1, got {gpus}")
    if not 0 < mfu <= 1:
        raise ConfigError(f"--mfu must be in (0, 1], got {mfu}")
    check_shapes(cfg)
    m, t, vocab = cfg.model, cfg.train, cfg.tokenizer.vocab_size
    bf16 = t.dtype in ("auto", "bf16")  # auto = bf16 autocast on CUDA
    p = param_count(m, vocab)
    state = p * (4 + 4 + 8 + (2 if bf16 else 0))
    per_token = activation_bytes_per_token(m, vocab, bf16)
    act = int(per_token * t.batch_size * m.seq_len)
    overhead = int(OVERHEAD_GIB * GIB)
    total = state + act + overhead
    tokens = t.batch_size * m.seq_len * gpus
    fpt = flops_per_token(m, vocab)
    peak = (peak_tflops or H100_PEAK_TFLOPS["bf16" if bf16 else "fp32"]) * 1e12
    rate = peak * mfu * gpus
    models = len(cfg.trained())
    train_s = models * t.steps * fpt * tokens / rate
    tam = cfg.tamper
    tamper_tokens = len(tam.attacks) * len(tam.lrs) * max(tam.steps) * tam.batch_size * m.seq_len
    tamper_s = len(cfg.attacked()) * tamper_tokens * fpt / (peak * mfu)  # one GPU per attacked model
    epochs = t.steps * tokens / (cfg.recipes.token_budget * WORD_UNITS_TO_TOKENS)
    max_batch = None
    if gpu_memory is not None:
        room = gpu_memory - state - overhead
        max_batch = max(0, int(room // (per_token * m.seq_len))) if room > 0 else 0
    return Plan(params=p, weights_state_bytes=state, activation_bytes=act, total_bytes=total, tokens_per_step=tokens,
                flops_per_step=fpt * tokens, steps=t.steps, models=models, train_seconds=train_s,
                tamper_seconds=tamper_s, epochs=epochs, peak_tflops=peak / 1e12, mfu=mfu, gpus=gpus,
                gpu_memory=gpu_memory, max_batch=max_batch)


def _hours(s: float) -> str:
    return f"{s / 3600:.1f} h" if s >= 3600 else f"{s / 60:.1f} min" if s >= 60 else f"{s:.1f} s"


def describe(cfg: ExperimentConfig, p: Plan) -> list[tuple[str, str]]:
    """The dry run's table: (what, value) rows."""
    m, t = cfg.model, cfg.train
    per_model = p.train_seconds / max(p.models, 1)
    rows = [
        ("model", f"{m.n_layers} layers x {m.d_model} wide, {m.n_heads} heads ({m.n_kv_heads} kv), ffn "
                  f"{m.ffn_hidden}, seq {m.seq_len}, vocab {cfg.tokenizer.vocab_size:,}"),
        ("parameters", f"{p.params:,} ({p.params / 1e6:.1f}M)"),
        ("weights + grads + AdamW (+ bf16 copies)", f"{p.weights_state_bytes / GIB:.2f} GiB per GPU"),
        (f"activations (batch {t.batch_size} x seq {m.seq_len})", f"{p.activation_bytes / GIB:.2f} GiB per GPU"),
        ("CUDA context and allocator slack", f"{OVERHEAD_GIB:.1f} GiB"),
        ("total per GPU", f"{p.total_bytes / GIB:.2f} GiB"),
        ("tokens per step", f"{p.tokens_per_step:,} ({t.batch_size} x {m.seq_len} x {p.gpus} GPU)"),
        ("FLOPs per step", f"{p.flops_per_step:.3g}"),
        ("training tokens per model", f"{p.steps * p.tokens_per_step:,} = ~{p.epochs:.1f} epochs of a "
                                      f"{cfg.recipes.token_budget:,}-word-unit recipe"),
        ("time per model", f"{_hours(per_model)} at {p.mfu:.0%} MFU of {p.peak_tflops:g} TFLOP/s x {p.gpus}"),
        (f"training, {p.models} models", _hours(p.train_seconds)),
        ("tamper sweep (upper bound)", f"{_hours(p.tamper_seconds)} on one GPU"),
    ]
    if p.gpu_memory is not None:
        verdict = "fits" if p.fits else "does NOT fit"
        rows.append((f"on a {p.gpu_memory / GIB:g} GiB GPU", f"{verdict} (largest train.batch_size that fits: "
                                                              f"{p.max_batch})"))
    return rows


def refuse_if_unfit(p: Plan) -> None:
    if not p.fits:
        raise ConfigError(
            f"this preset needs {p.total_bytes / GIB:.1f} GiB per GPU but --gpu-memory is {p.gpu_memory / GIB:g} GiB: "
            + (f"set train.batch_size <= {p.max_batch} (and raise train.steps to keep the tokens)" if p.max_batch
               else "even one sequence does not fit; shrink the model (model.*) or model.seq_len"))
