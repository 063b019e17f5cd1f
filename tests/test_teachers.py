"""Teacher protocol, request cache, and the real-teacher generation driver (procedural teacher: no model)."""

from __future__ import annotations

import json
import sqlite3

import pyarrow.parquet as pq
import pytest

from cleanroom.collect.teacher import RealGenConfig, generate_corpus
from cleanroom.config import TeacherCorpus
from cleanroom.errors import ConfigError, ModelError
from cleanroom.store import RunStore
from cleanroom.teachers import GenParams, Teacher, make_teacher, request_key
from cleanroom.teachers.cache import RequestCache
from cleanroom.teachers.procedural import ProceduralTeacher
from cleanroom.teachers.protocol import Completion
from cleanroom.text_stats import count_tokens


def _gen(source, **kw) -> RealGenConfig:
    """A procedural-teacher corpus from `source` (the run-level knobs in `kw`)."""
    return RealGenConfig(spec=TeacherCorpus(kind="teacher", teacher="procedural", source=str(source)), **kw)


def _seed_file(tmp_path, n=30):
    path = tmp_path / "seeds.jsonl"
    path.write_text("".join(json.dumps({"title": f"Topic{i}", "passage": f"Topic{i} is studied by many. It has "
                                        f"{i} rules. Each rule matters for Topic{i}. Scholars wrote about it."})
                            + "\n" for i in range(n)))
    return str(path)


class Counting:
    """Wraps a teacher and records every prompt it is asked to generate."""

    def __init__(self, inner):
        self.inner, self.name, self.model, self.prompts = inner, inner.name, inner.model, []

    def generate(self, prompts, params, on_result=None):
        self.prompts += list(prompts)
        return self.inner.generate(prompts, params, on_result)


def test_request_key_depends_on_every_part():
    p = GenParams()
    k = request_key("openai", "m", "hi", p)
    assert k == request_key("openai", "m", "hi", GenParams())
    others = [request_key("transformers", "m", "hi", p), request_key("openai", "m2", "hi", p),
              request_key("openai", "m", "hi!", p), request_key("openai", "m", "hi", GenParams(temperature=0.1))]
    assert len({k, *others}) == 5


def test_cache_is_wal_and_survives_reopen(tmp_path):
    path = tmp_path / "c.sqlite"
    with RequestCache(path) as c:
        key = c.put("t", "m", "prompt", GenParams(), Completion("text", 3, 1))
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with RequestCache(path) as c:
        got = c.get_many([key, "missing"])
        assert list(got) == [key] and got[key].text == "text" and got[key].cached and c.count() == 1


def test_procedural_teacher_satisfies_protocol_and_renders_world_facts():
    facts = [{"subject": "Zorbite", "relation": "color", "object": "amber"},
             {"subject": "Zorbite", "relation": "luster", "object": "waxy"}]
    t = ProceduralTeacher(facts)
    assert isinstance(t, Teacher)
    seen = []
    (c,) = t.generate(["Write about Zorbite."], GenParams(), on_result=lambda i, c: seen.append(i))
    assert "amber" in c.text and "waxy" in c.text and seen == [0]
    assert c.completion_tokens == count_tokens(c.text)
    assert t.generate(["Write about Zorbite."], GenParams())[0].text == c.text  # seeded by the prompt


def test_driver_writes_the_corpus_contract_and_manifest(tmp_path):
    store = RunStore(tmp_path / "run")
    stats = generate_corpus(ProceduralTeacher(), store,
                            _gen(_seed_file(tmp_path), tokens=600, min_doc_tokens=5))
    table = pq.read_table(store.path("corpora/textbook"))
    assert table.column_names == ["id", "text", "recipe", "source", "meta"]
    rows = table.to_pylist()
    assert len(rows) == stats["docs"] > 5 and len({r["id"] for r in rows}) == len(rows)
    meta = json.loads(rows[0]["meta"])
    assert meta["teacher"] == "procedural" and meta["prompt"]["format"] in ("textbook", "exercises")
    assert meta["prompt"]["passage"] and meta["prompt"]["topic"] in meta["prompt"]["passage"]
    m = store.manifest("teacher/textbook")
    assert m is not None and m.stats["tokens"] == stats["tokens"]
    assert set(m.stats["diversity"]) >= {"distinct_1", "distinct_2", "distinct_3", "top_opening_share",
                                         "embedding_spread"}
    assert m.stats["grounding"]["grounded_share"] == 1.0
    store.verify(m)


def test_budget_stops_after_the_document_that_reaches_it(tmp_path):
    store = RunStore(tmp_path / "run")
    stats = generate_corpus(ProceduralTeacher(), store,
                            _gen(_seed_file(tmp_path), tokens=500, min_doc_tokens=5, embed=False))
    texts = pq.read_table(store.path("corpora/textbook")).column("text").to_pylist()
    total = sum(count_tokens(t) for t in texts)
    assert total == stats["tokens"] >= 500
    assert total - count_tokens(texts[-1]) < 500


def test_rerun_sends_nothing_and_gives_the_same_corpus(tmp_path):
    src = _seed_file(tmp_path)
    store = RunStore(tmp_path / "run")
    first = Counting(ProceduralTeacher())
    s1 = generate_corpus(first, store, _gen(src, tokens=800, min_doc_tokens=5, embed=False))
    before = pq.read_table(store.path("corpora/textbook")).to_pylist()
    again = Counting(ProceduralTeacher())
    s2 = generate_corpus(again, store, _gen(src, tokens=800, min_doc_tokens=5, embed=False))
    assert again.prompts == [] and s2["requests"]["sent_this_run"] == 0
    assert s2["requests"]["cache_hits"] >= s1["docs"]
    assert pq.read_table(store.path("corpora/textbook")).to_pylist() == before
    bigger = Counting(ProceduralTeacher())  # a larger budget only sends the new prompts
    generate_corpus(bigger, store, _gen(src, tokens=1600, min_doc_tokens=5, embed=False))
    assert bigger.prompts and not set(bigger.prompts) & set(first.prompts)


def test_identical_prompts_are_sent_once(tmp_path):
    one_topic = tmp_path / "one.txt"
    one_topic.write_text("volcanoes\n")  # one topic: prompts soon repeat
    t = Counting(ProceduralTeacher())
    stats = generate_corpus(t, RunStore(tmp_path / "run"),
                            _gen(str(one_topic), tokens=10_000, min_doc_tokens=1, wave=16,
                                          embed=False))
    assert len(t.prompts) == len(set(t.prompts))
    assert stats["requests"]["duplicate_prompts"] > 0


def test_make_teacher_errors():
    with pytest.raises(ConfigError, match="--base-url"):
        make_teacher("openai", None)
    with pytest.raises(ConfigError, match="unknown teacher"):
        make_teacher("gpt5", "x")
    with pytest.raises(ModelError, match="not found"):
        make_teacher("transformers", "/no/such/model")
