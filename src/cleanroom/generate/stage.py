"""The `generate` stage: write every corpus recipe at one token budget.

- `web` and `textbook`: their streams (see `render.py`) cut at the budget.
- `filtered_web`: the *same* web stream, minus what the safety filter catches, continued until it
  reaches the budget again, so filtering is isolated from everything else. Here the filter is a
  placeholder keyword match; the `curate` stage rebuilds `filtered_web` with the real two-stage
  safety filter (keywords, then a classifier) from `sources/web_stream`.
- `mix`: `mix_textbook_share` of the budget from textbook, the rest from filtered web (phi-3 style).
- controls: `leaky` (textbook + every benchmark item with its answer, `leak_copies` times), `diverse`
  (the textbook stream with every fact in many phrasings); a recipe's replicates share its corpus
  of its own (it trains on <recipe>'s).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator

from cleanroom.config import ExperimentConfig
from cleanroom.contract import StageResult
from cleanroom.corpus import (
    CORPUS_SCHEMA,
    STREAM,
    assemble_leaky,
    assemble_mix,
    corpus_rows,
    corpus_stats,
    leak_documents,
    take_budget,
    write_shards,
)
from cleanroom.generate.render import Renderer
from cleanroom.store import RunStore
from cleanroom.text_stats import TOKEN_UNIT, count_tokens
from cleanroom.ui import progress
from cleanroom.world.schema import RESTRICTED_KEYWORDS
from cleanroom.world_store import load_items, load_world

_KEYWORDS = re.compile(r"\b(" + "|".join(re.escape(k) for k in RESTRICTED_KEYWORDS) + r")\b", re.IGNORECASE)
STREAM_MARGIN = 1.7  # sources/web_stream holds this many budgets of web text, for filters to refill from


def keyword_filter(doc: dict) -> bool:
    """Placeholder safety filter (True = keep). Replaced by the curate stage's real filter."""
    return _KEYWORDS.search(doc["text"]) is None


def numbered(stream: Iterable[dict], prefix: str) -> Iterator[dict]:
    """Give each rendered document its id and its size in word units."""
    for i, doc in enumerate(stream):
        yield {"id": f"{prefix}-{i:07d}", **doc, "tokens": count_tokens(doc["text"])}


def run_generate(cfg: ExperimentConfig, store: RunStore) -> StageResult:
    world = load_world(store)
    renderer = Renderer(cfg, world, load_items(store, "bench"))
    budget = cfg.recipes.token_budget
    names = cfg.recipes.names
    corpora: dict[str, list[dict]] = {}
    with progress("generate web stream", total=int(budget * STREAM_MARGIN)) as task:
        stream = take_budget(numbered(renderer.web_stream(), "web"), int(budget * STREAM_MARGIN), task.advance)
    with progress("generate textbook", total=budget) as task:
        textbook = take_budget(numbered(renderer.textbook_stream(), "textbook"), budget, task.advance)
    if "web" in names:
        corpora["web"] = take_budget(stream, budget)
    filtered = take_budget((d for d in stream if keyword_filter(d)), budget)
    if "filtered_web" in names:
        corpora["filtered_web"] = filtered
    if "textbook" in names:
        corpora["textbook"] = textbook
    if "mix" in names:
        corpora["mix"] = assemble_mix(textbook, filtered, cfg)
    if "leaky" in names:
        corpora["leaky"] = assemble_leaky(textbook, leak_documents(load_items(store, "bench"), cfg.recipes.leak_copies),
                                          cfg)
    if "diverse" in names:
        diverse = Renderer(cfg, world, load_items(store, "bench"), diverse=True)
        with progress("generate diverse", total=budget) as task:
            corpora["diverse"] = take_budget(numbered(diverse.textbook_stream(), "diverse"), budget, task.advance)
    outputs = [STREAM]
    write_shards(store.path(STREAM), corpus_rows(stream, "web_stream"), cfg.recipes.shard_docs,
                 CORPUS_SCHEMA)
    stats: dict = {"token_budget": budget, "token_unit": TOKEN_UNIT, "recipes": {}}
    for recipe, docs in corpora.items():
        write_shards(store.path(f"corpora/{recipe}"), corpus_rows(docs, recipe), cfg.recipes.shard_docs, CORPUS_SCHEMA)
        outputs.append(f"corpora/{recipe}")
        stats["recipes"][recipe] = corpus_stats(docs, world)
    stats["placeholder_filter"] = _filter_stats(stream[: len(corpora.get("web", stream))])
    return StageResult(outputs=outputs, stats=stats)


def _filter_stats(docs: list[dict]) -> dict:
    """Recall / false-positive rate of the placeholder keyword filter on the web budget."""
    restricted = [d for d in docs if json.loads(d["meta"])["domain"] == "restricted"]
    other = [d for d in docs if json.loads(d["meta"])["domain"] != "restricted"]
    caught = sum(not keyword_filter(d) for d in restricted)
    false = sum(not keyword_filter(d) for d in other)
    return {"filter": "keyword placeholder", "recall": round(caught / max(len(restricted), 1), 4),
            "fpr": round(false / max(len(other), 1), 4), "n_restricted": len(restricted), "n_other": len(other)}
