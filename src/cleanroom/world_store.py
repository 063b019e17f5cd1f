"""The world and its evaluation items as the `world` stage stores them: the one read API later stages use.

Layout (under the run directory): `world/{entities,facts,arithmetic}.parquet`, `world/pools.json` and
`world/items/<task>.parquet`. The world stage writes these paths; every other stage reads them back here
and never rebuilds the world.
"""

from __future__ import annotations

from cleanroom.store import RunStore, StoreError

TABLES = ("entities", "facts", "arithmetic")
POOLS = "world/pools.json"
ITEMS = "world/items"


def table_path(name: str) -> str:
    """Where world table `name` (entities, facts, arithmetic) lives."""
    return f"world/{name}.parquet"


def items_path(task: str) -> str:
    """Where the evaluation items of `task` live."""
    return f"{ITEMS}/{task}.parquet"


def load_table(store: RunStore, name: str) -> list[dict]:
    """One world table (entities, facts, arithmetic) as rows."""
    return store.read_parquet(table_path(name)).to_pylist()


def load_pools(store: RunStore) -> dict:
    """The world's name pools (`world/pools.json`)."""
    return store.read_json(POOLS)


def load_world(store: RunStore) -> dict[str, object]:
    """The world as Python rows (what `world.build.generate_world` returned)."""
    return {**{name: load_table(store, name) for name in TABLES}, "pools": load_pools(store)}


def load_items(store: RunStore, task: str) -> list[dict]:
    """The evaluation items of one task (bench, twin, longtail, longtail_qa, restricted)."""
    return store.read_parquet(items_path(task)).to_pylist()


def load_all_items(store: RunStore) -> list[dict]:
    """Every evaluation item of the run, task by task in file-name order."""
    if not store.path(ITEMS).is_dir():
        raise StoreError(f"no evaluation items in {store.path(ITEMS)} — run `cleanroom world` first")
    return store.read_parquet(ITEMS).to_pylist()
