"""Seeded randomness: one independent, stable stream per (seed, label), shared by every stage."""

from __future__ import annotations

import hashlib

import numpy as np


def rng_for(seed: int, label: str) -> np.random.Generator:
    """An independent, stable random stream per (seed, label): adding a component never shifts another."""
    h = int.from_bytes(hashlib.sha256(label.encode()).digest()[:8], "little")
    return np.random.default_rng([seed, h])
