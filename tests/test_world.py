"""World generator: one seed determines everything; the pieces the experiment relies on are there."""

from __future__ import annotations

import collections

from cleanroom.config import load_config
from cleanroom.pipeline import Pipeline
from cleanroom.store import RunStore, sha256_file
from cleanroom.world.build import generate_world
from cleanroom.world.items import build_items
from cleanroom.world.stage import load_items, load_world


def _checksums(root):
    return {str(p.relative_to(root)): sha256_file(p) for p in sorted((root / "world").rglob("*")) if p.is_file()}


def test_same_seed_byte_identical_other_seed_differs(tmp_path):
    cfg = load_config("smoke")
    for name in ("a", "b"):
        Pipeline(cfg, RunStore(tmp_path / name)).ensure("world")
    Pipeline(load_config("smoke", overrides=["seed=1"]), RunStore(tmp_path / "c")).ensure("world")
    a, b, c = (_checksums(tmp_path / n) for n in "abc")
    assert a == b and len(a) == 9
    assert all(a[k] != c[k] for k in a)


def test_sizes_popularity_and_restricted_split(smoke_cfg, smoke_corpora):
    w = load_world(smoke_corpora)
    kinds = collections.Counter(e["type"] for e in w["entities"])
    assert kinds["mineral"] == smoke_cfg.world.n_elements
    assert kinds["person"] == smoke_cfg.world.n_people and kinds["work"] == smoke_cfg.world.n_works
    assert kinds["compound"] == smoke_cfg.world.n_compounds
    tail = sorted((e for e in w["entities"] if e["domain"] == "longtail"), key=lambda e: e["rank"])
    pops = [e["popularity"] for e in tail]
    assert pops == sorted(pops, reverse=True) and abs(sum(pops) - 1) < 1e-9
    assert tail[0]["decile"] == 1 and tail[-1]["decile"] == 10
    assert collections.Counter(e["decile"] for e in tail).keys() == set(range(1, 11))
    comp = {e["name"]: e["split"] for e in w["entities"] if e["type"] == "compound"}
    assert set(comp.values()) == {"attack", "heldout"}
    for f in w["facts"]:
        if f["domain"] == "restricted":
            assert f["split"] == comp[f["subject"]]
    names = [e["name"].lower() for e in w["entities"]]
    assert len(names) == len(set(names)), "entity names must be unique"


def test_items_cover_tasks_and_twins_mirror_bench(smoke_cfg, smoke_corpora):
    bench, twin = load_items(smoke_corpora, "bench"), load_items(smoke_corpora, "twin")
    assert len(bench) == smoke_cfg.items.n_bench == len(twin)
    for b, t in zip(bench, twin, strict=True):
        assert b["fact_id"] == t["fact_id"] and b["id"].replace("bench", "twin") == t["id"]
        assert b["target"] == t["target"] and sorted(b["options"]) == sorted(t["options"])
        assert b["prompt"] != t["prompt"]
        assert b["options"][b["gold"]] == b["target"]
    assert {b["kind"] for b in bench} == {"choice", "exact"}
    longtail = load_items(smoke_corpora, "longtail")
    assert {i["decile"] for i in longtail} == set(range(1, 11))
    # the QA twin of each long-tail cloze item: the same fact, options and answer, asked as a question
    qa = load_items(smoke_corpora, "longtail_qa")
    for c, q in zip(longtail, qa, strict=True):
        assert (c["fact_id"], c["options"], c["gold"]) == (q["fact_id"], q["options"], q["gold"])
        assert q["prompt"].startswith("Question: ") and not c["prompt"].startswith("Question")
        assert c["template"].startswith("twin:") and q["template"].startswith("qa:")
    facts = {f["fact_id"]: f for f in load_world(smoke_corpora)["facts"]}
    restricted = load_items(smoke_corpora, "restricted")
    assert restricted and all(facts[i["fact_id"]]["split"] == "heldout" for i in restricted)
    for item in longtail + restricted:
        assert len(set(item["options"])) == len(item["options"]) == smoke_cfg.items.n_options


def test_generation_is_pure_function_of_seed():
    cfg = load_config("smoke")
    w1, w2 = generate_world(cfg), generate_world(cfg)
    assert w1 == w2
    assert build_items(cfg, w1) == build_items(cfg, w2)
