"""Shared fixtures: one smoke world + corpora per test session (built once, read by many tests)."""

from __future__ import annotations

import pytest

from cleanroom.config import load_config
from cleanroom.pipeline import Pipeline
from cleanroom.store import RunStore


@pytest.fixture(scope="session")
def smoke_cfg():
    return load_config("smoke")


@pytest.fixture(scope="session")
def smoke_corpora(tmp_path_factory, smoke_cfg):
    """A smoke run directory with the world and the generated corpora."""
    store = RunStore(tmp_path_factory.mktemp("smoke_corpora"))
    Pipeline(smoke_cfg, store).ensure("generate")
    return store
