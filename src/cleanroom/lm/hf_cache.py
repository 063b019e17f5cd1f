"""A transformers KV cache whose full-attention layers write into room reserved up front.

transformers' `DynamicLayer` concatenates each step's keys and values onto the cache, copying all of it
every step: at batch 32 and a few hundred positions that copy moves as many bytes as the weights do.
`ReservedLayer` writes into a preallocated buffer (doubling when full, so the copies are amortised) and
exposes the filled part as views; dropping finished rows (`batch_select_indices`) is one gather.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


class ReservedLayer(DynamicLayer):
    """A full-attention layer of the cache (module doc); `keys` / `values` are views of the filled part."""

    def __init__(self, room: int):
        super().__init__()
        self.room, self.n = max(1, room), 0

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        B, H, _, D = key_states.shape
        self.device, self.is_initialized = key_states.device, True
        self.k = key_states.new_empty(B, H, self.room, D)
        self.v = value_states.new_empty(B, H, self.room, value_states.shape[-1])
        self.keys, self.values = self.k[:, :, :0], self.v[:, :, :0]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        t = key_states.shape[-2]
        if self.n + t > self.k.shape[-2]:  # out of room: double it
            grow = max(self.n + t, 2 * self.k.shape[-2]) - self.k.shape[-2]
            self.k = torch.cat([self.k, self.k.new_empty(*self.k.shape[:2], grow, self.k.shape[-1])], 2)
            self.v = torch.cat([self.v, self.v.new_empty(*self.v.shape[:2], grow, self.v.shape[-1])], 2)
        self.k[:, :, self.n:self.n + t] = key_states
        self.v[:, :, self.n:self.n + t] = value_states
        self.n += t
        self.keys, self.values = self.k[:, :, :self.n], self.v[:, :, :self.n]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.n

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.is_initialized:
            self.k, self.v = self.k[indices], self.v[indices]
            self.keys, self.values = self.k[:, :, :self.n], self.v[:, :, :self.n]

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError("a reserved cache layer is never cropped")


def reserved_cache(model: Any, room: int) -> DynamicCache:
    """The model's `DynamicCache` with its full-attention layers swapped for `ReservedLayer(room)` (other
    layer kinds, e.g. sliding windows, stay as transformers makes them)."""
    cache = DynamicCache(config=model.config)
    cache.layers = [ReservedLayer(room) if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache
