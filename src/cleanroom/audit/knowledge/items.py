"""Items of the `longtail` task, drawn at run time from the facts with a seed (a held-out design).

`build_items(seed, limit)` samples `limit` facts, the same number from every (source, relation,
bucket) stratum where the data allows, and makes up to two items per fact:
- `short` (kind "generate"): "Question: ...\\nAnswer:", answered by greedy generation and graded
  SimpleQA-style (`grade_item`);
- `mc` (kind "choice"): the same kind of question with 4 options, the gold and 3 distractors of the
  same kind, scored by log-likelihood of " " + option. Distractors: countries, capitals, currencies,
  languages and nationalities from the gold's continent; years from the gold's decade; creators of the
  same work type; continents among the other continents. A distractor never equals the gold or any of
  its aliases after normalisation; when the gold's group has too few values, the rest of the relation's
  values fill in (recorded in meta as `filled`).
Every relation has several question templates; each item draws one, so nobody can tune to a fixed list.

Items are the audit's one item shape, `AuditItem` (audit/items.py): task "longtail", variant (the format,
"short" | "mc"), family "original" (no twins), source_id the fact id (pairing and bootstrap cluster key),
kind ("generate" | "choice"), prompt, options (" " + each option text, the continuations scored; empty for
generate), gold (-1 for generate), target, aliases, chat_prompt, and meta: source, relation, subject, bucket,
buckets per signal, popularity, the answer kind; for mc items `question`, `choices` (the option texts) and
`alt_norm` (also score per length, acc_norm); for short items the competitors that the grader treats as
other candidates.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence

from cleanroom.audit.items import ORIGINAL, AuditItem
from cleanroom.audit.knowledge.facts import BUCKETS, Fact, assign_buckets, load_facts
from cleanroom.audit.knowledge.grading import LLMGrader, alias_set, grade_answer

TASK = "longtail"
N_OPTIONS = 4

TEMPLATES: dict[str, tuple[str, ...]] = {
    "city_country": ("In which country is the city of {s}?", "{s} is a city in which country?",
                     "Which country is the city {s} located in?"),
    "capital": ("What is the capital of {s}?", "What is the capital city of {s}?", "Which city is the capital of {s}?"),
    "continent": ("On which continent is {s}?", "{s} is located on which continent?",
                  "Which continent is {s} part of?"),
    "currency": ("What is the currency of {s}?", "What currency is used in {s}?",
                 "What is the official currency of {s}?"),
    "language": ("What is an official language of {s}?", "Name an official language of {s}.",
                 "Which language is an official language of {s}?"),
    "birth_year": ("In what year was {s} born?", "What year was {s} born in?", "{s} was born in which year?"),
    "death_year": ("In what year did {s} die?", "What year did {s} die in?", "{s} died in which year?"),
    "nationality": ("What was the nationality of {s}?", "What nationality was {s}?", "{s} was of which nationality?"),
    "creator": ("Who created the {d} {s}?", "The {d} {s} is by whom?", "Who is the author of the {d} {s}?"),
    "work_year": ("In what year did the {d} {s} first appear?", "{s} is {a} {d} from which year?",
                  "What year is the {d} {s} from?"),
}


def prompt_for(question: str) -> str:
    return f"Question: {question}\nAnswer:"


def chat_prompt_for(question: str) -> str:
    return f"{question} Answer with the name, place or year only."


def question(fact: Fact, template: int) -> str:
    d = fact.detail or "work"
    return TEMPLATES[fact.relation][template].format(s=fact.subject, d=d, a="an" if d[0] in "aeiou" else "a")


# ------------------------------------------------------------------------------------------ sampling


def sample_facts(facts: Sequence[Fact], limit: int, rng: random.Random) -> list[Fact]:
    """`limit` facts, spread evenly over (source, relation, bucket) strata (leftover quota moves on)."""
    strata: dict[tuple[str, str, str], list[Fact]] = defaultdict(list)
    for f in sorted(facts, key=lambda f: f.id):
        strata[(f.source, f.relation, f.bucket)].append(f)
    keys = sorted(strata)
    quota = dict.fromkeys(keys, 0)
    left = min(int(limit), len(facts))
    open_keys = list(keys)
    while left > 0 and open_keys:
        share, extra = divmod(left, len(open_keys))
        lucky = set(rng.sample(open_keys, extra))
        for k in open_keys:
            quota[k] += share + (k in lucky)
        left = 0
        for k in open_keys:
            over = quota[k] - len(strata[k])
            if over > 0:
                quota[k] -= over
                left += over
        open_keys = [k for k in open_keys if quota[k] < len(strata[k])]
    out = []
    for k in keys:
        out += rng.sample(strata[k], quota[k])
    rng.shuffle(out)
    return out


# ------------------------------------------------------------------------------------------ distractors


def _year_distractors(fact: Fact, rng: random.Random, n: int) -> list[str]:
    year = int(fact.answer)
    decade = [str(y) for y in range(year // 10 * 10, year // 10 * 10 + 10) if y != year and y > 0]
    return sorted(rng.sample(decade, n), key=int)


def distractors(fact: Fact, pool: dict[str, tuple[frozenset[str], str]], rng: random.Random,
                n: int = N_OPTIONS - 1) -> tuple[list[str], bool]:
    """(n distractors of the fact's kind, whether values outside its group were needed).

    `pool`: every value of the fact's (source, relation) -> (its normalised aliases, its group).
    """
    if fact.kind == "year":
        return _year_distractors(fact, rng, n), False
    gold = set(alias_set([fact.answer, *fact.aliases]))
    ok = sorted(v for v, (al, _) in pool.items() if not (al & gold) and not (set(alias_set([v])) & gold))
    same = [v for v in ok if pool[v][1] == fact.group]
    if len(same) >= n:
        return rng.sample(same, n), False
    rest = [v for v in ok if v not in same]
    return same + rng.sample(rest, min(n - len(same), len(rest))), True


def value_pools(facts: Sequence[Fact]) -> dict[tuple[str, str], dict[str, tuple[frozenset[str], str]]]:
    """(source, relation) -> answer value -> (normalised aliases of that value, its group)."""
    pools: dict[tuple[str, str], dict[str, tuple[set[str], str]]] = defaultdict(dict)
    for f in facts:
        al, group = pools[(f.source, f.relation)].setdefault(f.answer, (set(), f.group))
        al.update(alias_set([f.answer, *f.aliases]))
    return {k: {v: (frozenset(al), g) for v, (al, g) in p.items()} for k, p in pools.items()}


def kind_vocabulary(facts: Sequence[Fact]) -> dict[str, list[str]]:
    """Answer kind -> every normalised form of every value of that kind (the grader's competitors)."""
    vocab: dict[str, dict[str, None]] = defaultdict(dict)
    for f in facts:
        if f.kind != "year":
            for a in alias_set([f.answer, *f.aliases]):
                vocab[f.kind].setdefault(a, None)
    return {k: sorted(v) for k, v in vocab.items()}


# ------------------------------------------------------------------------------------------ items


def _meta(fact: Fact, **extra) -> dict:
    return {"source": fact.source, "relation": fact.relation, "subject": fact.subject, "bucket": fact.bucket,
            "buckets": fact.buckets, "popularity": fact.popularity, "primary": fact.primary, "answer_kind": fact.kind,
            "group": fact.group, "key": fact.key, **extra}


def _item(fact: Fact, variant: str, q: str, **kw) -> AuditItem:
    return AuditItem(id=f"{TASK}/{variant}/{fact.id}", task=TASK, variant=variant, family=ORIGINAL,
                     source_id=fact.id, prompt=prompt_for(q), target=fact.answer,
                     aliases=tuple(dict.fromkeys([fact.answer, *fact.aliases])), chat_prompt=chat_prompt_for(q), **kw)


def build_items(seed: int = 0, limit: int = 300, sources: Sequence[str] | None = None,
                formats: Sequence[str] = ("short", "mc"), facts: Sequence[Fact] | None = None) -> list[AuditItem]:
    """Items (module doc) for `limit` facts sampled with `seed` from the installed sources.

    `facts` replaces the installed sources (tests, or a caller that loaded them once); buckets are
    computed over all of them before sampling, so a fact's bucket does not depend on the sample.
    """
    bad = set(formats) - {"short", "mc"}
    if bad:
        raise ValueError(f"unknown longtail format(s) {sorted(bad)}; use short and/or mc")
    if facts is None:
        facts, _ = load_facts(sources)
    elif any(not f.buckets for f in facts):
        assign_buckets(facts)
    rng = random.Random(seed)
    chosen = sample_facts(facts, limit, rng)
    pools, vocab = value_pools(facts), kind_vocabulary(facts)
    items: list[AuditItem] = []
    for f in chosen:
        n_templates = len(TEMPLATES[f.relation])
        if "short" in formats:
            t = rng.randrange(n_templates)
            gold = set(alias_set([f.answer, *f.aliases]))
            competitors = [c for c in vocab.get(f.kind, []) if c not in gold]
            items.append(_item(f, "short", question(f, t), kind="generate",
                               meta=_meta(f, template=t, competitors=competitors)))
        if "mc" in formats:
            t = rng.randrange(n_templates)
            wrong, filled = distractors(f, pools[(f.source, f.relation)], rng)
            if len(wrong) < N_OPTIONS - 1:
                continue  # too few values of this kind for a 4-way choice
            options = [f.answer, *wrong]
            rng.shuffle(options)
            q = question(f, t)
            items.append(_item(f, "mc", q, kind="choice", options=tuple(" " + o for o in options),
                               gold=options.index(f.answer),
                               meta=_meta(f, template=t, filled=filled, question=q, choices=options, alt_norm=True)))
    return items


def grade_item(item: AuditItem, answer: str, grader: LLMGrader | None = None) -> dict[str, str | None]:
    """Grades of a generated answer to a short item: rule grade, LLM grade (if a grader is given), final."""
    meta = item.meta
    rule = grade_answer(answer, item.aliases, meta.get("answer_kind", ""), meta.get("competitors", ()),
                        meta.get("subject", ""))
    llm = None
    if grader is not None:
        q = item.prompt.removeprefix("Question: ").removesuffix("\nAnswer:")
        llm = grader(q, item.target, list(item.aliases), answer)
        if llm not in ("correct", "incorrect", "not_attempted"):
            raise ValueError(f"the LLM grader returned {llm!r}; expected correct, incorrect or not_attempted")
    return {"grade_rule": rule, "grade_llm": llm, "grade": llm or rule}


__all__ = ["BUCKETS", "N_OPTIONS", "TASK", "TEMPLATES", "build_items", "distractors", "grade_item", "kind_vocabulary",
           "sample_facts", "value_pools"]
