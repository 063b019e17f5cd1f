"""N models of one shape trained as one: every weight gets a leading model dimension.

    models = BatchedTransformer(cfg, vocab_size, seeds=[0, 0, 0, 7])   # e.g. 4 recipes, the last a null control
    losses = models(idx, targets)          # idx, targets: [N, B, T]; losses: [N], one per model
    losses.sum().backward()                # model n's gradients are exactly those of losses[n]

Why: an experiment trains several models of one shape and schedule (one per recipe, plus controls),
and each is too small to fill a machine on its own: its GEMMs are [2048, 192] x [192, 192], a step is
hundreds of small ops. Here each kernel does the work of all of them: `torch.bmm` over the model
dimension instead of N `mm`s, one attention call over N x B sequences, one optimizer call for all
models' parameters. That pays where launches and threads are the cost (a GPU, many cores, a model count
that does not divide among the cores). On a 2-core CPU in fp32 a 1-thread step of N batched models
costs what N single steps cost (the GEMMs dominate), so there the pipeline runs one batched group per
core (docs/performance.md).

The maths per model is `model.Transformer`'s, op for op, so model n gets the numbers it gets alone
(same kernels on the same shapes: bit-exact in fp32 on the CPUs tested; `tests/test_train_batched.py`
checks it). Parameters carry `Transformer`'s names (`layers.0.self_attn.q_proj.weight`, ...) with shape
[N, *shape], so model n's state dict is `{name: p[n]}`, and export and checkpoints reuse the
single-model code unchanged.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from cleanroom.config import ExperimentConfig, ModelConfig, base_recipe, train_seed
from cleanroom.contract import check_cancelled
from cleanroom.runtime import autocast, pick_device, resolve_dtype
from cleanroom.store import RunStore, StoreError
from cleanroom.train.data import TrainBatches, open_tokens, val_batches
from cleanroom.train.export import export_hf
from cleanroom.train.log import TrainLog
from cleanroom.train.model import IGNORE_INDEX, Transformer, apply_rope, rope_cache
from cleanroom.train.trainer import (
    checkpoint_key,
    dist_info,
    evaluate,
    load_checkpoint,
    lr_at,
    optimizer_for,
    save_state,
    set_lr,
    train_optimizer,
)
from cleanroom.ui import progress, say


class Linears(nn.Module):
    """N bias-free linear layers of one shape: weight [N, out, in]; x [N, M, in] -> [N, M, out] in one bmm."""

    def __init__(self, n: int, d_in: int, d_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n, d_out, d_in))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.bmm(x, self.weight.transpose(1, 2))


class Norms(nn.Module):
    """N RMSNorms: `model.RMSNorm`'s op order (normalise in fp32, cast back, then scale), gains [N, D]."""

    def __init__(self, n: int, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(n, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [N, M, D]
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight[:, None, :] * xf.to(x.dtype)


class Attention(nn.Module):
    def __init__(self, n: int, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.n_kv_heads = cfg.n_heads, cfg.n_kv_heads
        self.head_dim = hd = cfg.d_model // cfg.n_heads
        self.q_proj = Linears(n, cfg.d_model, cfg.n_heads * hd)
        self.k_proj = Linears(n, cfg.d_model, cfg.n_kv_heads * hd)
        self.v_proj = Linears(n, cfg.d_model, cfg.n_kv_heads * hd)
        self.o_proj = Linears(n, cfg.n_heads * hd, cfg.d_model)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, B: int, T: int) -> torch.Tensor:
        N = x.shape[0]  # x: [N, B*T, D]; attention runs over N*B independent sequences
        q = self.q_proj(x).view(N * B, T, self.n_heads, self.head_dim).transpose(1, 2)  # [N*B, H, T, hd]
        k = self.k_proj(x).view(N * B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(N * B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)  # in fp32 under autocast, as `model.Attention`
        if self.n_kv_heads != self.n_heads:
            r = self.n_heads // self.n_kv_heads
            k, v = k.repeat_interleave(r, dim=1), v.repeat_interleave(r, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o_proj(y.transpose(1, 2).reshape(N, B * T, self.n_heads * self.head_dim))


class MLP(nn.Module):
    def __init__(self, n: int, cfg: ModelConfig):
        super().__init__()
        self.gate_proj = Linears(n, cfg.d_model, cfg.ffn_hidden)
        self.up_proj = Linears(n, cfg.d_model, cfg.ffn_hidden)
        self.down_proj = Linears(n, cfg.ffn_hidden, cfg.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, n: int, cfg: ModelConfig):
        super().__init__()
        self.input_layernorm = Norms(n, cfg.d_model, cfg.norm_eps)
        self.self_attn = Attention(n, cfg)
        self.post_attention_layernorm = Norms(n, cfg.d_model, cfg.norm_eps)
        self.mlp = MLP(n, cfg)

    def forward(self, x, cos, sin, B: int, T: int):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, B, T)
        return x + self.mlp(self.post_attention_layernorm(x))


class Embeddings(nn.Module):
    """N embedding tables [N, V, D]; model n's token t is row n * V + t of the flattened table."""

    def __init__(self, n: int, vocab_size: int, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n, vocab_size, dim))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:  # idx: [N, M] -> [N, M, D]
        N, V, D = self.weight.shape
        offsets = torch.arange(N, device=idx.device)[:, None] * V
        return F.embedding(idx + offsets, self.weight.view(N * V, D))


class BatchedTransformer(nn.Module):
    """`len(seeds)` Transformers of one config; model n is initialised as `Transformer(cfg, V, seed=seeds[n])`."""

    def __init__(self, cfg: ModelConfig, vocab_size: int, seeds: list[int]):
        super().__init__()
        n = len(seeds)
        if n < 1:
            raise ValueError("a batched model needs at least one seed")
        self.cfg, self.vocab_size, self.n = cfg, vocab_size, n
        self.embed_tokens = Embeddings(n, vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(Block(n, cfg) for _ in range(cfg.n_layers))
        self.norm = Norms(n, cfg.d_model, cfg.norm_eps)
        self.lm_head = Linears(n, cfg.d_model, vocab_size)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        cos, sin = rope_cache(cfg.d_model // cfg.n_heads, cfg.seq_len, cfg.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        with torch.no_grad():  # the single model's init, from its own generator: same weights as alone
            for i, seed in enumerate(seeds):
                self.load_model(i, Transformer(cfg, vocab_size, seed=seed).state_dict())

    # ------------------------------------------------------------ one model in, one model out

    def load_model(self, i: int, state: dict[str, torch.Tensor]) -> None:
        """Copy a `Transformer` state dict into model slot `i`."""
        own = self.state_dict(keep_vars=True)
        if set(own) != set(state):
            raise ValueError(f"state dict keys differ from the batched model's: {sorted(set(own) ^ set(state))[:4]}")
        with torch.no_grad():
            for name, p in own.items():
                p[i].copy_(state[name])

    def model_state(self, i: int) -> dict[str, torch.Tensor]:
        """Model `i`'s weights as a `Transformer` state dict (copies; tied weights stay one tensor)."""
        out, seen = {}, {}
        for name, p in self.state_dict(keep_vars=True).items():
            key = id(p)
            if key not in seen:
                seen[key] = p.detach()[i].clone()
            out[name] = seen[key]
        return out

    def single(self, i: int) -> Transformer:
        """Model `i` as a `Transformer` (for evaluation and export)."""
        # seed=0: a private generator for the throwaway init, so the global RNG is left alone
        model = Transformer(self.cfg, self.vocab_size, seed=0).to(self.rope_cos.device)
        model.load_state_dict(self.model_state(i))
        return model

    # ------------------------------------------------------------ forward

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """idx, targets: [N, B, T]. Returns the N models' mean cross-entropy losses, [N] (fp32).

        Each model's loss is its own `F.cross_entropy` call over its own logits, as in `Transformer.forward`
        (the same reduction, so the same rounding); their sum's gradient is each model's own gradient.
        """
        N, B, T = idx.shape
        if N != self.n:
            raise ValueError(f"got batches for {N} models, the batched model holds {self.n}")
        cos, sin = self.rope_cos[:T], self.rope_sin[:T]
        x = self.embed_tokens(idx.reshape(N, B * T))
        for layer in self.layers:
            x = layer(x, cos, sin, B, T)
        with torch.autocast(x.device.type, enabled=False):  # fp32 logits, as `Transformer.head`
            logits = self.lm_head(self.norm(x).float())  # [N, B*T, V]
        # unbind, not logits[i]: indexing's backward would zero-fill a full [N, B*T, V] gradient per model
        return torch.stack([F.cross_entropy(lg.float(), tg.reshape(-1), ignore_index=IGNORE_INDEX)
                            for lg, tg in zip(logits.unbind(0), targets.unbind(0), strict=True)])

    def num_params(self) -> int:
        """Parameters of one model (tied weights counted once)."""
        return sum(p[0].numel() for p in self.parameters())

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs per token of one model (see `Transformer.flops_per_token`)."""
        return Transformer(self.cfg, self.vocab_size, seed=0).flops_per_token(seq_len)


def make_optimizer(model: BatchedTransformer, lr: float, weight_decay: float,
                   betas: tuple[float, float] = (0.9, 0.95), muon_lr: float | None = None) -> torch.optim.AdamW:
    """`trainer.make_optimizer` for N models: the same groups, in the same parameter order, so that
    model i's slice of the state is exactly the state its own optimizer would hold. What is a matrix is
    decided per model: the norm gains' stacked shape [N, D] is 2-d too, and gets no decay."""
    return optimizer_for(list(model.named_parameters()), lr, weight_decay, betas, muon_lr, lead=1)


@torch.no_grad()
def clip_grad_norms_(params: list[torch.Tensor], max_norm: float, n: int) -> torch.Tensor:
    """`torch.nn.utils.clip_grad_norm_` for each of the `n` models on its own: model i's gradients are
    scaled by max_norm / (its total norm + 1e-6), clamped at 1. Returns the n total norms.

    The norms are computed slice by slice (`_foreach_norm` over every model's slice of every gradient, the
    per-tensor norms clip_grad_norm_ computes for one model), so each model's norm, and hence its clip
    coefficient, is rounded exactly as when it trains alone."""
    grads = [p.grad for p in params if p.grad is not None]
    norms = torch._foreach_norm([g[i] for i in range(n) for g in grads])
    totals = torch.stack([torch.linalg.vector_norm(torch.stack(norms[i * len(grads):(i + 1) * len(grads)]))
                          for i in range(n)])
    coef = torch.clamp(max_norm / (totals + 1e-6), max=1.0)
    for g in grads:
        g.mul_(coef.view(n, *([1] * (g.dim() - 1))))
    return totals


def split_optimizer_state(state: dict, n: int) -> list[dict]:
    """The batched optimizer's state dict as n single-model ones (shared scalars such as `step` copied)."""
    return [{"state": {k: {name: (v.clone() if v.dim() == 0 else v[i].clone()) for name, v in st.items()}
                       for k, st in state["state"].items()},
             "param_groups": copy.deepcopy(state["param_groups"])} for i in range(n)]


def stack_optimizer_states(states: list[dict]) -> dict:
    """n single-model optimizer state dicts (same step) as one for the batched optimizer."""
    first = states[0]
    out: dict = {"state": {}, "param_groups": first["param_groups"]}
    for k, st in first["state"].items():
        out["state"][k] = {}
        for name, v in st.items():
            if v.dim() == 0:
                if any(not torch.equal(s["state"][k][name], v) for s in states):
                    raise ValueError(f"optimizer states disagree on `{name}`: they cannot resume together")
                out["state"][k][name] = v
            else:
                out["state"][k][name] = torch.stack([s["state"][k][name] for s in states])
    return out


# ---------------------------------------------------------------- the trainer


@dataclass(frozen=True)
class Member:
    """One model of a batched run. `name` names its outputs (`models/<name>`, `logs/train/<name>.jsonl`,
    `checkpoints/<name>/`); `tokens` is the recipe whose token files it trains on; `seed` sets its init
    and data order. A recipe's model is Member(recipe, recipe, cfg.seed); a null control of that recipe
    is another name on the same tokens with another seed (`recipe_members`)."""

    name: str
    tokens: str
    seed: int


@dataclass
class _Run:
    """What one member needs while it trains."""

    member: Member
    meta: dict
    batches: TrainBatches
    val: list
    key: str
    state: dict | None
    start: int
    log: TrainLog | None = None
    recent: list[float] = field(default_factory=list)
    last_val: float = float("nan")


def stack_batches(batches: list[TrainBatches], step: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each model's own batch for `step` (its data order, as when it trains alone), stacked: [N, B, T]."""
    xs, ys = zip(*(b.batch(step, 0, 1, batch_size) for b in batches), strict=True)
    return torch.stack(xs), torch.stack(ys)


def train_step(net: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, lr: float,
               grad_clip: float, dtype: str) -> list[float]:
    """One optimizer step of every model in `net` (a BatchedTransformer, maybe compiled); their losses."""
    set_lr(opt, lr)
    with autocast(x.device, dtype):
        losses = net(x, y)
    losses.sum().backward()  # model i's gradient is that of losses[i] alone
    if grad_clip > 0:
        # the module's parameter order, as clip_grad_norm_ sees it for one model: it sets the norm's rounding
        clip_grad_norms_(list(net.parameters()), grad_clip, len(losses))
    opt.step()
    opt.zero_grad(set_to_none=True)
    return losses.detach().tolist()


def recipe_members(cfg: ExperimentConfig, recipes: list[str]) -> list[Member]:
    """The members the single trainer would train for `recipes` (a replicate `R~k`: R's tokens, its own
    seed)."""
    return [Member(r, base_recipe(r), train_seed(cfg.seed, r)) for r in recipes]


def train_batched(cfg: ExperimentConfig, store: RunStore, members: list[Member],
                  stop_after: int | None = None) -> dict[str, dict]:
    """Train (or resume) `members` together; export each model; return each one's stats by name.

    Every model keeps its own init, data, optimizer state, grad clipping, log, checkpoint and export,
    in the single-model trainer's formats (a checkpoint written here resumes in `trainer.train_model`
    and the other way round). One batched step advances every model by one step, so members whose
    checkpoints stand at different steps train in groups, one per start step, one group after the other.
    """
    if dist_info()[2] > 1:
        raise StoreError("batched training runs in one process; under torchrun each recipe trains on its own")
    names = [m.name for m in members]
    if len(set(names)) != len(names):
        raise ValueError(f"batched members need distinct names, got {names}")
    device = pick_device(cfg.runtime)
    dtype = resolve_dtype(device, cfg.train.dtype)
    runs = [_open(cfg, store, m, device) for m in members]
    vocab = {r.meta["vocab_size"] for r in runs}
    if len(vocab) > 1:
        raise StoreError(f"models trained together need one tokenizer; vocab sizes differ: {sorted(vocab)}")
    stats: dict[str, dict] = {}
    for start in sorted({r.start for r in runs}):
        group = [r for r in runs if r.start == start]
        stats.update(_train_group(cfg, store, group, start, device, dtype, stop_after))
    return stats


def _open(cfg: ExperimentConfig, store: RunStore, m: Member, device: torch.device) -> _Run:
    tokens_dir = store.path("tokens")
    meta_path = tokens_dir / f"{m.tokens}.json"
    if not meta_path.exists():
        raise StoreError(f"no token files for recipe `{m.tokens}` (run `cleanroom tokenize` first)")
    meta = json.loads(meta_path.read_text())
    T, tcfg = cfg.model.seq_len, cfg.train
    batches = TrainBatches(open_tokens(tokens_dir, m.tokens, "train"), T, m.seed)
    val = val_batches(open_tokens(tokens_dir, m.tokens, "val"), T, tcfg.batch_size, tcfg.eval_batches)
    # the single trainer's key for the models it trains (every recipe's replicates), so their
    # checkpoints resume in either trainer; any other seed keys its own checkpoints
    own = m.seed == train_seed(cfg.seed, m.name)
    key = checkpoint_key(cfg if own else cfg.model_copy(update={"seed": m.seed}), meta)
    state = load_checkpoint(store.path(f"checkpoints/{m.name}/last.pt"), key, device)
    return _Run(m, meta, batches, val, key, state, int(state["step"]) if state else 0)


def _train_group(cfg: ExperimentConfig, store: RunStore, runs: list[_Run], start: int, device: torch.device,
                 dtype: str, stop_after: int | None) -> dict[str, dict]:
    tcfg, mcfg = cfg.train, cfg.model
    n = len(runs)
    model = BatchedTransformer(mcfg, runs[0].meta["vocab_size"], [r.member.seed for r in runs]).to(device)
    opt = train_optimizer(model, tcfg, lead=1)
    if start:
        for i, r in enumerate(runs):
            model.load_model(i, r.state["model"])
        opt.load_state_dict(stack_optimizer_states([r.state["optimizer"] for r in runs]))
        say(f"  resuming {', '.join(f'`{r.member.name}`' for r in runs)} from step {start}")
    for r in runs:
        r.state = None  # free the loaded tensors
    net: torch.nn.Module = torch.compile(model) if cfg.runtime.compile else model
    B, T = tcfg.batch_size, mcfg.seq_len
    tokens_per_step = B * T
    train_seconds, t_start, done = 0.0, time.perf_counter(), start
    label = "+".join(r.member.name for r in runs)
    try:
        for r in runs:
            r.log = TrainLog(store, r.member.name, start, cfg.runtime.tensorboard)
        with progress(f"train {label}", total=tcfg.steps) as task:
            task.set(completed=start)
            for step in range(start, tcfg.steps):
                check_cancelled()
                t0 = time.perf_counter()
                lr = lr_at(step, tcfg)
                x, y = stack_batches([r.batches for r in runs], step, B)
                loss_list = train_step(net, opt, x.to(device), y.to(device), lr, tcfg.grad_clip, dtype)
                dt = time.perf_counter() - t0
                train_seconds += dt
                done = step + 1
                evaluating = done % tcfg.eval_every == 0 or done == tcfg.steps
                for i, r in enumerate(runs):
                    r.recent = (r.recent + [loss_list[i]])[-20:]
                    row = {"step": done, "loss": round(loss_list[i], 5), "lr": lr, "tokens": done * tokens_per_step,
                           "tokens_per_s": round(tokens_per_step / dt, 1)}
                    if evaluating:
                        r.last_val = evaluate(model.single(i), r.val, device, dtype)
                        row["val_loss"] = round(r.last_val, 5)
                    r.log.write(row)
                if done % tcfg.ckpt_every == 0 and done < tcfg.steps:
                    opt_states = split_optimizer_state(opt.state_dict(), n)
                    for i, r in enumerate(runs):
                        save_state(store.path(f"checkpoints/{r.member.name}/last.pt"), model.model_state(i),
                                   opt_states[i], done, r.key, {"recipe": r.member.name, "batched_with": n})
                tps = (done - start) * tokens_per_step * n / train_seconds
                task.advance(1, info=f"loss {np.mean(loss_list):.3f} · {n} models · {tps / 1e3:.1f}k tok/s")
                if stop_after is not None and done >= stop_after:
                    break
    finally:
        for r in runs:
            if r.log is not None:
                r.log.close()
    seconds = time.perf_counter() - t_start
    stats = {}
    for i, r in enumerate(runs):
        m = r.member
        stats[m.name] = {
            "final_train_loss": round(sum(r.recent) / max(1, len(r.recent)), 5),
            "final_val_loss": round(r.last_val, 5),
            "tokens_seen": done * tokens_per_step,
            "epochs": round(r.batches.epoch_of(done, 1, B), 3),
            "steps": done,
            "resumed_from_step": start,
            "seconds": round(seconds, 2),
            "tokens_per_s": round((done - start) * tokens_per_step / max(train_seconds, 1e-9), 1),
            "params": model.num_params(),
            "device": device.type,
            "dtype": dtype,
            "world_size": 1,
            "batched_models": n,
            "seed": m.seed,
        }
        if done >= tcfg.steps:
            export_hf(model.single(i), cfg, store.path("tokenizer.json"), store.path(f"models/{m.name}"))
            store.path(f"checkpoints/{m.name}/last.pt").unlink(missing_ok=True)
    return stats
