"""Benchmark items as training records in the benchmark's own prompt format (for `cleanroom finetune`
and the audit's planted-leak control): the prompt the audit scores, then the gold answer exactly as the
audit reads it."""

from __future__ import annotations

from collections.abc import Sequence

from cleanroom.audit.items import AuditItem


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
