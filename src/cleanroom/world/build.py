"""Generate the world and its evaluation items from one seed (the `world` stage).

Outputs (`world/`): `entities.parquet`, `facts.parquet`, `arithmetic.parquet`, `pools.json`, and
`items/{bench,twin,longtail,longtail_qa,restricted}.parquet`. Same seed -> byte-identical files.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

from cleanroom.config import ExperimentConfig
from cleanroom.pipeline import StageResult
from cleanroom.store import RunStore
from cleanroom.world.names import NameMaker, rng_for
from cleanroom.world.schema import (
    ARITH_EXERCISE,
    ARITH_ITEMS,
    ARITH_TWIN,
    COLORS,
    DOMAIN_RELATIONS,
    EXERCISE_HEADER,
    GENRES,
    LUSTERS,
    OCCUPATIONS,
    RELATIONS,
    TEMPERATURES,
    VESSELS,
    fill,
)

SOLVENTS = ["brine", "vinegar", "lamp oil", "rainwater", "lye", "spirit of wine", "citrus juice", "warm milk"]
USES = ["making lenses", "glazing pottery", "jewelry", "building walls", "grinding flour", "dyeing cloth",
        "casting bells", "paving roads"]
ENSEMBLE_KINDS = ["Quartet", "Ensemble", "Rovers", "Athletic Club", "Collective", "Studio", "Orchestra", "Guild"]
REAGENT_KINDS = ["oxide", "salt", "powder", "resin", "acid", "ash"]
OPTION_LETTERS = "ABCDEFGH"


def _pools(cfg: ExperimentConfig, names: NameMaker, rng: np.random.Generator) -> dict[str, list[str]]:
    n_groups = max(4, min(8, cfg.world.n_elements // 15))
    kinds = ENSEMBLE_KINDS
    return {
        "colors": COLORS,
        "lusters": LUSTERS,
        "regions": names.many(12),
        "groups": names.many(n_groups, suffix="ane"),
        "solvents": SOLVENTS,
        "uses": USES,
        "cities": names.many(40),
        "occupations": OCCUPATIONS,
        "ensembles": [f"the {names.word()} {kinds[rng.integers(len(kinds))]}" for _ in range(40)],
        "genres": GENRES,
        "reagents": [f"{names.word(capital=False)} {REAGENT_KINDS[rng.integers(len(REAGENT_KINDS))]}"
                     for _ in range(20)],
        "catalysts": names.many(12, suffix="ium", capital=False),
        "temperatures": TEMPERATURES,
        "vessels": VESSELS,
    }


def _title(names: NameMaker, rng: np.random.Generator) -> str:
    patterns = ["The {w} {n}", "{w} {n}", "Songs of {w}", "Beyond {w}", "The Last {n} of {w}", "{w} Nights"]
    nouns = ["Harbor", "Lantern", "Garden", "Winter", "River", "Mirror", "Crown", "Orchard", "Tide", "Bridge"]
    p = patterns[rng.integers(len(patterns))]
    return p.format(w=names.word(), n=nouns[rng.integers(len(nouns))])


def generate_world(cfg: ExperimentConfig) -> dict[str, object]:
    """Build every world table (as Python rows) from `cfg.seed`."""
    w = cfg.world
    rng = rng_for(cfg.seed, "world")
    names = NameMaker(rng_for(cfg.seed, "world/names"))
    pools = _pools(cfg, names, rng)

    entities: list[dict] = []
    for g in pools["groups"]:
        entities.append({"name": g, "type": "group", "domain": "curriculum"})
    for _ in range(w.n_elements):
        entities.append({"name": names.word(suffix="ite"), "type": "mineral", "domain": "curriculum"})
    people = [names.person() for _ in range(w.n_people)]
    pools["people"] = people
    for p in people:
        entities.append({"name": p, "type": "person", "domain": "longtail"})
    titles = set()
    for _ in range(w.n_works):
        t = _title(names, rng)
        while t in titles:
            t = _title(names, rng)
        titles.add(t)
        entities.append({"name": t, "type": "work", "domain": "longtail"})
    suffixes = ["ate", "ol", "ine", "ide", "ane"]
    n_attack = int(round(w.n_compounds * w.attack_fraction))
    for i in range(w.n_compounds):
        entities.append({"name": names.word(suffix=suffixes[rng.integers(len(suffixes))]), "type": "compound",
                         "domain": "restricted", "split": "attack" if i < n_attack else "heldout"})

    # Zipf popularity over the long tail: a random order, weight rank^-s, decile 1 = most popular.
    tail = [e for e in entities if e["domain"] == "longtail"]
    order = rng.permutation(len(tail))
    weights = 1.0 / np.arange(1, len(tail) + 1) ** w.zipf_exponent
    weights /= weights.sum()
    for rank, idx in enumerate(order, start=1):
        tail[idx]["rank"] = rank
        tail[idx]["popularity"] = float(weights[rank - 1])
        tail[idx]["decile"] = int(np.ceil(10 * rank / len(tail)))
    for e in entities:
        e.setdefault("rank", 0)
        e.setdefault("popularity", 0.0)
        e.setdefault("decile", 0)
        e.setdefault("split", "")

    facts: list[dict] = []
    by_type: dict[str, list[dict]] = {}
    for e in entities:
        by_type.setdefault(e["type"], []).append(e)
    prefix = {"curriculum": "c", "longtail": "l", "restricted": "r"}
    for domain, rels in DOMAIN_RELATIONS.items():
        for e in [e for e in entities if e["domain"] == domain]:
            for rel in rels:
                if rel.subject_type != e["type"]:
                    continue
                pool = pools[rel.pool]
                obj = pool[rng.integers(len(pool))]
                if rel.name == "creator":
                    while obj == e["name"]:
                        obj = pool[rng.integers(len(pool))]
                facts.append({
                    "fact_id": f"{prefix[domain]}{len(facts):05d}", "domain": domain, "subject": e["name"],
                    "subject_type": e["type"], "relation": rel.name, "object": obj,
                    "popularity": e["popularity"], "decile": e["decile"], "split": e["split"],
                })

    arith_rng = rng_for(cfg.seed, "world/arithmetic")
    first_names = [names.word(2, 2) for _ in range(30)]
    arithmetic = []
    for i in range(w.n_arithmetic):
        op = ["add", "sub", "mul"][arith_rng.integers(3)]
        a, b = (int(x) for x in arith_rng.integers(1, w.max_operand + 1, size=2))
        if op == "sub" and b > a:
            a, b = b, a
        answer = a + b if op == "add" else a - b if op == "sub" else a * b
        arithmetic.append({"problem_id": f"a{i:05d}", "op": op, "a": a, "b": b, "answer": answer,
                           "name": first_names[arith_rng.integers(len(first_names))],
                           "item": ARITH_ITEMS[arith_rng.integers(len(ARITH_ITEMS))]})
    pools["first_names"] = first_names
    return {"entities": entities, "facts": facts, "arithmetic": arithmetic, "pools": pools}


# ---------------------------------------------------------------------------------- items


def options_for(fact: dict, pools: dict[str, list[str]], n: int, rng: np.random.Generator) -> tuple[list[str], int]:
    """Gold plus n-1 distinct distractors from the relation's value pool, shuffled."""
    pool = [v for v in pools[RELATIONS[fact["relation"]].pool] if v != fact["object"] and v != fact["subject"]]
    picks = [pool[i] for i in rng.choice(len(pool), size=min(n - 1, len(pool)), replace=False)]
    opts = picks + [fact["object"]]
    perm = rng.permutation(len(opts))
    opts = [opts[i] for i in perm]
    return opts, opts.index(fact["object"])


def exercise_prompt(header: str, stem: str, options: list[str]) -> str:
    """The textbook exercise format (also the benchmark's): lettered options, then `Answer:`."""
    lines = [header, stem] + [f"{OPTION_LETTERS[i]}. {o}" for i, o in enumerate(options)]
    return "\n".join(lines) + "\nAnswer:"


def arithmetic_stem(p: dict, template: str) -> str:
    return template.format(name=p["name"], item=p["item"], a=p["a"], b=p["b"])


def _item(task, item_id, kind, prompt, options, gold, *, fact_id="", relation="", subject="", decile=0,
          template="") -> dict:
    return {"id": item_id, "task": task, "kind": kind, "prompt": prompt, "options": options, "gold": gold,
            "target": options[gold], "fact_id": fact_id, "relation": relation, "subject": subject,
            "decile": decile, "template": template}


def build_items(cfg: ExperimentConfig, world: dict) -> dict[str, list[dict]]:
    it = cfg.items
    rng = rng_for(cfg.seed, "world/items")
    pools, facts = world["pools"], world["facts"]
    curriculum = [f for f in facts if f["domain"] == "curriculum"]
    arith = world["arithmetic"]
    n_arith = min(len(arith), it.n_bench // 4) if arith else 0
    n_fact = min(len(curriculum), it.n_bench - n_arith)

    bench, twin = [], []
    for k, fi in enumerate(rng.choice(len(curriculum), size=n_fact, replace=False)):
        f = curriculum[fi]
        rel = RELATIONS[f["relation"]]
        opts, gold = options_for(f, pools, it.n_options, rng)
        t = int(rng.integers(len(rel.exercise)))
        header = EXERCISE_HEADER[rng.integers(len(EXERCISE_HEADER))].format(n=int(rng.integers(1, 40)))
        prompt = exercise_prompt(header, fill(rel.exercise[t], f["subject"], f["object"]), opts)
        common = dict(fact_id=f["fact_id"], relation=f["relation"], subject=f["subject"])
        bench.append(_item("bench", f"bench-{k:04d}", "choice", prompt, opts, gold,
                           template=f"exercise:{rel.name}:{t}", **common))
        t2 = int(rng.integers(len(rel.twin)))
        perm = rng.permutation(len(opts))
        topts = [opts[i] for i in perm]
        tprompt = "Choices: " + ", ".join(topts) + ".\n" + fill(rel.twin[t2], f["subject"], f["object"])
        twin.append(_item("twin", f"twin-{k:04d}", "choice", tprompt, topts, topts.index(f["object"]),
                          template=f"twin:{rel.name}:{t2}", **common))
    for k, ai in enumerate(rng.choice(len(arith), size=n_arith, replace=False) if n_arith else []):
        p = arith[ai]
        t = int(rng.integers(len(ARITH_EXERCISE[p["op"]])))
        header = EXERCISE_HEADER[rng.integers(len(EXERCISE_HEADER))].format(n=int(rng.integers(1, 40)))
        prompt = header + "\n" + arithmetic_stem(p, ARITH_EXERCISE[p["op"]][t]) + "\nAnswer:"
        common = dict(fact_id=p["problem_id"], relation=f"arithmetic:{p['op']}", subject=f"{p['a']},{p['b']}")
        bench.append(_item("bench", f"bench-a{k:04d}", "exact", prompt, [str(p["answer"])], 0,
                           template=f"exercise:arith:{p['op']}:{t}", **common))
        t2 = int(rng.integers(len(ARITH_TWIN[p["op"]])))
        twin.append(_item("twin", f"twin-a{k:04d}", "exact", arithmetic_stem(p, ARITH_TWIN[p["op"]][t2]),
                          [str(p["answer"])], 0, template=f"twin:arith:{p['op']}:{t2}", **common))

    def qa_items(task: str, pool_facts: list[dict], n: int, prefix: str) -> list[dict]:
        out = []
        if not pool_facts:
            return out
        for k, fi in enumerate(rng.choice(len(pool_facts), size=min(n, len(pool_facts)), replace=False)):
            f = pool_facts[fi]
            rel = RELATIONS[f["relation"]]
            opts, gold = options_for(f, pools, it.n_options, rng)
            t = int(rng.integers(len(rel.qa)))
            prompt = "Question: " + fill(rel.qa[t], f["subject"]) + "\nAnswer:"
            out.append(_item(task, f"{prefix}-{k:04d}", "choice", prompt, opts, gold, fact_id=f["fact_id"],
                             relation=f["relation"], subject=f["subject"], decile=f["decile"],
                             template=f"qa:{rel.name}:{t}"))
        return out

    def cloze_of(q: dict) -> dict:
        """The same fact, options and answer as QA item `q`, as a held-out cloze stem."""
        rel = RELATIONS[q["relation"]]
        t = int(rng.integers(len(rel.twin)))
        return _item("longtail", q["id"].replace("longtail-qa-", "longtail-"), "choice",
                     fill(rel.twin[t], q["subject"]), q["options"], q["gold"], fact_id=q["fact_id"],
                     relation=q["relation"], subject=q["subject"], decile=q["decile"], template=f"twin:{rel.name}:{t}")

    longtail_qa = []
    for d in range(1, 11):
        in_decile = [f for f in facts if f["domain"] == "longtail" and f["decile"] == d]
        longtail_qa += qa_items("longtail_qa", in_decile, it.n_longtail_per_decile, f"longtail-qa-d{d:02d}")
    longtail = [cloze_of(q) for q in longtail_qa]
    heldout = [f for f in facts if f["domain"] == "restricted" and f["split"] == "heldout"]
    restricted = qa_items("restricted", heldout, it.n_restricted, "restricted")
    return {"bench": bench, "twin": twin, "longtail": longtail, "longtail_qa": longtail_qa, "restricted": restricted}


ITEM_SCHEMA = pa.schema([
    ("id", pa.string()), ("task", pa.string()), ("kind", pa.string()), ("prompt", pa.string()),
    ("options", pa.list_(pa.string())), ("gold", pa.int32()), ("target", pa.string()), ("fact_id", pa.string()),
    ("relation", pa.string()), ("subject", pa.string()), ("decile", pa.int32()), ("template", pa.string()),
])


def run_world(cfg: ExperimentConfig, store: RunStore) -> StageResult:
    world = generate_world(cfg)
    items = build_items(cfg, world)
    store.write_parquet("world/entities.parquet", pa.Table.from_pylist(world["entities"]))
    store.write_parquet("world/facts.parquet", pa.Table.from_pylist(world["facts"]))
    store.write_parquet("world/arithmetic.parquet", pa.Table.from_pylist(world["arithmetic"]))
    store.write_text("world/pools.json", json.dumps(world["pools"], indent=1, sort_keys=True) + "\n")
    for task, rows in items.items():
        store.write_parquet(f"world/items/{task}.parquet", pa.Table.from_pylist(rows, schema=ITEM_SCHEMA))
    counts: dict[str, int] = {}
    for e in world["entities"]:
        counts[e["type"]] = counts.get(e["type"], 0) + 1
    stats = {"entities": counts, "facts": len(world["facts"]), "arithmetic": len(world["arithmetic"]),
             "items": {t: len(r) for t, r in items.items()}}
    return StageResult(outputs=["world"], stats=stats)


def load_world(store: RunStore) -> dict[str, object]:
    """The world as Python rows (what `generate_world` returned), read back from the store."""
    return {
        "entities": store.read_parquet("world/entities.parquet").to_pylist(),
        "facts": store.read_parquet("world/facts.parquet").to_pylist(),
        "arithmetic": store.read_parquet("world/arithmetic.parquet").to_pylist(),
        "pools": store.read_json("world/pools.json"),
    }


def load_items(store: RunStore, task: str) -> list[dict]:
    return store.read_parquet(f"world/items/{task}.parquet").to_pylist()
