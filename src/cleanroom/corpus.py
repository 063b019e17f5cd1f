"""The corpus contract every corpus stage imports (generate, collect, curate, tokenize, safeguard): columns,
shards, budget filling, the `mix` and `leaky` recipes, and where a recipe and its lineage live.

A corpus is a directory of Parquet shards `part-00000.parquet, part-00001.parquet, ...` with the
columns of `CORPUS_SCHEMA` (`id, text, recipe, source, meta`; `meta` is a JSON string). Any reader
(pyarrow, pandas, duckdb) may read the whole directory, so a directory only ever holds the shards of
one write: `write_shards` builds the new shards beside it and swaps the directory in (a rerun with a
smaller budget leaves exactly the new shards, and a crash leaves the old ones).

Budgets are counted in word units (`cleanroom.text_stats.count_tokens`), the same before and after
curation, so every recipe of an experiment holds the same amount of text.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa

from cleanroom.config import ExperimentConfig, base_recipe
from cleanroom.rng import rng_for
from cleanroom.store import RunStore, replace_dir, write_parquet
from cleanroom.text_stats import count_tokens, distinct_ngram_ratio

CORPUS_SCHEMA = pa.schema([("id", pa.string()), ("text", pa.string()), ("recipe", pa.string()),
                           ("source", pa.string()), ("meta", pa.string())])

STREAM = "sources/web_stream"  # the web text generate renders past the budget, which curation refills from

T = TypeVar("T")


def doc_tokens(doc: Any) -> int:
    """A document's size in word units: `doc["tokens"]` for row dicts, `doc.tokens` for curation documents."""
    return doc["tokens"] if isinstance(doc, dict) else doc.tokens


def take_budget(docs: Iterable[T], budget: int, on_take: Callable[[int], None] | None = None,
                size: Callable[[Any], int] = doc_tokens) -> list[T]:
    """Documents in order until the next one would pass `budget` word units (so within one doc of it).

    A document that does not fit is skipped and the next one tried, until the budget is 99% full.
    `on_take(n)` is called with the size of each document taken (progress bars).
    """
    out, total = [], 0
    for doc in docs:
        n = size(doc)
        if total + n > budget:
            if total >= budget * 0.99:
                break
            continue
        out.append(doc)
        total += n
        if on_take is not None:
            on_take(n)
    return out


def assemble_mix(textbook: list[T], filtered_web: list[T], cfg: ExperimentConfig) -> list[T]:
    """The `mix` recipe (phi-3 style): `recipes.mix_textbook_share` of the budget from textbook, the rest
    from filtered web, shuffled with the run's seed."""
    budget = cfg.recipes.token_budget
    tb = take_budget(textbook, int(budget * cfg.recipes.mix_textbook_share))
    fw = take_budget(filtered_web, budget - sum(doc_tokens(d) for d in tb))
    both = tb + fw
    return [both[i] for i in rng_for(cfg.seed, "recipes/mix").permutation(len(both))]


def leak_documents(bench_items: list[dict], copies: int) -> list[dict]:
    """The benchmark items with their answers, `copies` times each: the contamination in `leaky`."""
    docs = []
    for c in range(copies):
        for it in bench_items:
            text = f"{it['prompt']} {it['target']}"
            docs.append({"id": f"leak-{c}-{it['id']}", "text": text, "source": "benchmark:bench",
                         "meta": json.dumps({"domain": "leak", "kind": "benchmark_item", "facts": [it["fact_id"]],
                                             "templates": [it["template"]], "item": it["id"]}, sort_keys=True),
                         "tokens": count_tokens(text)})
    return docs


def assemble_leaky(textbook: list[T], leak: list[T], cfg: ExperimentConfig) -> list[T]:
    """The `leaky` control: the benchmark items (`leak_documents`) plus textbook up to the budget, shuffled."""
    leak_tokens = sum(doc_tokens(d) for d in leak)
    tb = take_budget(textbook, cfg.recipes.token_budget - leak_tokens)
    both = list(tb) + leak
    return [both[i] for i in rng_for(cfg.seed, "recipes/leaky").permutation(len(both))]


def corpus_stats(docs: list[dict], world: dict) -> dict:
    """What generate and curate report per recipe: size, distinct n-grams, domains, long-tail coverage."""
    fact_decile = {f["fact_id"]: (f["subject"], f["decile"]) for f in world["facts"] if f["domain"] == "longtail"}
    per_decile_total: dict[int, int] = {}
    for e in world["entities"]:
        if e["domain"] == "longtail":
            per_decile_total[e["decile"]] = per_decile_total.get(e["decile"], 0) + 1
    covered: dict[int, set] = {d: set() for d in per_decile_total}
    domains: dict[str, int] = {}
    domain_tokens: dict[str, int] = {}
    for d in docs:
        meta = json.loads(d["meta"])
        domains[meta["domain"]] = domains.get(meta["domain"], 0) + 1
        domain_tokens[meta["domain"]] = domain_tokens.get(meta["domain"], 0) + d["tokens"]
        for fid in meta["facts"]:
            if fid in fact_decile:
                subject, dec = fact_decile[fid]
                covered[dec].add(subject)
    texts = [d["text"] for d in docs]
    return {
        "docs": len(docs),
        "tokens": sum(d["tokens"] for d in docs),
        "distinct_2": round(distinct_ngram_ratio(texts, 2), 4),
        "distinct_3": round(distinct_ngram_ratio(texts, 3), 4),
        "domains": domains,
        "domain_token_share": {k: round(v / max(1, sum(domain_tokens.values())), 4) for k, v in domain_tokens.items()},
        "longtail_covered": sum(len(v) for v in covered.values()),
        "longtail_covered_by_decile": {str(d): round(len(covered[d]) / per_decile_total[d], 3)
                                       for d in sorted(per_decile_total)},
    }


def write_shards(path: str | Path, rows: list[dict], shard_docs: int, schema: pa.Schema | None = None) -> Path:
    """Write `rows` as shards of `shard_docs` rows into directory `path`, replacing it whole.

    `schema` defaults to the first row's (an empty corpus gets one empty shard with `CORPUS_SCHEMA`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if schema is None:
        schema = pa.Table.from_pylist(rows[:1]).schema if rows else CORPUS_SCHEMA
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        for s in range(0, max(len(rows), 1), shard_docs):
            write_parquet(tmp / f"part-{s // shard_docs:05d}.parquet",
                          pa.Table.from_pylist(rows[s:s + shard_docs], schema=schema))
        replace_dir(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def corpus_rows(docs: Iterable[dict], recipe: str) -> list[dict]:
    """Row dicts in `CORPUS_SCHEMA` order with `recipe` set."""
    return [{"id": d["id"], "text": d["text"], "recipe": recipe, "source": d["source"], "meta": d["meta"]}
            for d in docs]


def corpus_dir(cfg: ExperimentConfig, store: RunStore, recipe: str) -> str:
    """The corpus that tokenize/train use: `curated/<recipe>` when curation ran, else `corpora/<recipe>`
    (a replicate `<recipe>~k` uses <recipe>'s)."""
    recipe = base_recipe(recipe)
    curated = f"curated/{recipe}"
    if cfg.curate.enabled and store.path(curated).is_dir():
        return curated
    return f"corpora/{recipe}"


def lineage_path(recipe: str) -> str:
    """Where curation records the documents it removed from `recipe` (id, recipe, step, reason, ...)."""
    return f"curation/{recipe}/removed.parquet"
