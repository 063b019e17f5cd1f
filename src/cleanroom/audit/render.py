"""Benchmark items as training records in the benchmark's own prompt format (for `cleanroom finetune`
and the audit's planted-leak control): the prompt the audit scores, then the gold answer exactly as the
audit reads it."""

from __future__ import annotations

from collections.abc import Sequence

from cleanroom.audit.items import AuditItem, TaskOptions
from cleanroom.audit.run import TASKS
from cleanroom.errors import ConfigError


def training_record(item: AuditItem) -> dict[str, str]:
    """`{"prompt", "completion"}`: a choice item's gold option (`" B"` in the letter format, `" <gold
    text>"` in the option-text format); a GSM8K item's worked solution ending `#### N` (the answer
    alone, `#### N`, when the item carries no solution, as twins do)."""
    if item.kind == "choice":
        return {"prompt": item.prompt, "completion": item.options[item.gold]}
    solution = item.meta.get("solution")
    return {"prompt": item.prompt, "completion": " " + (solution or f"#### {item.target}")}


def training_records(items: Sequence[AuditItem]) -> list[dict[str, str]]:
    return [training_record(it) for it in items]


def benchmark_like_records(tasks: Sequence[str], options: TaskOptions, n: int) -> list[dict[str, str]]:
    """Training records that look like the test and contain none of its audited items (the Phi mechanism,
    "teaching to the test"): per task, `n` of its `like_items` at the audit's `options` (MMLU: other
    questions of the audited subjects; GSM8K: fresh instances of the templates whose items are not
    audited). Raises if a record's question is one the audit asks (a leak would not be teaching to the test)."""
    records: list[dict[str, str]] = []
    for name in tasks:
        task = TASKS[name]()
        like = getattr(task, "like_items", None)
        if like is None:
            raise ConfigError(f"task `{name}` has no benchmark-like items (mmlu and gsm8k do)")
        o = options.for_task(name)
        asked = {it.meta.get("question") for it in task.items(o)}
        items = like(o, n)
        overlap = [it.id for it in items if it.meta.get("question") in asked]
        if overlap:
            raise ConfigError(f"{name}: {len(overlap)} benchmark-like items repeat audited questions ({overlap[0]})")
        records += training_records(items)
    return records
