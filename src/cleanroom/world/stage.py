"""The `world` stage: the world and its evaluation items from one seed.

Outputs (`world/`, laid out by `cleanroom.world_store`, which later stages read them through):
`entities.parquet`, `facts.parquet`, `arithmetic.parquet`, `pools.json`, and
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
from cleanroom.world_store import POOLS, TABLES, items_path, table_path


def run_world(cfg: ExperimentConfig, store: RunStore) -> StageResult:
    world = generate_world(cfg)
    items = build_items(cfg, world)
    for name in TABLES:
        store.write_parquet(table_path(name), pa.Table.from_pylist(world[name]))
    store.write_text(POOLS, json.dumps(world["pools"], indent=1, sort_keys=True) + "\n")
    for task, rows in items.items():
        store.write_parquet(items_path(task), pa.Table.from_pylist(rows, schema=ITEM_SCHEMA))
    counts: dict[str, int] = {}
    for e in world["entities"]:
        counts[e["type"]] = counts.get(e["type"], 0) + 1
    stats = {"entities": counts, "facts": len(world["facts"]), "arithmetic": len(world["arithmetic"]),
             "items": {t: len(r) for t, r in items.items()}}
    return StageResult(outputs=["world"], stats=stats)
