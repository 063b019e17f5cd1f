"""Shared fixtures: one smoke world + corpora, and one whole smoke run, per test session (built once, read
by many tests; a test that changes a run works on a copy)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cleanroom.config import load_config
from cleanroom.pipeline import Pipeline
from cleanroom.store import RunStore

# fixtures that make a test end to end: a whole `cleanroom run` in a subprocess, a Ray instance
E2E_FIXTURES = {"smoke_run", "ray_local"}


def pytest_collection_modifyitems(config, items):
    """Every test that uses an end-to-end fixture carries the `e2e` marker (`make test` runs them all;
    `pytest -m 'not e2e'` is the quick loop)."""
    unmarked = [it.nodeid for it in items
                if E2E_FIXTURES & set(getattr(it, "fixturenames", ())) and it.get_closest_marker("e2e") is None]
    if unmarked:
        raise pytest.UsageError("end-to-end tests without the `e2e` marker: " + ", ".join(unmarked))


@pytest.fixture(scope="session")
def smoke_cfg():
    return load_config("smoke")


@pytest.fixture(scope="session")
def smoke_corpora(tmp_path_factory, smoke_cfg):
    """A smoke run directory with the world and the generated corpora."""
    store = RunStore(tmp_path_factory.mktemp("smoke_corpora"))
    Pipeline(smoke_cfg, store).ensure("generate")
    return store


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory) -> Path:
    """One uninterrupted `cleanroom run --preset smoke` (test_run.py, test_faults.py)."""
    out = tmp_path_factory.mktemp("smoke_run")
    r = subprocess.run([sys.executable, "-m", "cleanroom.cli", "run", "--preset", "smoke", "--out", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return out
