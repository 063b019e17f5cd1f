"""Curation: planted duplicates and evaluation items are found; the safety filter is honest; the stage
and the standalone CLI write curated corpora, lineage and a summary."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from synthetic_corpus import planted_corpus, random_text, vocabulary
from typer.testing import CliRunner

from cleanroom.cli import app
from cleanroom.config import ConfigError, CurateConfig
from cleanroom.corpus import corpus_dir
from cleanroom.curate import (
    Decontaminate,
    Document,
    ExactDedup,
    LocalExecutor,
    NearDedup,
    QualityFilter,
    SafetyFilter,
    build_steps,
)
from cleanroom.curate.base import require
from cleanroom.curate.decontam import items_from_rows
from cleanroom.errors import MissingDependencyError
from cleanroom.pipeline import Pipeline
from cleanroom.store import RunStore
from cleanroom.world.schema import TASKS


def doc(i: int | str, text: str, **meta) -> Document:
    return Document(id=str(i), text=text, meta=meta, row={"id": str(i), "text": text})


def removed_ids(step) -> set[str]:
    return {r.doc_id for r in step.removed}


# ---------------------------------------------------------------- planted duplicates


@pytest.fixture(scope="module")
def planted():
    return planted_corpus(n_base=1200, n_exact=60, n_near=150, seed=3, min_words=150, max_words=300, max_edits=2)


def test_exact_and_near_dedup_find_planted_copies(planted):
    exact, near = ExactDedup(), NearDedup(shingle_size=5, num_perm=128, bands=16, threshold=0.8)
    result = LocalExecutor([exact, near]).run(planted.docs)
    n_clean = len(planted.docs) - len(planted.exact) - len(planted.near)
    # exact dedup: every exact copy (verbatim, upper-cased or re-spaced), nothing else
    assert removed_ids(exact) == planted.exact
    # near dedup: >= 95% of the near-duplicates, <= 1% false removals
    found = removed_ids(near) & planted.near
    false = removed_ids(near) - planted.near
    assert len(found) >= 0.95 * len(planted.near), f"near-dup recall {len(found)}/{len(planted.near)}"
    assert len(false) <= 0.01 * n_clean, f"{len(false)} false near-dup removals"
    # lineage names the kept copy; stats add up
    by_id = {d.id: d for d in planted.docs}
    r = near.removed[0]
    assert r.step == "near_dedup" and r.matched in by_id and r.score >= 0.8
    assert len(result.kept) == len(planted.docs) - len(exact.removed) - len(near.removed)
    assert near.stats.docs_in - near.stats.docs_out == len(near.removed)
    assert result.steps[0]["docs_in"] == len(planted.docs)


def test_executor_shards_by_rank(planted):
    shards = [LocalExecutor([ExactDedup()]).run(planted.docs[:100], rank=r, world_size=3) for r in range(3)]
    assert sorted(d.id for s in shards for d in s.kept) == sorted(d.id for d in planted.docs[:100])
    assert [d.id for d in shards[1].kept] == [d.id for d in planted.docs[1:100:3]]


def test_near_dedup_keeps_the_first_copy():
    rng = np.random.default_rng(0)
    vocab = vocabulary(rng, 500)
    text = random_text(rng, vocab, 200)
    near = NearDedup()
    kept = list(near.run([doc("a", text), doc("b", text.replace(".", "!", 1)), doc("c", random_text(rng, vocab, 200))]))
    assert [d.id for d in kept] == ["a", "c"]
    assert near.removed[0].matched == "a"


def test_bands_larger_than_permutations_is_a_config_error():
    with pytest.raises(ConfigError, match="curate.bands"):
        NearDedup(num_perm=16, bands=32)


# ---------------------------------------------------------------- planted evaluation items


def _light_edit(text: str, rng: np.random.Generator) -> str:
    """One or two edits a copy-paste or a light rewrite makes: renumbering, layout, case, a word."""
    edits = [
        lambda t: t.replace(t.split(".")[0], t.split()[0] + " " + str(int(rng.integers(50, 99))), 1)
        if t.split()[0] in ("Exercise", "Question", "Practice", "Problem") else t + " ",
        lambda t: t.replace("\n", " "),
        lambda t: t.lower(),
        lambda t: t.replace("Answer:", "The answer:"),
        lambda t: t.replace("?", " ?").replace(" the ", " "),
    ]
    for k in rng.choice(len(edits), size=int(rng.integers(1, 3)), replace=False):
        text = edits[k](text)
    return text


def test_decontamination_finds_planted_items(smoke_corpora):
    rows = smoke_corpora.read_parquet("world/items").to_pylist()
    items = items_from_rows(rows)
    rng = np.random.default_rng(7)
    vocab = vocabulary(rng, 3000)
    docs = [doc(f"base-{i}", random_text(rng, vocab, int(rng.integers(60, 160)))) for i in range(1200)]
    planted: dict[str, str] = {}
    picks = rng.choice(len(rows), size=120, replace=False)
    for n, k in enumerate(picks):
        row = rows[k]
        text = f"{row['prompt']} {row['target']}"
        if n % 2:
            text = _light_edit(text, rng)
        host = docs[int(rng.integers(len(docs)))].text.split(". ")
        cut = int(rng.integers(len(host)))
        pid = f"planted-{n}"
        planted[pid] = row["id"]
        docs.append(doc(pid, ". ".join(host[:cut]) + ".\n" + text + "\n" + ". ".join(host[cut:])))
    # hard negatives, as the textbook writes them (in-format teaching): the benchmark's exercise templates
    # about subjects no item asks about, renumbered, options in another order (two per benchmark item;
    # no recipe writes the other tasks' templates, so they are no realistic negatives)
    negatives = 0
    bench_rows = [k for k, r in enumerate(rows) if r["task"] == "bench"]
    for k in [k for k in bench_rows for _ in range(2)]:
        row = rows[k]
        if not row["subject"] or row["subject"] not in row["prompt"]:
            continue
        fresh = "".join(rng.choice(list("bdgklmnprstvz")) + rng.choice(list("aeiou")) for _ in range(4)).title()
        lines = row["prompt"].replace(row["subject"], fresh).split("\n")
        if lines[0].split()[0] in ("Exercise", "Question", "Practice", "Problem"):
            lines[0] = f"{lines[0].split()[0]} {int(rng.integers(50, 99))}."
        opts = [ln for ln in lines if len(ln) > 2 and ln[1:3] == ". " and ln[0] in "ABCD"]
        if opts:
            bodies = [ln[3:] for ln in opts]
            bodies = [bodies[i] for i in rng.permutation(len(bodies))]
            start = lines.index(opts[0])
            lines[start:start + len(opts)] = [f"{'ABCD'[i]}. {b}" for i, b in enumerate(bodies)]
        if lines[0].startswith("Choices: "):  # the twin format lists its options inline
            inline = lines[0][len("Choices: "):].rstrip(".").split(", ")
            lines[0] = "Choices: " + ", ".join(inline[i] for i in rng.permutation(len(inline))) + "."
        docs.append(doc(f"neg-{negatives}", random_text(rng, vocab, 40) + "\n" + "\n".join(lines) + " "
                        + row["target"]))
        negatives += 1
    order = rng.permutation(len(docs))
    docs = [docs[i] for i in order]
    step = Decontaminate(items, ngram=13, ratio=0.8)
    list(step.run(docs))
    removed = {r.doc_id: r for r in step.removed}
    found = [pid for pid, item in planted.items() if pid in removed and removed[pid].matched == item]
    false = [i for i in removed if i not in planted]
    assert negatives > 50
    assert len(found) >= 0.95 * len(planted), f"found {len(found)}/{len(planted)}"
    assert len(false) <= 0.01 * (len(docs) - len(planted)), f"false removals: {false[:5]}"
    assert all(r.detail in TASKS for r in step.removed)
    assert {lk.item_id for lk in step.leaks} >= set(planted[p] for p in found)


def test_decontamination_keeps_other_subjects_same_template(smoke_corpora):
    """In-format teaching (a benchmark-format exercise about another subject, numbered differently, options
    reordered) is kept; the item itself, renumbered, is removed. (A copy that differs from an item *only*
    in its subject may be flagged: one word can be a typo or a new question, and we err on removal.)"""
    rows = smoke_corpora.read_parquet("world/items").to_pylist()
    step = Decontaminate(items_from_rows(rows))
    bench = [r for r in rows if r["task"] == "bench" and r["kind"] == "choice"]
    docs, expect = [], {}
    for k, row in enumerate(bench[:20]):
        header, rest = row["prompt"].split("\n", 1)
        renumbered = f"{header.split()[0]} {(int(header.split()[1].rstrip('.')) + 7) % 39 + 1}.\n{rest}"
        docs.append(doc(f"same-{k}", renumbered + " " + row["target"]))
        expect[f"same-{k}"] = row["id"]
        # the textbook's own exercises: another subject, options in another order
        lines = renumbered.replace(row["subject"], "Zorbalite").split("\n")
        lines[2:6] = [f"{'ABCD'[i]}. {lines[2 + j][3:]}" for i, j in enumerate([2, 0, 3, 1])]
        docs.append(doc(f"other-{k}", "\n".join(lines) + " " + row["target"]))
    list(step.run(docs))
    removed = {r.doc_id: r.matched for r in step.removed}
    assert not [d for d in removed if d.startswith("other")]
    assert sum(removed.get(d) == item for d, item in expect.items()) >= 19


# ---------------------------------------------------------------- quality


def test_quality_rules():
    good = ("The color of Jashisite is teal. Jashisite belongs to the Gigerane group, and its samples are "
            "mined in the north of the region where the old roads meet.")
    docs = [
        doc("good", good),
        doc("short", "bump great post"),
        doc("repeated", "\n".join(["agreed with this"] * 12)),
        doc("spam", "BUY NOW!!! best loans deals $$$ click here >>> loansloans $$$ *** ### cheap loans"),
        doc("boiler", "We use cookies to improve your experience. Accept | Reject\nPrivacy Policy and Terms of "
                      "Service apply here today\nSubscribe to our newsletter for the latest offers and news"),
        doc("arith", "Practice 34.\nA box holds 6 lanterns. Shosla adds 8 lanterns. How many lanterns are in the "
                     "box?\nAnswer: 14\nSolution: 6 + 8 = 14."),
    ]
    q = QualityFilter()
    kept = [d.id for d in q.run(docs)]
    assert kept == ["good", "arith"]
    reasons = {r.doc_id: r.reason for r in q.removed}
    assert reasons == {"short": "too_short", "repeated": "repeated_lines", "spam": "symbols", "boiler": "boilerplate"}


def test_quality_classifier_hook():
    q = QualityFilter(scorer=lambda texts: [0.9 if "teal" in t else 0.1 for t in texts])
    kept = [d.id for d in q.run([doc("a", "the stone is teal and it is in the box over there now"),
                                 doc("b", "the stone is grey and it is in the box over there now")])]
    assert kept == ["a"]
    assert q.removed[0].reason == "classifier" and q.removed[0].score == pytest.approx(0.1)


# ---------------------------------------------------------------- safety


def test_safety_cross_fitting_is_honest():
    """With random labels an in-sample model memorises (high training accuracy) while the cross-fitted
    scores are no better than chance: no document is scored by a model trained on it."""
    rng = np.random.default_rng(1)
    vocab = vocabulary(rng, 3000)
    docs = [doc(i, "synthesis " + random_text(rng, vocab, 30), domain="restricted" if rng.random() < 0.3 else "other")
            for i in range(400)]
    safety = SafetyFilter(blocklist=[r"synthesis"], folds=5, seed=0)
    safety.fit(docs)
    labels = np.array([d.meta["domain"] == "restricted" for d in docs])
    in_sample = safety._model.predict(safety._vectorizer().transform([d.text for d in docs]))
    assert (in_sample == labels).mean() > 0.95
    m = safety.metrics
    balanced = (m["classifier_recall"] + 1 - m["classifier_fpr"]) / 2
    assert 0.35 < balanced < 0.65, m


def test_safety_filter_on_the_world(smoke_corpora):
    docs = [Document.from_row(r) for r in smoke_corpora.read_parquet("sources/web_stream").to_pylist()]
    safety = SafetyFilter(folds=5, seed=0)
    safety.fit(docs)
    kept = list(safety.run(docs))
    m = safety.metrics
    assert m["n_restricted"] > 50 and m["recall"] >= 0.9 and m["fpr"] <= 0.05, m
    # only blocklist-flagged documents are ever removed, and the lineage says why
    assert all(safety.flagged(next(d.text for d in docs if d.id == r.doc_id)) for r in safety.removed)
    assert len(kept) + len(safety.removed) == len(docs)
    assert all(r.reason == "restricted" and r.score >= 0.5 for r in safety.removed)


def test_safety_needs_labels():
    from cleanroom.store import StoreError

    with pytest.raises(StoreError, match="world-labelled"):
        SafetyFilter().fit([doc(i, "plain text") for i in range(20)])


def test_missing_dependency_names_the_pip_package():
    with pytest.raises(MissingDependencyError, match="pip install not-a-package"):
        require("not_a_module_cleanroom", "not-a-package")


def test_unknown_step_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown step `dedupe`"):
        build_steps(CurateConfig(steps=["dedupe"]), [])


# ---------------------------------------------------------------- the stage and the CLI


@pytest.fixture(scope="module")
def curated(smoke_corpora, smoke_cfg, tmp_path_factory):
    root = tmp_path_factory.mktemp("curated")
    shutil.copytree(smoke_corpora.root, root, dirs_exist_ok=True)
    store = RunStore(root)
    Pipeline(smoke_cfg, store).ensure("curate")
    return store


def test_curate_stage_outputs(curated, smoke_cfg):
    store, budget = curated, smoke_cfg.recipes.token_budget
    summary = json.loads(store.path("curation/summary.json").read_text())
    assert corpus_dir(smoke_cfg, store, "web~1") == "curated/web"  # a replicate trains on its recipe's
    for recipe in smoke_cfg.recipes.names:
        assert corpus_dir(smoke_cfg, store, recipe) == f"curated/{recipe}"
        table = store.read_parquet(f"curated/{recipe}")
        assert table.column_names == ["id", "text", "recipe", "source", "meta"]
        assert set(table.column("recipe").to_pylist()) == {recipe}
        lineage = pq.read_table(store.path(f"curation/{recipe}/removed.parquet"))
        assert lineage.column_names == ["id", "recipe", "step", "reason", "score", "matched", "detail"]
        assert not set(lineage.column("id").to_pylist()) & set(table.column("id").to_pylist())
        s = summary["recipes"][recipe]
        assert s["docs_out"] == table.num_rows and s["tokens_out"] <= budget
    # web keeps the restricted domain; filtered web has (almost) none of it; same budget within 10%
    rec = summary["recipes"]
    assert rec["web"]["domains"]["restricted"] > 50
    assert rec["filtered_web"]["domains"].get("restricted", 0) <= 0.1 * rec["web"]["domains"]["restricted"]
    assert rec["filtered_web"]["tokens_out"] >= 0.9 * budget
    steps = [s["step"] for s in rec["filtered_web"]["steps"]]
    assert steps == ["exact_dedup", "near_dedup", "decontaminate", "quality", "safety"]
    assert "safety" not in [s["step"] for s in rec["web"]["steps"]]
    web_steps = {s["step"]: s for s in rec["web"]["steps"]}
    assert web_steps["exact_dedup"]["removed_by_kind"]["duplicate"] > 0
    assert web_steps["quality"]["removed_by_kind"].get("spam", 0) > 0
    sf = summary["safety"]
    assert sf["recall"] >= 0.9 and sf["fpr"] <= 0.05 and sf["n_restricted"] > 0
    assert set(summary["decontamination"]) == set(TASKS)
    m = store.manifest("curate")
    assert m is not None and m.stats["safety"]["recall"] == sf["recall"]


def test_curate_disabled_uses_generated_corpora(curated, smoke_cfg, tmp_path):
    shutil.copytree(curated.root, tmp_path, dirs_exist_ok=True)
    store = RunStore(tmp_path)
    cfg = smoke_cfg.model_copy(deep=True)
    cfg.curate.enabled = False
    Pipeline(cfg, store).ensure("curate")
    assert not store.path("curated/web").exists()
    assert corpus_dir(cfg, store, "web") == "corpora/web"


def test_curate_rerun_is_a_noop(curated, smoke_cfg):
    pipe = Pipeline(smoke_cfg, curated)
    pipe.ensure("curate")
    assert "curate" in pipe.skipped


def test_cli_standalone(tmp_path, smoke_corpora):
    rows = smoke_corpora.read_parquet("corpora/web").to_pylist()[:300]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "in.parquet")
    runner = CliRunner()
    res = runner.invoke(app, ["curate", "--input", str(tmp_path / "in.parquet"), "--output",
                              str(tmp_path / "out.parquet"), "--eval-items", str(smoke_corpora.path("world/items")),
                              "--preset", "smoke"])
    assert res.exit_code == 0, res.output
    kept = pq.read_table(tmp_path / "out.parquet")
    removed = pq.read_table(tmp_path / "out.removed.parquet")
    assert kept.num_rows + removed.num_rows == 300
    assert kept.column_names == list(rows[0])
    assert json.loads((tmp_path / "out.summary.json").read_text())["recipes"]["in"]["docs_out"] == kept.num_rows
    res = runner.invoke(app, ["curate", "--input", str(tmp_path / "missing.parquet"), "--output", str(tmp_path / "o")])
    assert res.exit_code == 2 and "does not exist" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["curate", "--input", str(tmp_path / "in.parquet")])
    assert res.exit_code == 2 and "--output" in res.output


def test_dedup_benchmark_runs(capsys, monkeypatch):
    """The benchmark's JSON has both sides on the same corpus; ours is at least as good at recall."""
    from doubles import REPO, load_script

    monkeypatch.syspath_prepend(str(REPO / "bench"))  # its shared helpers (bench/benchlib)
    module = load_script("bench/dedup_throughput.py")
    out = module.main(["--docs", "600", "--repeats", "1"])
    assert json.loads(capsys.readouterr().out)["speedup"] == out["speedup"] > 0
    assert out["ours"]["recall"] >= out["datasketch"]["recall"] and out["ours"]["recall"] >= 0.95
    assert out["ours"]["false_removals"] == 0
