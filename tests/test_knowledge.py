"""The long-tail knowledge probe on inline fixtures: grading, normalisation, buckets, distractors, items, metrics.

Nothing here needs a data package or a model; tests/test_knowledge_sources.py checks the real sources.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from cleanroom.audit.items import AuditItem
from cleanroom.audit.knowledge import (
    Fact,
    build_items,
    grade_answer,
    grade_item,
    grade_of,
    is_abstention,
    knowledge_metrics,
    normalize,
    popularity_buckets,
)
from cleanroom.audit.knowledge.facts import assign_buckets, count_mentions
from cleanroom.audit.knowledge.grading import alias_set
from cleanroom.audit.knowledge.scoring import _ratio
from cleanroom.lm.api import Loglikelihood
from cleanroom.stats import cluster_bootstrap

# ------------------------------------------------------------------------------------------ fixtures

COUNTRIES = {  # name -> (continent, aliases)
    "Norway": ("EU", ("Norway", "Kingdom of Norway", "Norge")),
    "Sweden": ("EU", ("Sweden", "Kingdom of Sweden")),
    "Finland": ("EU", ("Finland", "Suomi")),
    "Denmark": ("EU", ("Denmark",)),
    "Iceland": ("EU", ("Iceland",)),
    "Guinea": ("AF", ("Guinea",)),
    "Equatorial Guinea": ("AF", ("Equatorial Guinea",)),
    "Niger": ("AF", ("Niger",)),
    "Nigeria": ("AF", ("Nigeria",)),
    "Japan": ("AS", ("Japan", "Nippon")),
}
CITIES = [("Tromsø", "Norway", 77_000), ("Bergen", "Norway", 285_000), ("Umeå", "Sweden", 130_000),
          ("Espoo", "Finland", 290_000), ("Aarhus", "Denmark", 340_000), ("Akureyri", "Iceland", 19_000),
          ("Conakry", "Guinea", 1_900_000), ("Bata", "Equatorial Guinea", 250_000), ("Zinder", "Niger", 320_000),
          ("Kano", "Nigeria", 3_600_000), ("Osaka", "Japan", 2_700_000), ("Sapporo", "Japan", 1_900_000),
          ("Lagos", "Nigeria", 9_000_000), ("Kankan", "Guinea", 190_000), ("Odense", "Denmark", 180_000)]
PEOPLE = [("Mark Twain", 1835, 1910, 40), ("Jane Austen", 1775, 1817, 30), ("Minor Poet", 1801, 1850, 1),
          ("Obscure Painter", 1622, 1680, 0), ("Henrik Ibsen", 1828, 1906, 12), ("Niche Chemist", 1890, 1960, 2)]


def fixture_facts() -> list[Fact]:
    facts = []
    for i, (city, country, pop) in enumerate(CITIES):
        cont, aliases = COUNTRIES[country]
        facts.append(Fact(id=f"t:city_country:{i}", source="t", relation="city_country", subject=city,
                          answer=country, aliases=aliases, kind="country", group=cont,
                          popularity={"population": float(pop), "alt_names": float(len(city))},
                          primary="population", key=str(i)))
    for name, born, died, pop in PEOPLE:
        for rel, year in (("birth_year", born), ("death_year", died)):
            facts.append(Fact(id=f"t:{rel}:{name}", source="t", relation=rel, subject=name, answer=str(year),
                              aliases=(str(year),), kind="year", group=f"{year // 10 * 10}s",
                              popularity={"mentions": float(pop)}, primary="mentions", key=name))
    assign_buckets(facts)
    return facts


# ------------------------------------------------------------------------------------------ normalisation


@pytest.mark.parametrize("a,b", [("Tromsø", "TROMSO"), ("The Bahamas", "bahamas"), ("São Tomé", "sao tome"),
                                 ("Łódź", "lodz"), ("Côte d'Ivoire", "cote divoire"),
                                 ("Washington, D.C.", "washington d c"),
                                 ("  the   Gambia. ", "gambia"), ("Straße", "strasse")])
def test_normalize_folds_case_diacritics_articles_punctuation(a, b):
    assert normalize(a) == normalize(b)


def test_normalize_keeps_different_words_apart():
    assert normalize("Niger") != normalize("Nigeria")
    assert alias_set(["Norway", "norway ", "NORWAY", "Norge"]) == ["norway", "norge"]


# ------------------------------------------------------------------------------------------ grading

NORWAY = ["Norway", "Kingdom of Norway", "Norge"]
OTHERS = ["Sweden", "Finland", "Denmark", "Guinea", "Equatorial Guinea", "Niger", "Nigeria"]


@pytest.mark.parametrize("answer,grade", [
    ("Norway", "correct"),
    ("norway.", "correct"),
    ("It is in Norway.", "correct"),
    ("the Kingdom of Norway", "correct"),
    ("Norge", "correct"),
    ("Tromsø is a city in northern Norway", "correct"),
    ("I think it's Norway, but I'm not sure", "correct"),  # SimpleQA: one hedged candidate is graded on it
    ("Sweden", "incorrect"),
    ("Norway or Sweden", "incorrect"),  # two candidates: a hedge, not an answer
    ("Either Norway or Finland", "incorrect"),
    ("Norwegian", "incorrect"),  # whole words only
    ("Scandinavia", "incorrect"),
    ("I'm not sure, but I think it is Sweden", "incorrect"),
    ("", "not_attempted"),
    ("I don't know.", "not_attempted"),
    ("I'm not sure.", "not_attempted"),
    ("Sorry, I cannot answer questions about Tromsø.", "not_attempted"),
    ("I do not have enough information to answer that.", "not_attempted"),
    ("Not sure, somewhere up north?", "not_attempted"),
])
def test_grade_country_answers(answer, grade):
    assert grade_answer(answer, NORWAY, "country", OTHERS, subject="Tromsø") == grade


def test_grade_longest_span_wins():
    assert grade_answer("Equatorial Guinea", ["Equatorial Guinea"], "country", OTHERS) == "correct"
    assert grade_answer("Equatorial Guinea", ["Guinea"], "country", OTHERS) == "incorrect"
    assert grade_answer("Niger", ["Nigeria"], "country", OTHERS) == "incorrect"
    assert grade_answer("It's Nigeria", ["Nigeria"], "country", OTHERS) == "correct"


@pytest.mark.parametrize("answer,grade", [
    ("1835", "correct"),
    (" 1835.", "correct"),
    ("He was born in 1835 and died in 1910.", "correct"),
    ("Probably 1835", "correct"),
    ("1836", "incorrect"),
    ("In the 1830s", "incorrect"),
    ("1830s", "incorrect"),  # a decade, not the year (gold 1835; also for a gold of 1830, below)
    ("1910", "incorrect"),
    ("the 19th century", "incorrect"),
    ("I don't know", "not_attempted"),
    ("Unknown", "not_attempted"),
    ("I'm not sure, sometime in the Renaissance", "incorrect"),
])
def test_grade_year_answers(answer, grade):
    assert grade_answer(answer, ["1835"], "year", subject="Mark Twain") == grade


def test_decade_is_not_a_year():
    assert grade_answer("1960s", ["1960"], "year") == "incorrect"
    assert grade_answer("the 1960's", ["1960"], "year") == "incorrect"
    assert grade_answer("1960.", ["1960"], "year") == "correct"


def test_grade_person_answers_without_vocabulary():
    gold = ["Frank Herbert", "Herbert"]
    assert grade_answer("Frank Herbert", gold, "person", subject="Dune") == "correct"
    assert grade_answer("It was written by Herbert.", gold, "person", subject="Dune") == "correct"
    assert grade_answer("I'm not sure, maybe Isaac Asimov", gold, "person", subject="Dune") == "incorrect"
    assert grade_answer("I'm not sure who wrote Dune.", gold, "person", subject="Dune") == "not_attempted"


def test_abstention_detector():
    for text in ("I don't know", "i dont know", "Not sure", "I cannot answer that", "No idea.", "", "  ",
                 "As an AI, I can't say", "I am unable to determine this"):
        assert is_abstention(text), text
    for text in ("Norway", "1835", "Frank Herbert", "The capital is Oslo"):
        assert not is_abstention(text), text


def test_llm_grader_hook_wins_and_is_validated():
    item = build_items(0, 4, facts=fixture_facts(), formats=("short",))[0]
    calls = []

    def grader(q, gold, aliases, answer):
        calls.append((q, gold, aliases, answer))
        return "not_attempted"

    g = grade_item(item, item.target, grader)
    assert g == {"grade_rule": "correct", "grade_llm": "not_attempted", "grade": "not_attempted"}
    q, gold, aliases, answer = calls[0]
    assert gold == item.target and answer == item.target and item.target in aliases
    assert not q.startswith("Question:") and not q.endswith("Answer:")
    with pytest.raises(ValueError, match="LLM grader"):
        grade_item(item, "x", lambda *a: "maybe")


# ------------------------------------------------------------------------------------------ buckets


def test_buckets_are_thirds_of_cumulative_popularity():
    pops = [5, 50, 25, 10, 25, 20, 15]  # total 150: head 50 | torso 25 + 25 | tail 20 + 15 + 10 + 5
    assert popularity_buckets(pops) == ["tail", "head", "torso", "tail", "torso", "tail", "tail"]


def test_buckets_ties_and_zeros():
    assert popularity_buckets([10, 10, 10]) == ["head"] * 3  # ties share the first one's bucket
    assert popularity_buckets([0, 0]) == ["tail", "tail"]
    assert popularity_buckets([5, 0, 3, 2]) == ["head", "tail", "torso", "tail"]  # 0 | .5 | .8 before


def test_buckets_random_property():
    rng = np.random.default_rng(0)
    pops = rng.pareto(1.2, 500) * 100
    buckets = popularity_buckets(pops.tolist())
    order = np.argsort(-pops)
    before = np.concatenate([[0], np.cumsum(pops[order])[:-1]]) / pops.sum()
    got = [buckets[i] for i in order]
    for share, b in zip(before, got, strict=True):
        assert b == ("head" if share < 1 / 3 else "torso" if share < 2 / 3 else "tail")
    rank = {"head": 0, "torso": 1, "tail": 2}
    assert all(rank[a] <= rank[b] for a, b in zip(got, got[1:], strict=False))  # monotone in popularity


def test_buckets_are_per_relation_and_per_signal():
    facts = fixture_facts()
    cities = [f for f in facts if f.relation == "city_country"]
    assert all(set(f.buckets) == {"population", "alt_names"} for f in cities)
    lagos = next(f for f in cities if f.subject == "Lagos")
    assert lagos.bucket == "head" and lagos.buckets["population"] == "head"
    births = [f for f in facts if f.relation == "birth_year"]
    assert {f.subject for f in births if f.bucket == "head"} == {"Mark Twain"}  # 40 of 85 mentions


def test_count_mentions_counts_documents_and_skips_own_article():
    texts = ["Mark Twain wrote books. Mark Twain again.", "A letter to mark twain", "Twain alone", "nothing"]
    got = count_mentions(texts, {"twain": ["Mark Twain"], "none": ["Zed Zed"]}, skip={"twain": 0})
    assert got == {"twain": 1, "none": 0}


# ------------------------------------------------------------------------------------------ items


def test_item_contract():
    """The probe emits the audit's one item shape: originals (no twins) whose variant is the format."""
    items = build_items(3, 12, facts=fixture_facts())
    assert all(isinstance(it, AuditItem) for it in items) and {i.variant for i in items} == {"short", "mc"}
    for it in items:
        assert it.task == "longtail" and it.family == "original" and it.id == f"longtail/{it.variant}/{it.source_id}"
        assert it.prompt.startswith("Question: ") and it.prompt.endswith("\nAnswer:")
        assert {"source", "relation", "subject", "bucket", "buckets", "popularity"} <= set(it.meta)
        assert it.target in it.aliases and it.meta["subject"] in it.chat_prompt
        json.loads(it.meta_json())  # stored as JSON in the item rows
        if it.variant == "short":
            assert it.kind == "generate" and it.options == () and it.gold == -1
        else:
            assert it.kind == "choice" and len(it.options) == 4 and it.options[it.gold] == " " + it.target
            assert [" " + c for c in it.meta["choices"]] == list(it.options) and it.meta["alt_norm"]
            assert it.meta["question"] in it.prompt
    assert len({i.id for i in items}) == len(items)
    # both formats of a fact share its source_id (pairing and cluster key)
    by_fact = {}
    for it in items:
        by_fact.setdefault(it.source_id, set()).add(it.variant)
    assert all(v == {"short", "mc"} for v in by_fact.values())


def test_distractors_same_kind_never_the_answer():
    facts = fixture_facts()
    continent = {c: v[0] for c, v in COUNTRIES.items()}
    for seed in range(5):
        for it in build_items(seed, 40, facts=facts, formats=("mc",)):
            meta = it.meta
            wrong = [o for j, o in enumerate(meta["choices"]) if j != it.gold]
            assert len(set(it.options)) == 4
            gold = set(alias_set(it.aliases))
            assert not gold & set(alias_set(wrong))
            if meta["relation"] == "city_country":
                assert all(o in COUNTRIES for o in wrong)
                same = [c for c in COUNTRIES if continent[c] == meta["group"] and c != it.target]
                if len(same) >= 3:
                    assert all(continent[o] == meta["group"] for o in wrong) and not meta["filled"]
                else:
                    assert meta["filled"] and set(same) <= set(wrong)
            else:
                year = int(it.target)
                assert all(int(o) // 10 == year // 10 and int(o) != year for o in wrong)


def test_items_deterministic_per_seed():
    facts = fixture_facts()
    a, b = build_items(7, 10, facts=facts), build_items(7, 10, facts=fixture_facts())
    assert a == b and [i.meta for i in a] == [i.meta for i in b]
    c = build_items(8, 10, facts=facts)
    assert [i.id for i in a] != [i.id for i in c] or [i.prompt for i in a] != [i.prompt for i in c]


def test_sampling_spreads_over_strata():
    facts = fixture_facts()
    items = build_items(0, 12, facts=facts, formats=("short",))
    strata = {(i.meta["relation"], i.meta["bucket"]) for i in items}
    all_strata = {(f.relation, f.bucket) for f in facts}
    assert strata == all_strata  # 12 facts over fewer than 12 strata: every stratum is drawn
    assert len(build_items(0, 10_000, facts=facts, formats=("short",))) == len(facts)


def test_items_consistent_with_fixture_data():
    facts = {f.id: f for f in fixture_facts()}
    for it in build_items(1, 30, facts=list(facts.values())):
        f = facts[it.source_id]
        assert it.target == f.answer and it.meta["subject"] == f.subject and f.subject in it.prompt
        if f.relation == "city_country":
            assert next(c for c in CITIES if c[0] == f.subject)[1] == it.target


# ------------------------------------------------------------------------------------------ scoring


def answer(model, items: list[AuditItem]) -> list[dict]:
    """The audit's item rows for `items`, answered by `model` the way `cleanroom audit --tasks longtail` does."""
    from cleanroom.audit.longtail import LongtailTask
    from cleanroom.audit.run import AuditConfig, answer_items

    cfg = AuditConfig(model="fake", tasks=["longtail"], out=Path("unused"))
    return answer_items(LongtailTask(), items, model, {"choice": "loglikelihood", "generate": "completion"}, cfg)


class KnowsHead:
    """A fake model: knows the facts whose bucket is head (prefers their gold, answers them right) and
    abstains on the rest; on choices it prefers the first option for facts it does not know."""

    def __init__(self, items):
        self.gold = {}
        for it in items:
            if it.meta["bucket"] == "head":
                self.gold[it.prompt] = it.target
        self.seen = []

    def loglikelihood(self, requests, advance=None):
        self.seen += requests
        out = []
        for r in requests:
            known = self.gold.get(r.context)
            lp = -1.0 if known is not None and r.continuation == " " + known else -5.0
            out.append(Loglikelihood(lp, 1, False))
        return out

    def generate_until(self, requests, advance=None):
        assert all(r.until == ("\n",) for r in requests)
        return [" " + self.gold[r.context] if r.context in self.gold else " I don't know." for r in requests]


def linear_people(n: int = 60) -> list[Fact]:
    """n people whose popularity falls linearly: head, torso and tail all hold many facts."""
    facts = [Fact(id=f"s:birth_year:{i}", source="s", relation="birth_year", subject=f"Person {i}",
                  answer=str(1700 + i), aliases=(str(1700 + i),), kind="year", group=f"{(1700 + i) // 10 * 10}s",
                  popularity={"mentions": float(n - i)}, primary="mentions", key=str(i)) for i in range(n)]
    assign_buckets(facts)
    return facts


def test_audit_answers_and_metrics_with_a_fake_model():
    facts = fixture_facts() + linear_people()
    items = build_items(0, 80, facts=facts)
    model = KnowsHead(items)
    rows = answer(model, items)
    assert len(rows) == len(items)
    mc = [it for it in items if it.kind == "choice"]
    assert len(model.seen) == 4 * len(mc) and all(r.continuation.startswith(" ") for r in model.seen)
    for r in rows:
        head = json.loads(r["meta"])["bucket"] == "head"
        if r["variant"] == "short":
            assert grade_of(r) == ("correct" if head else "not_attempted")
        elif head:
            assert r["correct"]
    m = knowledge_metrics(rows, n_boot=300, seed=0)
    short, mcm = m["formats"]["short"], m["formats"]["mc"]
    assert short["buckets"]["head"]["acc"]["value"] == 1.0
    assert short["buckets"]["tail"]["acc"]["value"] == 0.0
    assert short["overall"]["acc_given_attempted"]["value"] == 1.0
    acc, given = short["overall"]["acc"]["value"], short["overall"]["acc_given_attempted"]["value"]
    assert short["overall"]["f"]["value"] == pytest.approx(2 * acc * given / (acc + given))
    assert short["slope"]["slope"]["value"] < 0 and short["slope"]["verdict"] == "supported"
    assert mcm["slope"]["slope"]["ci_high"] < 0
    for fam in (short, mcm):
        for b in fam["buckets"].values():
            if b["n"]:
                v = b["acc"]
                assert v["ci_low"] <= v["value"] <= v["ci_high"] or np.isnan(v["ci_low"])
    assert "t/city_country/alt_names" in mcm["by_signal"]


def test_cluster_bootstrap_resamples_facts_not_items():
    # two facts, each with 50 identical items: the CI must reflect 2 clusters (wide), not 100 items
    clusters = ["a"] * 50 + ["b"] * 50
    c = np.array([1.0] * 50 + [0.0] * 50)
    point, lo, hi = cluster_bootstrap(clusters, {"c": c, "n": np.ones(100)}, _ratio("c", "n"), 2000, 0)
    assert point == 0.5 and lo == 0.0 and hi == 1.0
    same = cluster_bootstrap([str(i) for i in range(100)], {"c": np.ones(100), "n": np.ones(100)},
                             _ratio("c", "n"), 500, 0)
    assert same == (1.0, 1.0, 1.0)


def test_metrics_random_model_near_chance():
    rng = random.Random(0)

    class Random:
        def loglikelihood(self, requests, advance=None):
            return [Loglikelihood(-rng.random(), 1, False) for _ in requests]

        def generate_until(self, requests, advance=None):
            return ["Atlantis"] * len(requests)

    items = build_items(0, 40, facts=fixture_facts())
    m = knowledge_metrics(answer(Random(), items), n_boot=500, seed=1)
    mc = m["formats"]["mc"]["overall"]
    assert mc["chance"] == 0.25 and mc["acc"]["ci_low"] <= 0.25 <= mc["acc"]["ci_high"]
    short = m["formats"]["short"]["overall"]
    assert short["grades"]["incorrect"] == short["n"]
    assert short["f"] == {"value": 0.0, "ci_low": 0.0, "ci_high": 0.0}  # nothing correct: F is 0, not 0/0


def test_slope_within_relations_is_not_fooled_by_the_mix_of_relations():
    """An easy relation found only in the tail lifts the pooled tail; within relations, accuracy falls."""
    from cleanroom.audit.knowledge import head_to_tail_slope

    def row(i, rel, bucket, correct):
        meta = json.dumps({"source": "s", "relation": rel, "bucket": bucket, "buckets": {}})
        return {"source_id": f"{rel}:{i}", "meta": meta, "correct": correct}

    rows = [row(i, "hard", "head", i % 2 == 0) for i in range(20)]  # head: 0.5
    rows += [row(i + 20, "hard", "tail", i % 10 == 0) for i in range(20)]  # tail: 0.1
    rows += [row(i, "easy", "tail", True) for i in range(60)]  # an easy relation with tail facts only
    s = head_to_tail_slope(rows, n_boot=1000, seed=0)
    assert s["slope_pooled"]["value"] > 0  # the pooled tail (0.775) looks better than the head (0.5)
    assert s["slope"]["value"] == pytest.approx(-0.2)  # within "hard": (0.1 - 0.5) / 2 bucket steps
    assert s["slope"]["ci_high"] < 0 and s["verdict"] == "supported"
