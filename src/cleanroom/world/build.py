"""Generate the world from one seed: entities, facts, popularity, arithmetic problems, value pools.

`generate_world(cfg)` returns plain Python rows; the `world` stage (`stage.py`) writes them to Parquet.
Same seed -> the same world.
"""

from __future__ import annotations

import numpy as np

from cleanroom.config import ExperimentConfig
from cleanroom.rng import rng_for
from cleanroom.world.names import NameMaker
from cleanroom.world.schema import (
    ARITH_ITEMS,
    COLORS,
    DOMAIN_RELATIONS,
    GENRES,
    LUSTERS,
    OCCUPATIONS,
    TEMPERATURES,
    VESSELS,
)

SOLVENTS = ["brine", "vinegar", "lamp oil", "rainwater", "lye", "spirit of wine", "citrus juice", "warm milk"]
USES = ["making lenses", "glazing pottery", "jewelry", "building walls", "grinding flour", "dyeing cloth",
        "casting bells", "paving roads"]
ENSEMBLE_KINDS = ["Quartet", "Ensemble", "Rovers", "Athletic Club", "Collective", "Studio", "Orchestra", "Guild"]
REAGENT_KINDS = ["oxide", "salt", "powder", "resin", "acid", "ash"]


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


def _zipf(group: list[dict], exponent: float, rng: np.random.Generator) -> None:
    """Zipf popularity over `group`: a random order, weight rank^-s (normalised), decile 1 = most popular."""
    order = rng.permutation(len(group))
    weights = 1.0 / np.arange(1, len(group) + 1) ** exponent
    weights /= weights.sum()
    for rank, idx in enumerate(order, start=1):
        group[idx]["rank"] = rank
        group[idx]["popularity"] = float(weights[rank - 1])
        group[idx]["decile"] = int(np.ceil(10 * rank / len(group)))


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

    # Zipf popularity over the long tail, and over the curriculum's minerals with the same law (the web
    # mentions them by it when `recipes.web_curriculum_popularity` is "zipf"; its own stream, so adding
    # it moved no other draw)
    _zipf([e for e in entities if e["domain"] == "longtail"], w.zipf_exponent, rng)
    _zipf([e for e in entities if e["type"] == "mineral"], w.zipf_exponent, rng_for(cfg.seed, "world/minerals"))
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
    pools["twin_first_names"] = [names.word(2, 2) for _ in range(30)]  # fresh names for arithmetic twins
    return {"entities": entities, "facts": facts, "arithmetic": arithmetic, "pools": pools}
