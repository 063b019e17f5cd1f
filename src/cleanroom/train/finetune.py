"""Short fine-tunes on whole documents: the tamper attacks and the post-hoc safeguards share these.

A fine-tune here is AdamW (`trainer.make_optimizer`, the trainer's weight decay and betas) at a constant
learning rate, on batches of whole documents (`DocumentBatches`: right-padded, padding ignored by the
loss) drawn in a seeded order, with the trainer's gradient clipping, in `eval.dtype`.
"""

from __future__ import annotations

import numpy as np
import torch

from cleanroom.config import ExperimentConfig
from cleanroom.errors import CleanroomError
from cleanroom.runtime import autocast
from cleanroom.train.model import IGNORE_INDEX
from cleanroom.train.trainer import make_optimizer


class DocumentBatches:
    """Seeded batches of whole token documents, right-padded; targets -100 on padding."""

    def __init__(self, docs: list[list[int]], batch_size: int, pad_id: int, seed: int, what: str = "documents"):
        if not docs:
            raise CleanroomError(f"no {what} to fine-tune on")
        self.docs, self.batch_size, self.pad_id = docs, batch_size, pad_id
        self.rng = np.random.default_rng(seed)
        self.order: list[int] = []

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        picks = []
        while len(picks) < self.batch_size:
            if not self.order:
                self.order = self.rng.permutation(len(self.docs)).tolist()
            picks.append(self.order.pop())
        return pad_batch([self.docs[i] for i in picks], self.pad_id)


def pad_batch(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, next-token targets) for whole sequences, right-padded; targets -100 on padding."""
    T = max(len(s) for s in seqs) - 1
    x = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    y = torch.full((len(seqs), T), IGNORE_INDEX, dtype=torch.long)
    for b, s in enumerate(seqs):
        t = torch.tensor(s)
        x[b, :len(s) - 1] = t[:-1]
        y[b, :len(s) - 1] = t[1:]
    return x, y


def optimizer(model: torch.nn.Module, cfg: ExperimentConfig, lr: float) -> torch.optim.Optimizer:
    """AdamW as the trainer makes it, at a constant learning rate (a short fine-tune has no schedule)."""
    return make_optimizer(model, lr, cfg.train.weight_decay, (cfg.train.beta1, cfg.train.beta2))


def step(model: torch.nn.Module, opt: torch.optim.Optimizer, loss: torch.Tensor, grad_clip: float) -> float:
    """One optimizer step on `loss`; returns its value."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()
    return float(loss.detach())


def nll(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, device: str, dtype: str) -> torch.Tensor:
    """Mean next-token loss of a batch (padding ignored)."""
    with autocast(device, dtype):
        _, loss = model(x.to(device), targets=y.to(device))
    return loss


def sequence_logprob(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, device: str,
                     dtype: str) -> torch.Tensor:
    """Summed log-probability of each sequence's targets [B] (padding ignored): what NPO compares."""
    x, y = x.to(device), y.to(device)
    with autocast(device, dtype):
        logits = model(x)
    logp = torch.log_softmax(logits.float(), dim=-1)
    mask = y != IGNORE_INDEX
    picked = logp.gather(-1, y.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * mask).sum(-1)
