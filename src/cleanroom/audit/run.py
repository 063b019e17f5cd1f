"""Run an audit: build each task's items, answer them through the cached model, grade, write, summarise.

Output directory (DESIGN.md section 5, audit shape):

    items/<task>.parquet    one row per item (ITEM_SCHEMA): prompt, options, the model's answer, correct
    summary.json            `AuditSummary`: accuracy per task/formulation/family, gaps, CIs, McNemar
    report.md, report.html  the report card (HTML self-contained), figures/*.png
    cache/requests.sqlite   every answered request (an interrupted or repeated audit resumes from it)

Which protocol answers which item kind: a local model scores choice items by log-likelihood and
generates with a raw prompt ("completion"); an endpoint does the same when it returns prompt
logprobs (probed once), else everything goes through chat ("chat": choice items ask for a letter).
`protocol="chat"` forces chat for every item (what a chat/reasoning model such as gpt-oss is made for).
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from cleanroom.audit.items import AuditItem, AuditTask, TaskOptions
from cleanroom.audit.knowledge import knowledge_metrics
from cleanroom.audit.longtail import LongtailTask
from cleanroom.audit.report import write_report
from cleanroom.audit.summary import AuditSummary, summarize_rows
from cleanroom.audit.tasks import BUILTIN_TASKS, GSM_STOP, letter_question, parse_letter
from cleanroom.errors import ConfigError, ModelError
from cleanroom.lm.api import Completion, GenerateRequest, GenParams, LoglikelihoodRequest
from cleanroom.lm.cache import CachedLM, RequestCache, request_key
from cleanroom.lm.hf import LocalLM
from cleanroom.lm.openai import EndpointLM
from cleanroom.store import write_json, write_parquet
from cleanroom.ui import progress, say

TASKS: dict[str, Any] = {**BUILTIN_TASKS, "longtail": LongtailTask}

ITEM_SCHEMA = pa.schema([
    ("id", pa.string()), ("task", pa.string()), ("variant", pa.string()), ("family", pa.string()),
    ("source_id", pa.string()), ("kind", pa.string()), ("protocol", pa.string()), ("prompt", pa.string()),
    ("options", pa.list_(pa.string())), ("gold", pa.int32()), ("target", pa.string()), ("pred", pa.string()),
    ("pred_text", pa.string()), ("correct", pa.bool_()), ("correct_alt", pa.bool_()), ("parsed", pa.bool_()),
    ("response", pa.string()), ("logprobs", pa.list_(pa.float64())), ("meta", pa.string()),
])


def register_task(name: str, factory: Any) -> None:
    """Make a task available to `--tasks` (e.g. the long-tail knowledge probe registers `longtail`)."""
    TASKS[name] = factory


@dataclass
class AuditConfig:
    model: str
    tasks: list[str]
    out: Path
    base_url: str | None = None
    protocol: str = "auto"  # auto | loglikelihood | chat
    options: TaskOptions = field(default_factory=TaskOptions)
    chat_max_tokens: int = 1024
    concurrency: int = 8
    timeout: float = 300.0
    retries: int = 5
    api_key_env: str = "OPENAI_API_KEY"
    dtype: str = "float32"
    batch_size: int = 32
    device: str = "cpu"
    threads: int = 0  # 0 = auto (`auto_threads`)
    n_boot: int = 2000


def auto_threads() -> int:
    """torch's default, or 1 thread when other processes already keep every core busy: spinning OpenMP
    threads that share cores with other work are 10-25x slower (measured: SmolLM2 decoding, load 5 on 2
    cores: 74 s with 2 threads, 3 s with 1)."""
    import torch

    cores = os.cpu_count() or 1
    return 1 if os.getloadavg()[0] >= cores else torch.get_num_threads()


def make_backend(cfg: AuditConfig) -> LocalLM | EndpointLM:
    """The model behind `--model` / `--base-url` (a local model loads on first use)."""
    if cfg.base_url:
        return EndpointLM(cfg.base_url, cfg.model, api_key_env=cfg.api_key_env, concurrency=cfg.concurrency,
                          timeout=cfg.timeout, max_retries=cfg.retries)
    return LocalLM(cfg.model, dtype=cfg.dtype, batch_size=cfg.batch_size, device=cfg.device,
                   threads=cfg.threads or auto_threads())


def choose_protocols(cfg: AuditConfig, offers: dict[str, Any]) -> dict[str, str]:
    """item kind -> protocol (see the module doc)."""
    if cfg.protocol not in ("auto", "loglikelihood", "chat"):
        raise ConfigError(f"--protocol must be auto, loglikelihood or chat, got `{cfg.protocol}`")
    if cfg.protocol == "chat":
        return {"choice": "chat", "generate": "chat"}
    if offers.get("loglikelihood"):
        return {"choice": "loglikelihood", "generate": "completion" if offers.get("completion") else "chat"}
    if cfg.protocol == "loglikelihood":
        raise ModelError(f"the endpoint does not return prompt logprobs ({offers.get('probe', '')}); "
                         f"use --protocol chat or auto")
    return {"choice": "chat", "generate": "chat"}


def cached_probe(backend: LocalLM | EndpointLM, cache: RequestCache) -> dict[str, Any]:
    """What the model offers; an endpoint is probed once per audit directory (a rerun sends nothing)."""
    if isinstance(backend, LocalLM):
        return {"loglikelihood": True, "completion": True, "chat": True}
    params = GenParams(max_tokens=0, temperature=0.0, top_p=1.0)
    key = request_key("audit-probe", backend.identity, "", params)
    found = cache.get_many([key])
    if key in found:
        return json.loads(found[key].text)
    backend.check()
    offers = backend.probe()
    cache.put("audit-probe", backend.identity, "", params, Completion(json.dumps(offers), 0, 0))
    return offers


def _row(item: AuditItem, protocol: str, **kw: Any) -> dict:
    base = {"id": item.id, "task": item.task, "variant": item.variant, "family": item.family,
            "source_id": item.source_id, "kind": item.kind, "protocol": protocol, "prompt": item.prompt,
            "options": list(item.options), "gold": item.gold, "target": item.target, "pred": "", "pred_text": None,
            "correct": False, "correct_alt": None, "parsed": True, "response": "", "logprobs": None,
            "meta": item.meta_json()}
    base.update(kw)
    return base


def answer_items(task: AuditTask, items: list[AuditItem], model: CachedLM, protocols: dict[str, str],
                 cfg: AuditConfig) -> list[dict]:
    """One graded row per item, in item order."""
    rows: list[dict | None] = [None] * len(items)
    choice = [i for i, it in enumerate(items) if it.kind == "choice"]
    gen = [i for i, it in enumerate(items) if it.kind == "generate"]
    for kind, idx in (("choice", choice), ("generate", gen)):
        if not idx:
            continue
        proto = protocols[kind]
        label = f"{task.name} · {kind} · {proto}"
        if kind == "choice" and proto == "loglikelihood":
            reqs = [LoglikelihoodRequest(items[i].prompt, o) for i in idx for o in items[i].options]
            with progress(label, total=len(reqs)) as bar:
                lls = model.loglikelihood(reqs, bar.advance)
            k = 0
            for i in idx:
                it = items[i]
                lp = [x.logprob for x in lls[k:k + len(it.options)]]
                k += len(it.options)
                lengths = [max(1, len(o) - 1 if o.startswith(" ") else len(o)) for o in it.options]
                pred, pred_norm = int(np.argmax(lp)), int(np.argmax(np.array(lp) / np.array(lengths)))
                normalize = bool(it.meta.get("normalize"))
                p = pred_norm if normalize else pred
                alt = (pred == it.gold) if normalize else (pred_norm == it.gold) if it.meta.get("alt_norm") else None
                rows[i] = _row(it, proto, pred=it.options[p].strip(), pred_text=it.meta["choices"][p],
                               correct=p == it.gold, correct_alt=alt, logprobs=lp)
        elif kind == "choice":
            prompts = [letter_question(items[i].meta["question"], items[i].meta["choices"]) for i in idx]
            with progress(label, total=len(prompts)) as bar:
                texts = model.generate_until([GenerateRequest(p, (), cfg.chat_max_tokens, chat=True)
                                              for p in prompts], bar.advance)
            for i, text in zip(idx, texts, strict=True):
                it = items[i]
                letter = parse_letter(text, len(it.meta["choices"]))
                p = -1 if letter is None else "ABCDEFGHIJ".index(letter)
                rows[i] = _row(it, proto, pred=letter or "", pred_text=None if p < 0 else it.meta["choices"][p],
                               correct=p == it.gold, parsed=letter is not None, response=text)
        else:
            if proto == "completion":  # a task may say where its answers end and how long they are
                stop = getattr(task, "gen_stop", GSM_STOP)
                max_tokens = getattr(task, "gen_max_tokens", None) or cfg.options.max_gen_tokens
                reqs = [GenerateRequest(items[i].prompt, stop, max_tokens) for i in idx]
                with progress(label, total=len(reqs)) as bar:
                    texts = model.generate_until(reqs, bar.advance)
            else:
                prompts = [items[i].chat_prompt or items[i].prompt for i in idx]
                with progress(label, total=len(prompts)) as bar:
                    texts = model.generate_until([GenerateRequest(p, (), cfg.chat_max_tokens, chat=True)
                                                  for p in prompts], bar.advance)
            for i, text in zip(idx, texts, strict=True):
                g = task.grade(items[i], text)
                alt = g.extra.get("correct_strict")
                rows[i] = _row(items[i], proto, pred=g.pred, pred_text=g.pred, correct=g.correct,
                               correct_alt=alt, parsed=g.parsed, response=text)
    return rows  # type: ignore[return-value]


def _environment() -> dict[str, Any]:
    import torch

    from cleanroom.runtime import cpu_model

    cpu = cpu_model()
    return {"python": platform.python_version(), "torch": torch.__version__, "cpu": cpu,
            "cores": os.cpu_count(), "threads": torch.get_num_threads(),
            "load_avg": [round(x, 2) for x in os.getloadavg()]}


def run_audit(cfg: AuditConfig) -> AuditSummary:
    """Run the audit described by `cfg` and write its directory; returns the summary."""
    t_start = time.perf_counter()
    unknown = [t for t in cfg.tasks if t not in TASKS]
    if unknown:
        raise ConfigError(f"unknown task {', '.join(unknown)} (choose from {', '.join(TASKS)})")
    if cfg.options.shots < 0:
        raise ConfigError(f"--shots must be >= 0, got {cfg.options.shots}")
    for lim in (cfg.options.limit, *cfg.options.task_limits.values()):
        if lim is not None and lim < 1:
            raise ConfigError(f"--limit must be >= 1, got {lim}")
    tasks = [TASKS[name]() for name in cfg.tasks]
    timings: dict[str, float] = {}
    backend = make_backend(cfg)  # bad model names and unreachable endpoints fail before any work
    cache = RequestCache(cfg.out / "cache" / "requests.sqlite")
    try:
        offers = cached_probe(backend, cache)
        protocols = choose_protocols(cfg, offers)
        t0 = time.perf_counter()
        items = {t.name: t.items(cfg.options.for_task(t.name)) for t in tasks}
        timings["build_items_s"] = time.perf_counter() - t0
    except BaseException:
        cache.close()
        raise
    say(f"[bold]audit[/] `{backend.name}` ({backend.kind}) · protocols: choice={protocols['choice']}, "
        f"generate={protocols['generate']} · " + ", ".join(f"{k}: {len(v)} items" for k, v in items.items()))
    # chunks: whole batches for a local model; for an endpoint one wave of `concurrency` requests, each wave
    # committed as it returns, so a failing endpoint loses at most the answers of the wave it failed in
    chunk = 8 * cfg.batch_size if isinstance(backend, LocalLM) else cfg.concurrency
    model = CachedLM(backend, cache, namespace="audit", chunk=chunk)
    all_rows: list[dict] = []
    notes: dict[str, Any] = {}
    sources: list[dict[str, str]] = []
    try:
        for task in tasks:
            t0 = time.perf_counter()
            rows = answer_items(task, items[task.name], model, protocols, cfg)
            timings[f"{task.name}_s"] = time.perf_counter() - t0
            write_parquet(cfg.out / "items" / f"{task.name}.parquet", pa.Table.from_pylist(rows, schema=ITEM_SCHEMA))
            all_rows += rows
            info = task.describe()
            sources += info.pop("sources", [])
            if info:
                notes[task.name] = info
    finally:
        cache.close()
    timings["model_load_s"] = getattr(backend, "load_seconds", 0.0)
    t0 = time.perf_counter()
    task_summaries, results = summarize_rows(all_rows, cfg.n_boot)
    knowledge = knowledge_metrics(all_rows, cfg.n_boot)
    timings["statistics_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - t_start
    opts = asdict(cfg.options)
    opts.update(protocol=cfg.protocol, tasks=cfg.tasks, base_url=cfg.base_url, dtype=cfg.dtype)
    summary = AuditSummary(
        model=backend.name, backend=backend.identity, protocols=protocols, options=opts, tasks=task_summaries,
        results=results, timings={k: round(v, 3) for k, v in timings.items()},
        requests={**model.counts, "model_calls": backend.counts.forward_calls, "offers": offers},
        environment=_environment(), sources=sources, notes=notes, knowledge=knowledge)
    write_json(cfg.out / "summary.json", summary.model_dump(mode="json"))
    write_report(cfg.out, summary)
    return summary
