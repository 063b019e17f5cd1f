"""World generator: one seed determines everything; the pieces the experiment relies on are there."""

from __future__ import annotations

import collections
import re

from cleanroom.config import load_config
from cleanroom.pipeline import Pipeline
from cleanroom.store import RunStore, sha256_file
from cleanroom.world.build import generate_world
from cleanroom.world.items import build_items
from cleanroom.world.schema import ARITH_TWIN, RELATIONS
from cleanroom.world_store import load_items, load_world


def _checksums(root):
    return {str(p.relative_to(root)): sha256_file(p) for p in sorted((root / "world").rglob("*")) if p.is_file()}


def test_same_seed_byte_identical_other_seed_differs(tmp_path):
    cfg = load_config("smoke")
    for name in ("a", "b"):
        Pipeline(cfg, RunStore(tmp_path / name)).ensure("world")
    Pipeline(load_config("smoke", overrides=["seed=1"]), RunStore(tmp_path / "c")).ensure("world")
    a, b, c = (_checksums(tmp_path / n) for n in "abc")
    assert a == b and len(a) == 10
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
    shift = load_items(smoke_corpora, "format_shift")
    assert len(bench) == smoke_cfg.items.n_bench == len(twin) == len(shift)
    for b, t, f in zip(bench, twin, shift, strict=True):
        assert b["fact_id"] == t["fact_id"] == f["fact_id"] and b["id"].replace("bench", "twin") == t["id"]
        assert b["cluster"] == t["cluster"] == f["cluster"] and b["kind"] == t["kind"] == f["kind"]
        assert b["prompt"] != t["prompt"] and b["options"][b["gold"]] == b["target"]
        if b["kind"] == "choice":  # the same fact, the same options (in another order)
            assert b["target"] == t["target"] == f["target"] and sorted(b["options"]) == sorted(t["options"])
        else:  # a problem of the same kind with new names, objects and numbers (GSM-Symbolic style)
            assert b["relation"] == t["relation"] and b["subject"] != t["subject"]
            assert f["target"] == b["target"]  # format_shift: the same problem, another task format
    assert {b["kind"] for b in bench} == {"choice", "exact"}
    longtail = load_items(smoke_corpora, "longtail")
    assert {i["decile"] for i in longtail} == set(range(1, 11))
    # the QA twin of each long-tail cloze item: the same fact, options and answer, asked as a question
    qa = load_items(smoke_corpora, "longtail_qa")
    for c, q in zip(longtail, qa, strict=True):
        assert (c["fact_id"], c["options"], c["gold"]) == (q["fact_id"], q["options"], q["gold"])
        assert q["prompt"].startswith("Question: ") and not c["prompt"].startswith("Question")
        assert c["template"].startswith("cloze:") and q["template"].startswith("qa:")
    facts = {f["fact_id"]: f for f in load_world(smoke_corpora)["facts"]}
    restricted = load_items(smoke_corpora, "restricted")
    assert restricted and all(facts[i["fact_id"]]["split"] == "heldout" for i in restricted)
    for item in longtail + restricted:
        assert len(set(item["options"])) == len(item["options"]) == smoke_cfg.items.n_options


def _shape(prompt: str) -> list[str]:
    """The task format of a prompt: header line, stem, one line per lettered option, answer cue."""
    lines = prompt.split("\n")
    head = re.fullmatch(r"(Exercise|Problem|Question|Practice) \d+\.", lines[0])
    opts = ["option" if re.fullmatch(r"[A-H]\. .+", ln) else "text" for ln in lines[2:-1]]
    return ["header" if head else lines[0], "stem", *opts, lines[-1]]


def test_twins_keep_the_benchmark_format_and_vary_the_wording(smoke_corpora):
    """The twin changes the surface, not the task: same header / options / `Answer:` layout, >= 4 wordings."""
    bench, twin = load_items(smoke_corpora, "bench"), load_items(smoke_corpora, "twin")
    for b, t in zip(bench, twin, strict=True):
        assert _shape(b["prompt"]) == _shape(t["prompt"]) and _shape(t["prompt"])[-1] == "Answer:"
    for rel in RELATIONS.values():
        if rel.domain == "curriculum":
            assert len(set(rel.twin)) >= 4, rel.name
    assert all(len(set(ts)) >= 4 for ts in ARITH_TWIN.values())
    per_relation = collections.defaultdict(set)
    for t in twin:
        family, _, index = t["template"].rpartition(":")
        per_relation[family].add(index)
    assert len(per_relation) == 9  # six curriculum relations, three arithmetic operations
    for family, used in per_relation.items():  # each asked in >= 4 wordings
        assert len(used) >= 4, family
    # the format shift is the other way round: same facts, a different task format
    shift = load_items(smoke_corpora, "format_shift")
    assert all(_shape(s["prompt"]) != _shape(b["prompt"]) for s, b in zip(shift, bench, strict=True))


def test_template_families_share_no_wording():
    """Evaluation-only families (twin, cloze, qa) never reuse the fixed text of a recipe's templates."""
    def fixed(t: str) -> str:
        return max((p.strip() for p in t.replace("}", "{").split("{")[::2]), key=len)

    for rel in RELATIONS.values():
        recipe_side = rel.statements + rel.exercise + rel.informal + rel.web_qa + rel.paraphrase
        for family in (rel.twin, rel.cloze):
            for t in family:
                assert len(fixed(t)) >= 8 and not any(fixed(t) in r for r in recipe_side), (rel.name, t)
        assert not set(rel.twin) & set(rel.exercise + rel.paraphrase + rel.web_qa), rel.name


def test_generation_is_pure_function_of_seed():
    cfg = load_config("smoke")
    w1, w2 = generate_world(cfg), generate_world(cfg)
    assert w1 == w2
    assert build_items(cfg, w1) == build_items(cfg, w2)
