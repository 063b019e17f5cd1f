"""Why bf16 learned worse, and the val-loss curves of fp32 vs bf16 with the fix (docs/performance.md).

    .venv/bin/python scripts/bf16_curves.py --run runs/default --variants fp32 bf16 bf16_head32 --seeds 0
    .venv/bin/python scripts/bf16_curves.py --run runs/default --variants fp32 bf16_head32 --seeds 0 1 --plot f.png

Trains one recipe's model (default: textbook) from a run directory's token files with the run's `model`
and `train` config, once per (variant, seed), and writes one JSON line per run (val loss every `--every`
steps, measured in the run's own precision and in fp32) to `--out`. The variants change one thing each:

- `fp32`: the baseline (what the default preset trains).
- `bf16`: CPU autocast as it was: every matmul (q/k/v/o, the MLP, the tied vocabulary head) and attention
  in bf16 with fp32 accumulation, bf16 outputs; residual stream, norms, loss and AdamW stay fp32.
- `bf16_head32`: the same, but the vocabulary head (and so the logits and the loss) in fp32: the fix
  that `Transformer.head` now applies.
- `bf16_head32_mlp32`, `bf16_head32_attn32`: the head and the MLPs (or the attention blocks: q/k/v/o
  projections and attention) in fp32, the rest in bf16: which part does the remaining damage?
- `bf16_head32_rope32`: the head and the rotary embedding in fp32 (autocast rounds q and k to bf16 only
  at attention); `bf16_head32_sdpa32`: the head and attention itself in fp32.
- `bf16_lr`: plain bf16 at half the learning rate (is it an lr interaction?).

bf16 arithmetic is *emulated* unless this CPU runs bf16 GEMMs fast (`--bf16 native|emulated`, default
auto): operands are rounded to bf16, multiplied in fp32 (a product of two bf16 values is exact in fp32,
and the sum is accumulated in fp32, as oneDNN's bf16 GEMM does), and the result is rounded to bf16; its
backward rounds the input and weight gradients to bf16 as autocast's bf16 GEMMs do. Attention rounds its
probabilities to bf16 before the second matmul, as the CPU flash kernel does. Without AVX512-BF16 or AMX,
PyTorch's bf16 GEMM falls back to a scalar loop (~1 GFLOP/s), which makes native runs impractical there.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from cleanroom.config import saved_config
from cleanroom.runtime import autocast, fast_bf16
from cleanroom.train.data import TrainBatches, open_tokens, val_batches
from cleanroom.train.model import Transformer
from cleanroom.train.trainer import lr_at, make_optimizer

VARIANTS = ("fp32", "bf16", "bf16_head32", "bf16_head32_mlp32", "bf16_head32_attn32", "bf16_head32_rope32",
            "bf16_head32_sdpa32", "bf16_lr")
BF16 = torch.bfloat16


def _round(t: torch.Tensor) -> torch.Tensor:
    """bf16-rounded copy in fp32 storage (the gradient flows through the rounding, rounded too)."""
    return t.to(BF16).float()


class EmulatedBF16(TorchFunctionMode):
    """CPU bf16 autocast's numerics with fp32 kernels: matmuls take bf16-rounded operands, accumulate in
    fp32 and return bf16 tensors, so the elementwise ops after them (RoPE, SiLU, the gate product) run
    on bf16 values exactly as under autocast. `fp32_weights`: linears left in fp32 (the head fix);
    `attention`: False keeps attention in fp32."""

    def __init__(self, fp32_weights: tuple[torch.Tensor, ...] = (), attention: bool = True,
                 fp32_rope: tuple[torch.Tensor, ...] = ()):
        super().__init__()
        self.fp32_ids = {id(w) for w in fp32_weights}
        self.attention = attention
        self.rope_ptrs = {t.data_ptr() for t in fp32_rope}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.Tensor.to and self.rope_ptrs and args[0].data_ptr() in self.rope_ptrs:
            return args[0]  # `_rope32`: cos/sin stay fp32, so the rotation runs in fp32 (promotion)
        if func is F.linear:
            x, w = args[0], args[1]
            if id(w) in self.fp32_ids:
                return F.linear(x.float(), w)
            return F.linear(_round(x), _round(w)).to(BF16)
        if func is F.scaled_dot_product_attention and self.attention:
            q, k, v = args[:3]
            return _attention_bf16(q, k, v, kwargs.get("attn_mask"), kwargs.get("is_causal", False))
        if func is F.scaled_dot_product_attention:
            q, k, v = (t.float() for t in args[:3])
            return func(q, k, v, *args[3:], **kwargs)
        return func(*args, **kwargs)


def _attention_bf16(q, k, v, mask, is_causal: bool) -> torch.Tensor:
    """Causal attention as the bf16 CPU flash kernel computes it: fp32 scores and softmax, bf16 probabilities."""
    scores = (_round(q) @ _round(k).transpose(-2, -1)) / math.sqrt(q.shape[-1])
    T, S = scores.shape[-2:]
    if is_causal:
        scores = scores.masked_fill(~torch.ones(T, S, dtype=torch.bool).tril(), float("-inf"))
    elif mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return (_round(scores.softmax(-1)) @ _round(v)).to(BF16)


class BF16HeadTransformer(Transformer):
    """The model as it was before the fix: the vocabulary head under autocast like every other matmul."""

    def head(self, h: torch.Tensor) -> torch.Tensor:
        return self.lm_head(h)


def precision(variant: str, model: Transformer, native: bool):
    """The context a forward pass of `variant` runs in: `bf16` plus the parts kept in fp32 (`_head32`,
    `_mlp32`, `_attn32` for the attention block's projections and attention, `_sdpa32` for attention only)."""
    if variant == "fp32":
        return autocast("cpu", "fp32")
    parts = set(variant.split("_")[1:])
    if native:
        if parts - {"head32", "lr"}:
            raise SystemExit(f"variant {variant} is emulation-only")
        return autocast("cpu", "bf16")  # `Transformer.head` keeps fp32; BF16HeadTransformer does not
    fp32: list[torch.Tensor] = [model.lm_head.weight] if "head32" in parts else []
    for block in model.layers:
        if "mlp32" in parts:
            fp32 += [block.mlp.gate_proj.weight, block.mlp.up_proj.weight, block.mlp.down_proj.weight]
        if "attn32" in parts:
            a = block.self_attn
            fp32 += [a.q_proj.weight, a.k_proj.weight, a.v_proj.weight, a.o_proj.weight]
    rope = (model.rope_cos, model.rope_sin) if "rope32" in parts else ()
    return EmulatedBF16(fp32_weights=tuple(fp32), attention=not parts & {"attn32", "sdpa32"}, fp32_rope=rope)


@torch.no_grad()
def val_loss(model: Transformer, batches, ctx_factory) -> float:
    total, n = 0.0, 0
    for x, y in batches:
        with ctx_factory():
            _, loss = model(x, y)
        total += loss.item() * x.numel()
        n += x.numel()
    return total / n


def train(run: Path, recipe: str, variant: str, seed: int, every: int, native: bool, steps: int | None) -> dict:
    cfg = saved_config(run / "config.toml")
    m, t = cfg.model, cfg.train
    if variant == "bf16_lr":
        t = t.model_copy(update={"lr": t.lr / 2})
    n_steps = steps or t.steps
    meta = json.loads((run / "tokens" / f"{recipe}.json").read_text())
    batches = TrainBatches(open_tokens(run / "tokens", recipe, "train"), m.seq_len, seed)
    val = val_batches(open_tokens(run / "tokens", recipe, "val"), m.seq_len, t.batch_size, t.eval_batches)
    old_head = native and "head32" not in variant  # native autocast, the head in bf16 as it was
    model = (BF16HeadTransformer if old_head else Transformer)(m, meta["vocab_size"], seed=seed)
    opt = make_optimizer(model, t.lr, t.weight_decay, (t.beta1, t.beta2))
    ctx = lambda: precision(variant, model, native)  # noqa: E731
    curve, t0 = [], time.perf_counter()
    for step in range(n_steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, t)
        x, y = batches.batch(step, 0, 1, t.batch_size)
        with ctx():
            _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if (step + 1) % every == 0 or step + 1 == n_steps:
            point = {"step": step + 1, "train_loss": round(loss.item(), 5),
                     "val_loss": round(val_loss(model, val, ctx), 5),
                     "val_loss_fp32": round(val_loss(model, val, lambda: autocast("cpu", "fp32")), 5)}
            curve.append(point)
            print(variant, seed, point, f"{time.perf_counter() - t0:.0f}s", flush=True)
    return {"recipe": recipe, "variant": variant, "seed": seed, "bf16": "native" if native else "emulated",
            "steps": n_steps, "seconds": round(time.perf_counter() - t0, 1), "curve": curve,
            "load_avg_1m": round(os.getloadavg()[0], 2)}


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for r in results:
        xs = [p["step"] for p in r["curve"]]
        ax.plot(xs, [p["val_loss"] for p in r["curve"]], label=f"{r['variant']} seed {r['seed']}",
                linestyle="-" if r["variant"] == "fp32" else "--")
    ax.set_xlabel("step")
    ax.set_ylabel(f"val loss ({results[0]['recipe']})")
    ax.set_ylim(top=min(3.0, ax.get_ylim()[1]))
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, required=True, help="run directory with tokens/ and config.toml")
    ap.add_argument("--recipe", default="textbook")
    ap.add_argument("--variants", nargs="+", default=["fp32", "bf16_head32"], choices=VARIANTS)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--every", type=int, default=40, help="steps between val-loss points")
    ap.add_argument("--steps", type=int, default=None, help="default: the run's train.steps")
    ap.add_argument("--bf16", choices=["auto", "native", "emulated"], default="auto")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("bf16_curves.jsonl"))
    ap.add_argument("--plot", type=Path, default=None, help="draw the runs of --variants x --seeds to this PNG")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    native = args.bf16 == "native" or (args.bf16 == "auto" and fast_bf16("cpu"))
    done = [json.loads(line) for line in args.out.read_text().splitlines()] if args.out.exists() else []
    have = {(r["variant"], r["seed"], r["steps"]) for r in done}
    for seed in args.seeds:
        for variant in args.variants:
            if (variant, seed, args.steps or saved_config(args.run / "config.toml").train.steps) in have:
                continue
            r = train(args.run, args.recipe, variant, seed, args.every, native, args.steps)
            with open(args.out, "a") as f:
                f.write(json.dumps(r) + "\n")
            done.append(r)
    if args.plot:
        plot([r for r in done if r["variant"] in args.variants and r["seed"] in args.seeds], args.plot)


if __name__ == "__main__":
    main()
