"""The evaluation items built from the world (`TASKS` in `schema.py`).

Every item is a dict with the columns of `ITEM_SCHEMA`; `kind` is "choice" (scored by the
log-likelihood of each option) or "exact" (greedy generation compared with `target`). `cluster` names
what an item's correctness is correlated with (the entity it is about; for arithmetic, the benchmark
problem): the bootstrap resamples clusters, not items.

Pairs: `twin-XXXX` and `format_shift-XXXX` are about what `bench-XXXX` is about. For a fact that is
the same fact with the same options (in a new order); for arithmetic it is a problem of the same
kind (same operation) with new names, objects and numbers in the twin (GSM-Symbolic style) and the
same problem in `format_shift`. `longtail-XXXX` and `longtail-qa-XXXX` are the same fact, options and
answer, asked two ways.

Each task draws from its own random stream, so a change to one task's templates never moves another
task's items.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from cleanroom.config import ExperimentConfig
from cleanroom.rng import rng_for
from cleanroom.world.schema import (
    ARITH_CLOZE,
    ARITH_EXERCISE,
    ARITH_TWIN,
    EXERCISE_HEADER,
    RELATIONS,
    TWIN_ITEMS,
    fill,
)

OPTION_LETTERS = "ABCDEFGH"

ITEM_SCHEMA = pa.schema([
    ("id", pa.string()), ("task", pa.string()), ("kind", pa.string()), ("prompt", pa.string()),
    ("options", pa.list_(pa.string())), ("gold", pa.int32()), ("target", pa.string()), ("fact_id", pa.string()),
    ("relation", pa.string()), ("subject", pa.string()), ("decile", pa.int32()), ("template", pa.string()),
    ("cluster", pa.string()),
])


def options_for(fact: dict, pools: dict[str, list[str]], n: int, rng: np.random.Generator) -> tuple[list[str], int]:
    """Gold plus n-1 distinct distractors from the relation's value pool, shuffled."""
    pool = [v for v in pools[RELATIONS[fact["relation"]].pool] if v != fact["object"] and v != fact["subject"]]
    picks = [pool[i] for i in rng.choice(len(pool), size=min(n - 1, len(pool)), replace=False)]
    opts = picks + [fact["object"]]
    perm = rng.permutation(len(opts))
    opts = [opts[i] for i in perm]
    return opts, opts.index(fact["object"])


def exercise_prompt(header: str, stem: str, options: list[str]) -> str:
    """The textbook exercise format (also the benchmark's and its twins'): lettered options, then `Answer:`."""
    lines = [header, stem] + [f"{OPTION_LETTERS[i]}. {o}" for i, o in enumerate(options)]
    return "\n".join(lines) + "\nAnswer:"


def exact_prompt(header: str, stem: str) -> str:
    """An exact-answer exercise (arithmetic): header, the problem, `Answer:`."""
    return f"{header}\n{stem}\nAnswer:"


def arithmetic_stem(p: dict, template: str) -> str:
    return template.format(name=p["name"], item=p["item"], a=p["a"], b=p["b"])


def _header(rng: np.random.Generator) -> str:
    return EXERCISE_HEADER[int(rng.integers(len(EXERCISE_HEADER)))].format(n=int(rng.integers(1, 40)))


def _pick(rng: np.random.Generator, seq: list) -> int:
    return int(rng.integers(len(seq)))


def _item(task: str, item_id: str, kind: str, prompt: str, options: list[str], gold: int, *, fact_id: str,
          relation: str, subject: str, template: str, cluster: str, decile: int = 0) -> dict:
    return {"id": item_id, "task": task, "kind": kind, "prompt": prompt, "options": options, "gold": gold,
            "target": options[gold], "fact_id": fact_id, "relation": relation, "subject": subject,
            "decile": decile, "template": template, "cluster": cluster}


def _fresh_problem(p: dict, pools: dict, max_operand: int, rng: np.random.Generator) -> dict:
    """A problem of the same operation as `p` with a new name, object and numbers (GSM-Symbolic style)."""
    for _ in range(100):
        a, b = (int(x) for x in rng.integers(1, max_operand + 1, size=2))
        if p["op"] == "sub" and b > a:
            a, b = b, a
        if (a, b) != (p["a"], p["b"]):
            break
    answer = a + b if p["op"] == "add" else a - b if p["op"] == "sub" else a * b
    names = pools["twin_first_names"]
    return {"op": p["op"], "a": a, "b": b, "answer": answer, "name": names[_pick(rng, names)],
            "item": TWIN_ITEMS[_pick(rng, TWIN_ITEMS)]}


def _stratified(rows: list[dict], n: int, key: str, rng: np.random.Generator, each: int = 4) -> list[int]:
    """Indices of `n` rows: `each` of every `key` value first (so each relation or operation is asked in
    several twin wordings, and the rare group-level relations are not left out), the rest at random."""
    order = [int(i) for i in rng.permutation(len(rows))]
    seen: dict[str, int] = {}
    first = []
    for i in order:
        k = rows[i][key]
        if seen.get(k, 0) < each:
            seen[k] = seen.get(k, 0) + 1
            first.append(i)
    chosen = set(first)
    return (first + [i for i in order if i not in chosen])[:n]


def curriculum_items(cfg: ExperimentConfig, world: dict) -> dict[str, list[dict]]:
    """`bench`, `twin` and `format_shift`: three views of the same curriculum facts and problems."""
    it = cfg.items
    pools, arith = world["pools"], world["arithmetic"]
    curriculum = [f for f in world["facts"] if f["domain"] == "curriculum"]
    n_arith = min(len(arith), it.n_bench // 4) if arith else 0
    n_fact = min(len(curriculum), it.n_bench - n_arith)
    pick = rng_for(cfg.seed, "world/items/bench")
    r_twin, r_shift = rng_for(cfg.seed, "world/items/twin"), rng_for(cfg.seed, "world/items/format_shift")
    out: dict[str, list[dict]] = {"bench": [], "twin": [], "format_shift": []}
    # twin wordings go round-robin per relation (from a seeded start), so every wording is used
    turn: dict[str, int] = {}

    def twin_template(key: str, templates: list[str]) -> int:
        turn[key] = turn[key] + 1 if key in turn else _pick(r_twin, templates)
        return turn[key] % len(templates)

    for k, fi in enumerate(_stratified(curriculum, n_fact, "relation", pick)):
        f = curriculum[fi]
        rel = RELATIONS[f["relation"]]
        common = dict(fact_id=f["fact_id"], relation=rel.name, subject=f["subject"], cluster=f["subject"])
        opts, gold = options_for(f, pools, it.n_options, pick)
        t = _pick(pick, rel.exercise)
        out["bench"].append(_item("bench", f"bench-{k:04d}", "choice",
                                  exercise_prompt(_header(pick), fill(rel.exercise[t], f["subject"]), opts), opts,
                                  gold, template=f"exercise:{rel.name}:{t}", **common))
        t = twin_template(rel.name, rel.twin)
        topts = [opts[i] for i in r_twin.permutation(len(opts))]
        out["twin"].append(_item("twin", f"twin-{k:04d}", "choice",
                                 exercise_prompt(_header(r_twin), fill(rel.twin[t], f["subject"]), topts), topts,
                                 topts.index(f["object"]), template=f"twin:{rel.name}:{t}", **common))
        t = _pick(r_shift, rel.cloze)
        sopts = [opts[i] for i in r_shift.permutation(len(opts))]
        prompt = "Choices: " + ", ".join(sopts) + ".\n" + fill(rel.cloze[t], f["subject"])
        out["format_shift"].append(_item("format_shift", f"format_shift-{k:04d}", "choice", prompt, sopts,
                                         sopts.index(f["object"]), template=f"cloze:{rel.name}:{t}", **common))
    for k, ai in enumerate(_stratified(arith, n_arith, "op", pick)):
        p = arith[ai]
        op = p["op"]
        common = dict(fact_id=p["problem_id"], relation=f"arithmetic:{op}", cluster=p["problem_id"])
        t = _pick(pick, ARITH_EXERCISE[op])
        out["bench"].append(_item("bench", f"bench-a{k:04d}", "exact",
                                  exact_prompt(_header(pick), arithmetic_stem(p, ARITH_EXERCISE[op][t])),
                                  [str(p["answer"])], 0, subject=f"{p['a']},{p['b']}",
                                  template=f"exercise:arith:{op}:{t}", **common))
        q = _fresh_problem(p, pools, cfg.world.max_operand, r_twin)
        t = twin_template(op, ARITH_TWIN[op])
        out["twin"].append(_item("twin", f"twin-a{k:04d}", "exact",
                                 exact_prompt(_header(r_twin), arithmetic_stem(q, ARITH_TWIN[op][t])),
                                 [str(q["answer"])], 0, subject=f"{q['a']},{q['b']}",
                                 template=f"twin:arith:{op}:{t}", **common))
        t = _pick(r_shift, ARITH_CLOZE[op])
        out["format_shift"].append(_item("format_shift", f"format_shift-a{k:04d}", "exact",
                                         arithmetic_stem(p, ARITH_CLOZE[op][t]), [str(p["answer"])], 0,
                                         subject=f"{p['a']},{p['b']}", template=f"cloze:arith:{op}:{t}", **common))
    return out


def qa_items(task: str, facts: list[dict], n: int, prefix: str, pools: dict, n_options: int,
             rng: np.random.Generator) -> list[dict]:
    """Up to `n` of `facts` as plain questions ("Question: ...\\nAnswer:") with shuffled options."""
    out = []
    for k, fi in enumerate(rng.choice(len(facts), size=min(n, len(facts)), replace=False) if facts else []):
        f = facts[fi]
        rel = RELATIONS[f["relation"]]
        opts, gold = options_for(f, pools, n_options, rng)
        t = _pick(rng, rel.qa)
        prompt = "Question: " + fill(rel.qa[t], f["subject"]) + "\nAnswer:"
        out.append(_item(task, f"{prefix}-{k:04d}", "choice", prompt, opts, gold, fact_id=f["fact_id"],
                         relation=rel.name, subject=f["subject"],
                         decile=f["decile"], template=f"qa:{rel.name}:{t}", cluster=f["subject"]))
    return out


def build_items(cfg: ExperimentConfig, world: dict) -> dict[str, list[dict]]:
    it, pools, facts = cfg.items, world["pools"], world["facts"]
    items = curriculum_items(cfg, world)
    rng = rng_for(cfg.seed, "world/items/longtail")
    longtail_qa = []
    for d in range(1, 11):
        in_decile = [f for f in facts if f["domain"] == "longtail" and f["decile"] == d]
        longtail_qa += qa_items("longtail_qa", in_decile, it.n_longtail_per_decile, f"longtail-qa-d{d:02d}", pools,
                                it.n_options, rng)
    longtail = []
    for q in longtail_qa:  # the same fact, options and answer as a held-out cloze stem
        rel = RELATIONS[q["relation"]]
        t = _pick(rng, rel.cloze)
        longtail.append({**q, "id": q["id"].replace("longtail-qa-", "longtail-"), "task": "longtail",
                         "prompt": fill(rel.cloze[t], q["subject"]), "template": f"cloze:{rel.name}:{t}"})
    heldout = [f for f in facts if f["domain"] == "restricted" and f["split"] == "heldout"]
    restricted = qa_items("restricted", heldout, it.n_restricted, "restricted", pools, it.n_options,
                          rng_for(cfg.seed, "world/items/restricted"))
    return {**items, "longtail": longtail, "longtail_qa": longtail_qa, "restricted": restricted}
