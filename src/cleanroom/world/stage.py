"""The `world` stage: the world and its evaluation items from one seed, and reading them back.

Outputs (`world/`): `entities.parquet`, `facts.parquet`, `arithmetic.parquet`, `pools.json`, and
`items/{bench,twin,longtail,longtail_qa,restricted}.parquet`. Same seed -> byte-identical files.
"""

from __future__ import annotations

import json

import pyarrow as pa

from cleanroom.config import ExperimentConfig
from cleanroom.contract import StageResult
from cleanroom.store import RunStore
from cleanroom.world.build import generate_world
from cleanroom.world.items import ITEM_SCHEMA, build_items


def run_world(cfg: ExperimentConfig, store: RunStore) -> StageResult:
    world = generate_world(cfg)
    items = build_items(cfg, world)
    store.write_parquet("world/entities.parquet", pa.Table.from_pylist(world["entities"]))
    store.write_parquet("world/facts.parquet", pa.Table.from_pylist(world["facts"]))
    store.write_parquet("world/arithmetic.parquet", pa.Table.from_pylist(world["arithmetic"]))
    store.write_text("world/pools.json", json.dumps(world["pools"], indent=1, sort_keys=True) + "\n")
    for task, rows in items.items():
        store.write_parquet(f"world/items/{task}.parquet", pa.Table.from_pylist(rows, schema=ITEM_SCHEMA))
    counts: dict[str, int] = {}
    for e in world["entities"]:
        counts[e["type"]] = counts.get(e["type"], 0) + 1
    stats = {"entities": counts, "facts": len(world["facts"]), "arithmetic": len(world["arithmetic"]),
             "items": {t: len(r) for t, r in items.items()}}
    return StageResult(outputs=["world"], stats=stats)


def load_world(store: RunStore) -> dict[str, object]:
    """The world as Python rows (what `generate_world` returned), read back from the store."""
    return {
        "entities": store.read_parquet("world/entities.parquet").to_pylist(),
        "facts": store.read_parquet("world/facts.parquet").to_pylist(),
        "arithmetic": store.read_parquet("world/arithmetic.parquet").to_pylist(),
        "pools": store.read_json("world/pools.json"),
    }


def load_items(store: RunStore, task: str) -> list[dict]:
    return store.read_parquet(f"world/items/{task}.parquet").to_pylist()
