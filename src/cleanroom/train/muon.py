"""Muon (Keller Jordan's, as in modded-nanogpt) on the hidden matrices, AdamW on everything else.

    opt = Muon(groups, lr=3e-3, betas=(0.9, 0.95))      # groups from `trainer.make_optimizer(..., muon_lr=)`
    for g in opt.param_groups: g["lr"] = lr * g["lr_scale"]   # `trainer.set_lr`: one schedule, two lrs

Muon = SGD with Nesterov momentum whose update matrix is replaced by its nearest (semi-)orthogonal
matrix, U V^T of the update's SVD U S V^T: every direction the momentum points in moves by the same
amount, instead of the few dominant directions getting almost all of the step (a gradient of a
transformer's hidden matrix is close to low rank). The orthogonalisation is five Newton-Schulz steps of
a quintic whose coefficients push every singular value in (0, 1] towards ~1 quickly (they end in
roughly [0.7, 1.2], which is all the update needs), cheaper than an SVD and all GEMMs.

Why it is here: time to a validation loss is steps times seconds per step, and Muon cuts the steps.
Only 2-d hidden matrices (attention and MLP projections) get it: the embedding (tied to the head) is a
lookup table whose rows see sparse gradients, and the norm gains are vectors; both stay on AdamW at
`train.lr`, as in modded-nanogpt.

Shapes: a parameter may carry leading dimensions ([N, out, in] in the batched trainer: N models
stacked). Everything here (momentum, the per-matrix norm, the Newton-Schulz GEMMs) works on the last two
dimensions, so model n's update is the one it gets alone, and one batched GEMM orthogonalises all N.

Differences from modded-nanogpt's, for a 2-core CPU: Newton-Schulz runs in fp32, not bf16 (without
AVX512-BF16 a bf16 GEMM is many times slower than fp32 here); no momentum warmup; no weight decay on the
Muon matrices (the speedrun's Muon had none; the runs here are a few hundred steps). The update is scaled
by sqrt(max(1, out / in)), Keller's shape factor, so a tall matrix (MLP up) moves as much per entry as a
square one.
"""

from __future__ import annotations

import torch
from torch.optim.adam import adam

# the quintic's coefficients (Keller Jordan): maximise the slope at 0, so that small singular values grow
# fast, at the price of not converging exactly to 1 (it oscillates in ~[0.7, 1.2])
NS_COEFFS = (3.4445, -4.7750, 2.0315)


def newton_schulz(G: torch.Tensor, steps: int = 5, eps: float = 1e-7) -> torch.Tensor:
    """The (approximately) orthogonal factor of each matrix in G [..., m, n]: U V^T of G = U S V^T."""
    a, b, c = NS_COEFFS
    X = G.float()
    tall = X.size(-2) > X.size(-1)
    if tall:  # iterate on the wide side: X X^T is then the smaller square
        X = X.mT
    X = X / (X.norm(dim=(-2, -1), keepdim=True) + eps)  # Frobenius norm >= spectral norm: singular values <= 1
    for _ in range(steps):
        A = X @ X.mT
        X = a * X + (b * A + c * A @ A) @ X
    return X.mT if tall else X


class Muon(torch.optim.AdamW):
    """AdamW whose groups marked `muon: True` take Muon steps instead (see the module docstring).

    One optimizer, one state dict (a Muon matrix's state is its `momentum_buffer` and a `step`), so checkpoints,
    resuming and the batched trainer's per-model split of the state work as for AdamW. Muon groups carry
    `lr_scale` = muon_lr / lr: the trainer sets every group's lr from one schedule (`trainer.set_lr`)."""

    def __init__(self, groups: list[dict], lr: float, betas: tuple[float, float], momentum: float = 0.95,
                 ns_steps: int = 5, fused: bool | None = None):
        super().__init__(groups, lr=lr, betas=betas, fused=fused)
        self.momentum, self.ns_steps = momentum, ns_steps

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            if group.get("muon"):
                self._muon_step(group)
            else:
                self._adamw_step(group)

    def _muon_step(self, group: dict) -> None:
        beta = self.momentum
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self.state[p]
            if "momentum_buffer" not in state:
                # `step` only counts, but AdamW's state loading expects it in every parameter's state
                state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
                state["momentum_buffer"] = torch.zeros_like(p)
            state["step"] += 1
            buf = state["momentum_buffer"]
            buf.lerp_(p.grad, 1 - beta)
            update = p.grad.lerp(buf, beta)  # Nesterov: look one momentum step ahead
            update = newton_schulz(update, self.ns_steps)
            scale = max(1.0, p.size(-2) / p.size(-1)) ** 0.5
            p.add_(update.to(p.dtype), alpha=-group["lr"] * scale)

    def _adamw_step(self, group: dict) -> None:
        """torch.optim.AdamW's step for one group (its own state init and kernel: fused where available)."""
        params, grads, exp_avgs, exp_avg_sqs, max_sqs, steps = [], [], [], [], [], []
        has_complex = self._init_group(group, params, grads, exp_avgs, exp_avg_sqs, max_sqs, steps)
        beta1, beta2 = group["betas"]
        adam(params, grads, exp_avgs, exp_avg_sqs, max_sqs, steps, amsgrad=group["amsgrad"],
             has_complex=has_complex, beta1=beta1, beta2=beta2, lr=group["lr"],
             weight_decay=group["weight_decay"], eps=group["eps"], maximize=group["maximize"],
             foreach=group["foreach"], capturable=group["capturable"], differentiable=group["differentiable"],
             fused=group["fused"], grad_scale=None, found_inf=None,
             decoupled_weight_decay=group["decoupled_weight_decay"])


def is_hidden_matrix(name: str, p: torch.Tensor, lead: int = 0) -> bool:
    """Muon's parameters: the blocks' projection matrices (2-d per model; `lead` stacked dimensions)."""
    return name.startswith("layers.") and p.dim() - lead == 2
