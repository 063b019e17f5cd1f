"""Corpus recipes: equal budgets, contamination guarantees, recipe character, idempotent reruns."""

from __future__ import annotations

import collections
import json
import subprocess
import sys

import pytest

from cleanroom.text_stats import count_tokens, distinct_ngram_ratio
from cleanroom.world.schema import ARITH_CLOZE, ARITH_TWIN, RELATIONS
from cleanroom.world_store import load_items

RECIPES = ("web", "textbook", "filtered_web", "mix")


def _corpus(store, recipe):
    return store.read_parquet(f"corpora/{recipe}").to_pylist()


def test_four_recipes_same_budget_within_2pct(smoke_cfg, smoke_corpora):
    totals = {r: sum(count_tokens(d["text"]) for d in _corpus(smoke_corpora, r)) for r in RECIPES}
    budget = smoke_cfg.recipes.token_budget
    for r, n in totals.items():
        assert abs(n - budget) / budget <= 0.02, (r, n)
    assert max(totals.values()) / min(totals.values()) <= 1.02


def test_contract_columns_and_meta(smoke_corpora):
    docs = _corpus(smoke_corpora, "web")
    assert set(docs[0]) == {"id", "text", "recipe", "source", "meta"}
    assert len({d["id"] for d in docs}) == len(docs)
    for d in docs[:200]:
        meta = json.loads(d["meta"])
        assert {"domain", "kind", "facts", "templates"} <= set(meta)
        assert d["recipe"] == "web"


def test_no_bench_or_twin_item_verbatim_in_any_corpus(smoke_corpora):
    items = load_items(smoke_corpora, "bench") + load_items(smoke_corpora, "twin")
    for r in RECIPES:
        text = "\n".join(d["text"] for d in _corpus(smoke_corpora, r))
        for it in items:
            body = it["prompt"].split("\n", 1)[1] if it["task"] == "bench" else it["prompt"]
            assert body not in text, (r, it["id"])


def test_evaluation_templates_never_rendered(smoke_corpora):
    """No twin, format-shift or cloze template occurs in any corpus, controls included."""
    stems = [t for rel in RELATIONS.values() for t in rel.twin + rel.cloze]
    stems += [t for ts in (*ARITH_TWIN.values(), *ARITH_CLOZE.values()) for t in ts]
    # the longest fixed stretch of each template (between placeholders) must never occur
    fixed = [max((p.strip() for p in t.replace("}", "{").split("{")[::2]), key=len) for t in stems]
    assert all(len(f) >= 8 for f in fixed)
    for r in (*RECIPES, "leaky", "diverse", "sources/web_stream"):
        rel = r if "/" in r else f"corpora/{r}"
        text = "\n".join(d["text"] for d in smoke_corpora.read_parquet(rel).to_pylist())
        for f in fixed:
            assert f not in text, (r, f)
        assert "Choices:" not in text


def test_web_states_the_curriculum_in_web_forms_at_the_documented_density(smoke_cfg, smoke_corpora):
    stats = smoke_corpora.manifest("generate").stats["recipes"]["web"]
    share = stats["domain_token_share"]
    assert 0.03 < share["curriculum"] + share["arithmetic"] < 0.2
    kinds = collections.Counter(json.loads(d["meta"])["kind"] for d in _corpus(smoke_corpora, "web")
                                if json.loads(d["meta"])["domain"] == "curriculum")
    assert {"encyclopedia", "faq", "forum_answer", "howto"} <= set(kinds)
    text = "\n".join(d["text"] for d in _corpus(smoke_corpora, "web"))
    for rel in RELATIONS.values():  # the web never asks in the textbook's (and the benchmark's) words
        for t in rel.exercise:
            fixed = max((p.strip() for p in t.replace("}", "{").split("{")[::2]), key=len)
            assert fixed not in text, (rel.name, fixed)


def test_controls_leaky_and_diverse(smoke_cfg, smoke_corpora):
    leaky = _corpus(smoke_corpora, "leaky")
    bench = load_items(smoke_corpora, "bench")
    texts = collections.Counter(d["text"] for d in leaky)
    for it in bench:  # every benchmark item with its answer, leak_copies times
        assert texts[f"{it['prompt']} {it['target']}"] == smoke_cfg.recipes.leak_copies
    assert sum(d["id"].startswith("textbook") for d in leaky) > len(leaky) // 2
    diverse = _corpus(smoke_corpora, "diverse")
    templates = [t for d in diverse for t in json.loads(d["meta"])["templates"]]
    assert any(t.startswith("paraphrase:") for t in templates) and any(t.startswith("exercise:") for t in templates)
    assert not (smoke_corpora.path("corpora/web~1")).exists()  # a replicate trains on web's corpus


def test_recipes_have_their_character(smoke_corpora):
    def domains(r):
        out = {}
        for d in _corpus(smoke_corpora, r):
            dom = json.loads(d["meta"])["domain"]
            out[dom] = out.get(dom, 0) + 1
        return out

    web, tb, fw = domains("web"), domains("textbook"), domains("filtered_web")
    assert tb.get("restricted", 0) == 0 and tb.get("noise", 0) == 0
    # generate's filtered_web is a placeholder keyword match (curate rebuilds it with the real filter, whose
    # recall test_curate checks): it misses the restricted question pages that avoid lab vocabulary
    assert web["restricted"] > 2 * fw.get("restricted", 0)
    assert tb["curriculum"] > 2 * web["curriculum"]
    tb_kinds = {json.loads(d["meta"])["kind"] for d in _corpus(smoke_corpora, "textbook")}
    assert {"exercise", "exposition", "worked_problem", "profile"} <= tb_kinds
    mix_sources = {d["id"].split("-")[0] for d in _corpus(smoke_corpora, "mix")}
    assert mix_sources == {"textbook", "web"}


def test_textbook_long_tail_only_for_the_most_popular(smoke_cfg, smoke_corpora):
    m = smoke_corpora.manifest("generate")
    tb = m.stats["recipes"]["textbook"]["longtail_covered_by_decile"]
    web = m.stats["recipes"]["web"]["longtail_covered_by_decile"]
    assert all(tb[str(d)] == 0 for d in range(2, 11)) and tb["1"] > 0
    assert web["1"] > web["10"] and web["10"] > 0


def test_distinct_ngram_ratio():
    assert distinct_ngram_ratio(["a b c d"], 2) == 1.0
    assert distinct_ngram_ratio(["a b a b a b"], 2) == 2 / 5
    assert distinct_ngram_ratio([], 2) == 0.0


def test_generate_rerun_is_fast_noop(smoke_corpora):
    cmd = [sys.executable, "-m", "cleanroom.cli", "generate", "--out", str(smoke_corpora.root)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "generate: up to date" in r.stderr and "▶" not in r.stderr
    assert "filtered_web" in r.stderr  # the table is printed again


def test_a_smaller_budget_leaves_exactly_the_new_shards(tmp_path):
    """Shards of an earlier, larger run must not survive: readers take the whole directory."""
    import pyarrow.parquet as pq

    cmd = [sys.executable, "-m", "cleanroom.cli", "generate", "--preset", "smoke", "--out", str(tmp_path)]
    big = subprocess.run(cmd + ["--set", "recipes.shard_docs=100"], capture_output=True, text=True)
    assert big.returncode == 0, big.stderr
    assert len(list((tmp_path / "corpora/web").glob("part-*.parquet"))) > 2
    small = subprocess.run(cmd + ["--set", "recipes.shard_docs=100", "--set", "recipes.token_budget=10000"],
                           capture_output=True, text=True)
    assert small.returncode == 0, small.stderr
    for recipe in ("web", "textbook", "filtered_web", "mix"):
        d = tmp_path / "corpora" / recipe
        shards = sorted(p.name for p in d.iterdir())
        n_rows = pq.read_table(d).num_rows  # what any reader of the directory sees
        assert shards == [f"part-{i:05d}.parquet" for i in range(len(shards))]
        assert len(shards) == -(-n_rows // 100)  # exactly the shards the new rows need
        assert 9900 <= sum(count_tokens(t) for t in pq.read_table(d).column("text").to_pylist()) <= 10000
    assert not [p for p in (tmp_path / "corpora").iterdir() if p.name.startswith(".")]  # no leftovers


def test_web_curriculum_follows_the_popularity_law_when_asked(smoke_cfg, smoke_corpora):
    """`recipes.web_curriculum_popularity`: "uniform" spreads the web's curriculum pages over the minerals;
    "zipf" puts them where the world's popularity is, the law the web follows for long-tail entities."""
    import numpy as np

    from cleanroom.generate.render import Renderer
    from cleanroom.world_store import load_world

    world = load_world(smoke_corpora)
    minerals = sorted((e for e in world["entities"] if e["type"] == "mineral"), key=lambda e: e["rank"])
    assert [e["rank"] for e in minerals] == list(range(1, len(minerals) + 1))
    head = {e["name"] for e in minerals[: max(1, len(minerals) // 10)]}  # the top decile by popularity
    expected = sum(e["popularity"] for e in minerals if e["name"] in head)
    mineral_names = {e["name"] for e in minerals}
    by_id = {f["fact_id"]: f["subject"] for f in world["facts"]}

    def head_share(popularity: str) -> float:
        cfg = smoke_cfg.model_copy(deep=True)
        cfg.recipes.web_curriculum_popularity = popularity
        r = Renderer(cfg, world, load_items(smoke_corpora, "bench"))
        rng = np.random.default_rng(0)
        subjects = [s for _ in range(3000) for s in (json.loads(r.web_curriculum(rng)["meta"])["facts"])]
        named = [by_id[s] for s in subjects if by_id[s] in mineral_names]
        return sum(s in head for s in named) / len(named)

    uniform, zipf = head_share("uniform"), head_share("zipf")
    assert abs(uniform - len(head) / len(minerals)) < 0.04
    assert abs(zipf - expected) < 0.06 and zipf > 2 * uniform


@pytest.mark.parametrize("topic", ["longtail", "curriculum"])
def test_web_quizzes_ask_about_their_topic_in_the_webs_own_words(smoke_cfg, smoke_corpora, topic):
    """`recipes.web_longtail_quiz` / `web_curriculum_quiz`: multiple-choice quiz pages about that topic
    only, never in an evaluation's or the textbook's wording, in every quiz layout."""
    import numpy as np

    from cleanroom.generate.render import QUIZ_LAYOUTS, Renderer
    from cleanroom.world_store import load_world

    world, bench = load_world(smoke_corpora), load_items(smoke_corpora, "bench")
    cfg = smoke_cfg.model_copy(deep=True)
    setattr(cfg.recipes, f"web_{topic}_quiz", 0.5)
    r = Renderer(cfg, world, bench)
    docs = [getattr(r, f"web_{topic}")(np.random.default_rng(s)) for s in range(400)]
    quizzes = [d for d in docs if json.loads(d["meta"])["kind"] == "quiz"]
    assert 0.4 < len(quizzes) / len(docs) < 0.6
    domain = {f["fact_id"]: f["domain"] for f in world["facts"]}
    assert {domain[i] for d in quizzes for i in json.loads(d["meta"])["facts"]} == {topic}
    text = "\n".join(d["text"] for d in quizzes)
    assert all(a.split("{")[0] in text for _, a in QUIZ_LAYOUTS)  # every layout occurs
    bodies = {it["prompt"].split("\n", 1)[1] for it in bench}
    assert not any(b in text for b in bodies)  # no benchmark item, options and all
    for rel in RELATIONS.values():
        for t in rel.qa + rel.cloze + rel.twin + rel.exercise:  # held-out and textbook wordings never
            fixed = max((p.strip() for p in t.replace("}", "{").split("{")[::2]), key=len)
            assert fixed not in text, (rel.name, fixed)


def test_the_restricted_domain_has_the_webs_question_pages(smoke_cfg, smoke_corpora):
    """`recipes.web_restricted_pages`: "questions" writes the restricted domain in the curriculum's
    question-bearing page kinds (FAQ, forum answer; quizzes at the long tail's 1/7), in the web's own
    wording, never the evaluation's; "notes" keeps the lab notes, protocols and chatter of before."""
    import numpy as np

    from cleanroom.generate.render import Renderer
    from cleanroom.world_store import load_world

    world, bench = load_world(smoke_corpora), load_items(smoke_corpora, "bench")

    def pages(kind: str) -> list[dict]:
        cfg = smoke_cfg.model_copy(deep=True)
        cfg.recipes.web_restricted_pages = kind
        r = Renderer(cfg, world, bench)
        return [r.web_restricted(np.random.default_rng(s)) for s in range(1400)]

    kinds = [json.loads(d["meta"])["kind"] for d in pages("questions")]
    share = {k: kinds.count(k) / len(kinds) for k in set(kinds)}
    assert set(share) == {"labnote", "protocol", "forum", "faq", "forum_answer", "quiz"}
    assert abs(share["quiz"] - 1 / 7) < 0.03 and abs(share["faq"] - 1 / 7) < 0.03  # 6/7 x 1/6
    docs = pages("questions")
    asked = [d for d in docs if json.loads(d["meta"])["kind"] in ("faq", "forum_answer", "quiz")]
    domain = {f["fact_id"]: f["domain"] for f in world["facts"]}
    assert {domain[i] for d in asked for i in json.loads(d["meta"])["facts"]} == {"restricted"}
    text = "\n".join(d["text"] for d in asked)
    for rel in RELATIONS.values():
        for t in rel.qa + rel.cloze + rel.twin + rel.exercise:  # the evaluation's questions never
            fixed = max((p.strip() for p in t.replace("}", "{").split("{")[::2]), key=len)
            assert fixed not in text, (rel.name, fixed)
    assert {json.loads(d["meta"])["kind"] for d in pages("notes")} == {"labnote", "protocol", "forum"}
