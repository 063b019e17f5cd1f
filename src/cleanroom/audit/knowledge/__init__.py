"""`longtail`: real-world knowledge across the popularity range, offline (SimpleQA / PopQA / Head-to-Tail style).

Facts come from data packages that install offline (`facts`: GeoNames cities, countryinfo, Wikipedia
vital-article descriptions, WordNet person glosses), each with a popularity signal; facts fall into
head / torso / tail buckets by thirds of cumulative popularity per source and relation. Items are drawn
at run time with a seed in two formats (`items`): short answers graded correct / incorrect / not
attempted (`grading`), and 4-option log-likelihood choices with distractors of the same kind.
Items are the audit's `AuditItem`s; `cleanroom audit --tasks longtail` (audit/longtail.py) answers them with
any model, and `scoring` reports accuracy per bucket from the audit's rows, with fact-clustered bootstrap
CIs and the head-to-tail slope.

`build_items(seed, limit)` -> items, `grade_item(item, answer)` -> grades, `knowledge_metrics(rows, n_boot,
seed)` -> the summary. docs/knowledge.md has sources, rules and figures.
"""

from cleanroom.audit.knowledge.facts import BUCKETS, Fact, load_facts, popularity_buckets
from cleanroom.audit.knowledge.grading import GRADES, LLMGrader, grade_answer, is_abstention, normalize
from cleanroom.audit.knowledge.items import TASK, build_items, grade_item
from cleanroom.audit.knowledge.scoring import grade_of, head_to_tail_slope, knowledge_metrics

__all__ = ["BUCKETS", "GRADES", "TASK", "Fact", "LLMGrader", "build_items", "grade_answer",
           "grade_item", "grade_of", "head_to_tail_slope", "is_abstention", "knowledge_metrics", "load_facts",
           "normalize", "popularity_buckets"]
