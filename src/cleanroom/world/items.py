"""The evaluation items built from the world: bench, twin, longtail, longtail_qa, restricted.

Every item is a dict with the columns of `ITEM_SCHEMA`; `kind` is "choice" (scored by the
log-likelihood of each option) or "exact" (greedy generation compared with `target`).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from cleanroom.config import ExperimentConfig
from cleanroom.world.names import rng_for
from cleanroom.world.schema import ARITH_EXERCISE, ARITH_TWIN, EXERCISE_HEADER, RELATIONS, fill

OPTION_LETTERS = "ABCDEFGH"


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
