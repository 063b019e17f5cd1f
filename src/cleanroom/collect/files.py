"""A user's own corpus (a crawl, a dataset export) as documents: Parquet or JSONL files, read lazily.

A path is a file or a directory; a directory's `*.parquet`, `*.jsonl` and `*.jsonl.gz` files are read in
name order. Rows stream through `take_budget`, so a crawl far larger than the budget is read only as far
as the budget needs. Every column besides the text and the id is kept in `meta` (JSON), with the file
name. Ids must be unique (lineage names documents by id); without an id column documents are numbered.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from cleanroom.collect.teacher import diversity_stats
from cleanroom.config import FilesCorpus
from cleanroom.corpus import corpus_rows, take_budget
from cleanroom.errors import InputError
from cleanroom.text_stats import count_tokens

SUFFIXES = (".parquet", ".jsonl", ".jsonl.gz")


def corpus_files(path: str | Path) -> list[Path]:
    """The files a `[corpora.NAME] path` names, in reading order."""
    p = Path(path).expanduser()
    if p.is_file():
        if not p.name.endswith(SUFFIXES):
            raise InputError(f"corpus file {p}: expected a .parquet, .jsonl or .jsonl.gz file")
        return [p]
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.is_file() and f.name.endswith(SUFFIXES))
        if not files:
            raise InputError(f"corpus directory {p} holds no .parquet, .jsonl or .jsonl.gz files")
        return files
    raise InputError(f"corpus path {p} does not exist (paths are relative to the working directory)")


def _rows(f: Path) -> Iterator[dict[str, Any]]:
    if f.name.endswith(".parquet"):
        try:
            for batch in pq.ParquetFile(f).iter_batches(batch_size=2048):
                yield from batch.to_pylist()
        except (pa.ArrowInvalid, OSError) as e:
            raise InputError(f"corpus file {f}: not readable as Parquet ({e})") from None
        return
    opener = gzip.open if f.name.endswith(".gz") else open
    with opener(f, "rt", encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"corpus file {f}, line {line_no}: not JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise InputError(f"corpus file {f}, line {line_no}: expected a JSON object per line")
            yield row


def _documents(spec: FilesCorpus, name: str, counts: dict[str, int]) -> Iterator[dict[str, Any]]:
    seen: set[str] = set()
    index = 0
    for f in corpus_files(spec.path):
        counts["files"] += 1
        for row in _rows(f):
            if spec.text_field not in row:
                raise InputError(f"corpus file {f} has no `{spec.text_field}` field (config key "
                                 f"`corpora.{name}.text_field`; fields: {', '.join(sorted(row))})")
            text = row[spec.text_field]
            if not isinstance(text, str) or not text.strip():
                counts["skipped_empty"] += 1
                continue
            raw_id = row.get(spec.id_field) if spec.id_field else None
            doc_id = f"{name}-{index:08d}" if raw_id is None else str(raw_id)
            index += 1
            if doc_id in seen:
                raise InputError(f"corpus file {f}: the id `{doc_id}` occurs twice (config key "
                                 f"`corpora.{name}.id_field`: name a unique column, or \"\" to number documents)")
            seen.add(doc_id)
            meta = {k: v for k, v in row.items() if k not in (spec.text_field, spec.id_field)}
            meta["file"] = f.name
            yield {"id": doc_id, "text": text, "source": f"file:{f.name}",
                   "meta": json.dumps(meta, sort_keys=True, default=str), "tokens": count_tokens(text)}


def file_documents(spec: FilesCorpus, name: str, budget: int) -> tuple[list[dict], dict[str, Any]]:
    """Rows in `CORPUS_SCHEMA` (recipe `name`) up to `budget` word units, and what was read."""
    counts = {"files": 0, "skipped_empty": 0}
    docs = take_budget(_documents(spec, name, counts), budget)
    stats = {"path": str(spec.path), "files_read": counts["files"], "skipped_empty": counts["skipped_empty"],
             "tokens": sum(d["tokens"] for d in docs),
             "diversity": diversity_stats([d["text"] for d in docs], embed=False)}
    return corpus_rows(docs, name), stats


def files_digest(path: str | Path) -> list[list[Any]]:
    """(name, size, mtime) of every file a corpus reads: changes when the user edits or replaces them."""
    return [[str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns] for f in corpus_files(path)]
