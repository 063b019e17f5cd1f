"""Curation on Ray: the local executor's steps and output, with the per-document work spread over a cluster.

Why the steps cannot simply run shard by shard (what `LocalExecutor.run(docs, rank, world_size)` does
for one worker): three of them carry state across documents. Exact and near dedup keep the *first*
copy in corpus order, so a document's fate depends on every document before it, in any shard; the
safety classifier is cross-fitted on every document that reaches it. Run per shard, they would keep
duplicates that straddle two shards and fit one classifier per shard: a different corpus.

So each step's work is split the way datatrove splits dedup (signatures per shard in parallel, then one
stage that finds the duplicates), using what each step declares (`curate/base.py`):

1. **map**, one Ray task per contiguous shard of the input (`map_shard(steps, docs, rank, world_size)`):
   everything that is a function of one document alone: its size in word units, the dedup features
   (`features(batch)`: the normalised-text hash, the MinHash signature), and the verdicts of the
   stateless steps (quality, decontamination) with their side records (leaks).
2. **reduce**, on the driver, in corpus order: the local executor itself, over the same document stream
   in the same batches, with each step replaced by a replay that looks up what the map computed: dedup
   runs its order-dependent `decide` on the precomputed features, stateless steps return their
   precomputed verdicts, and a step with neither (the safety filter) runs whole and two-pass, as locally.

The reduce *is* the local chain, so kept documents, lineage rows (and their order), step statistics and
the safety metrics equal the local executor's exactly; `tests/test_ray.py` checks it (byte-identical
curated shards) on the smoke corpora. What it costs: the map judges every document for every stateless
step, also those dedup will remove (the local chain never looks at them); the driver holds the corpus in
memory, as the local executor does; the reduce is look-ups, the LSH index and the safety fit. Workers
import cleanroom: on a cluster of several machines install it on every node (or ship it in a Ray
`runtime_env`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from cleanroom.curate.base import Document, Removal, Step, batched
from cleanroom.curate.executor import LocalExecutor, RunResult
from cleanroom.ray_cluster import cluster_cpus, ray_session

MIN_SHARD_DOCS = 512  # smaller shards cost more in task overhead than they save


def mappable(step: Step) -> bool:
    """Can part of this step's work run on shards (see the module docstring)?"""
    return step.stateless or hasattr(step, "features")


def map_shard(steps: list[Step | None], docs: list[Document], rank: int, world_size: int) -> dict[str, Any]:
    """The per-document part of every step for shard `rank` of `world_size` (None: a step left to the reduce).

    Returns {"rank", "tokens": [word units per doc], "steps": [per step: one entry per doc, or None]}; an
    entry is (verdict, side records) for a stateless step and the step's feature for a dedup step.
    """
    per_step: list[list[Any] | None] = []
    for step in steps:
        if step is None:
            per_step.append(None)
        elif step.stateless:
            entries: list[Any] = []
            for batch in batched(docs, step.batch_size):
                verdicts, records = step.judge_with_records(batch)
                entries += zip(verdicts, records, strict=True)
            per_step.append(entries)
        else:
            per_step.append([f for batch in batched(docs, step.batch_size) for f in step.features(batch)])
    return {"rank": rank, "tokens": [d.tokens for d in docs], "steps": per_step}


class Replay(Step):
    """`inner` in the reduce: its verdicts come from what `map_shard` computed for each document."""

    def __init__(self, inner: Step, found: dict[int, Any]) -> None:
        self.name, self.batch_size = inner.name, inner.batch_size
        super().__init__()
        self.inner, self.found = inner, found

    @property
    def leaks(self) -> list:
        return getattr(self.inner, "leaks", [])

    def judge(self, batch: list[Document]) -> list[Removal | None]:
        got = [self.found[id(d)] for d in batch]
        if not self.inner.stateless:
            return self.inner.decide(batch, got)  # type: ignore[attr-defined]
        for _, records in got:
            self.inner.replay_records(records)
        return [verdict for verdict, _ in got]


class RayExecutor:
    """Run steps over contiguous shards on Ray, then in corpus order on the driver: `LocalExecutor`'s result."""

    def __init__(self, steps: list[Step], address: str = "", shards: int = 0) -> None:
        """`address`: `runtime.ray_address`; `shards`: map tasks (0 = two per cluster CPU, >= 512 docs each)."""
        self.steps, self.address, self.shards = steps, address, shards

    def run(self, docs: Iterable[Document], rank: int = 0, world_size: int = 1) -> RunResult:
        """Every step over this worker's part of `docs` (every `world_size`-th document from `rank`)."""
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        docs = list(docs)[rank::world_size]
        shipped = [s if mappable(s) else None for s in self.steps]
        if not docs or all(s is None for s in shipped):
            return LocalExecutor(self.steps).run(docs)
        with ray_session(self.address) as ray:
            n = self.shards or max(1, min(2 * cluster_cpus(ray), math.ceil(len(docs) / MIN_SHARD_DOCS)))
            bounds = [(len(docs) * i // n, len(docs) * (i + 1) // n) for i in range(n)]
            steps_ref = ray.put(shipped)
            task = ray.remote(num_cpus=1)(map_shard)
            refs = [task.remote(steps_ref, [Document(d.id, d.text, d.meta) for d in docs[a:b]], i, n)
                    for i, (a, b) in enumerate(bounds)]
            results = ray.get(refs)
        found: list[dict[int, Any]] = [{} for _ in self.steps]
        for (a, b), res in zip(bounds, results, strict=True):
            shard = docs[a:b]
            for d, tokens in zip(shard, res["tokens"], strict=True):
                d._tokens = tokens
            for j, entries in enumerate(res["steps"]):
                if entries is not None:
                    found[j].update(zip(map(id, shard), entries, strict=True))
        chain = [Replay(s, found[j]) if shipped[j] is not None else s for j, s in enumerate(self.steps)]
        return LocalExecutor(chain).run(docs)
