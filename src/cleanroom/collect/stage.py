"""The `collect` stage: `corpora/NAME/` for each `[corpora.NAME]` table, from a teacher LLM or from files.

- `kind = "teacher"`: the real-teacher driver (`collect/teacher.py`: Phi/Cosmopedia-style prompts, the
  SQLite request cache, waves that stop at the budget) with the teacher the table names. Several
  `base_urls` become a `TeacherPool` (requests spread over the endpoints); `workers > 1` local models
  become Ray actors when `runtime.executor = "ray"`. The cache is `RUN/cache/requests.sqlite` (or
  `runtime.teacher_cache`) and does not depend on where a request went, so a killed stage, rerun with
  more or fewer endpoints, sends only what is missing.
- `kind = "files"`: a user's Parquet or JSONL files (`collect/files.py`), cut at the budget.

The budget is the table's `tokens`, or the experiment's `recipes.token_budget` (word units, as every
recipe counts them). Each item hashes only its own table (`pipeline.Stage.sections`), so adding a corpus
redoes no other, and the files a corpus reads are part of its inputs (`external_digest`).
"""

from __future__ import annotations

import hashlib
import json
from contextlib import ExitStack
from typing import Any

from cleanroom.config import ExperimentConfig, FilesCorpus, TeacherCorpus
from cleanroom.contract import StageResult
from cleanroom.corpus import CORPUS_SCHEMA, write_shards
from cleanroom.store import RunStore
from cleanroom.ui import say


def external_digest(cfg: ExperimentConfig, name: str) -> str:
    """What the corpus reads from outside the run directory: its files' names, sizes and times ("" for a teacher)."""
    spec = cfg.corpora[name]
    if not isinstance(spec, FilesCorpus):
        return ""
    from cleanroom.collect.files import files_digest

    blob = json.dumps(files_digest(spec.path)).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def run_collect(cfg: ExperimentConfig, store: RunStore, name: str) -> StageResult:
    spec = cfg.corpora[name]
    budget = cfg.budget(name)
    if isinstance(spec, FilesCorpus):
        from cleanroom.collect.files import file_documents

        rows, stats = file_documents(spec, name, budget)
        stats["origin"] = f"files: {spec.path}"
    else:
        rows, stats = teacher_documents(cfg, store, name, spec, budget)
        stats["origin"] = f"teacher: {stats['teacher']}:{stats['model']}"
    write_shards(store.path(f"corpora/{name}"), rows, cfg.recipes.shard_docs, CORPUS_SCHEMA)
    stats.update(kind=spec.kind, docs=len(rows), budget=budget, filled=round(stats["tokens"] / budget, 4))
    if stats["filled"] < 0.98:
        say(f"[yellow]  {name}: {stats['tokens']:,} of {budget:,} word units ({stats['filled']:.0%} of the budget); "
            f"its model sees the same number of training tokens, in more epochs[/]")
    say(f"  {name}: {len(rows):,} documents, {stats['tokens']:,} word units ({stats['origin']})")
    return StageResult(outputs=[f"corpora/{name}"], stats=stats)


def teacher_documents(cfg: ExperimentConfig, store: RunStore, name: str, spec: TeacherCorpus,
                      budget: int) -> tuple[list[dict], dict[str, Any]]:
    """Rows in the corpus contract written by the teacher the table names, and the driver's stats."""
    from cleanroom.collect.teacher import RealGenConfig, generate_documents
    from cleanroom.errors import ModelError
    from cleanroom.teachers.cache import RequestCache
    from cleanroom.teachers.pool import capacity

    with ExitStack() as stack:
        teacher = build_teacher(cfg, spec, stack)
        gen = RealGenConfig(spec=spec, tokens=budget, seed=cfg.seed, wave=4 * capacity(teacher), embed=False)
        cache = RequestCache(cfg.runtime.teacher_cache or store.path("cache/requests.sqlite"))
        stack.callback(cache.close)
        try:
            docs, stats = generate_documents(teacher, cache, gen, name)
        except ModelError as e:
            raise ModelError(f"corpus `{name}`: {e} — finished requests are cached; rerun to resume") from None
    return docs, stats


def build_teacher(cfg: ExperimentConfig, spec: TeacherCorpus, stack: ExitStack) -> Any:
    """The table's teacher: one, or a pool over its endpoints / workers (Ray actors under the Ray executor)."""
    from cleanroom.teachers import make_teacher
    from cleanroom.teachers.pool import RayTeacher, TeacherPool

    if spec.teacher == "openai":
        members = [make_teacher("openai", spec.model, base_url=url, concurrency=spec.concurrency,
                                timeout=spec.timeout, max_retries=spec.retries, mode=spec.mode,
                                api_key_env=spec.api_key_env) for url in spec.base_urls]
        return members[0] if len(members) == 1 else TeacherPool(members)
    model = spec.model or None
    if spec.workers > 1 and cfg.runtime.executor == "ray":
        from cleanroom.ray_cluster import ray_session

        ray = stack.enter_context(ray_session(cfg.runtime.ray_address))
        return TeacherPool([RayTeacher(ray, spec.teacher, model, batch_size=spec.batch_size)
                            for _ in range(spec.workers)])
    if spec.workers > 1:
        say(f"[yellow]  {spec.workers} teacher workers need runtime.executor = \"ray\" (--executor ray); "
            f"running one here[/]")
    return make_teacher(spec.teacher, model, batch_size=spec.batch_size)
