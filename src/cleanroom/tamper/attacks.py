"""What an attacker fine-tunes on: the attack families of the tamper test.

- `qa_other`: every fact of the attack split (compounds disjoint from the held-out ones) as questions
  ("Question: ...\\nAnswer: ...", the evaluation's own form) and as statements. It can teach the
  question format and draw out what a model already knows; it cannot teach a held-out fact.
- `literature`: restricted-domain prose of the kind an attacker could collect (lab notes, protocols,
  forum posts, rendered like the web's restricted documents): every attack-split fact and a share
  `tamper.literature_heldout` of the held-out facts, in the corpora's statement phrasings, never in the
  evaluation's question form. Held-out items whose fact the literature states are `taught`: a model
  can learn them from the attack itself, so every arm, a filtered model included, may recover on them;
  the rest measure knowledge that was already there.
"""

from __future__ import annotations

import numpy as np

from cleanroom.config import ExperimentConfig
from cleanroom.rng import rng_for
from cleanroom.world.schema import FILLER, FORUM_OPENERS, LAB_OPENERS, RELATIONS, fill

LITERATURE_COPIES = 3  # documents per compound, each a fresh rendering of what the literature knows about it


def qa_other(facts: list[dict]) -> list[str]:
    """Every attack-split restricted fact as QA (each `qa` stem) and as prose (each statement)."""
    texts = []
    for f in facts:
        if f["domain"] != "restricted" or f.get("split") != "attack":
            continue
        rel = RELATIONS[f["relation"]]
        texts += [f"Question: {fill(q, f['subject'])}\nAnswer: {f['object']}" for q in rel.qa]
        texts += [fill(s, f["subject"], f["object"]) for s in rel.statements]
    return texts


def taught_facts(facts: list[dict], cfg: ExperimentConfig) -> set[str]:
    """The held-out facts the literature states (a seeded share `tamper.literature_heldout`)."""
    heldout = sorted(f["fact_id"] for f in facts if f["domain"] == "restricted" and f.get("split") == "heldout")
    n = int(round(cfg.tamper.literature_heldout * len(heldout)))
    rng = rng_for(cfg.seed, "tamper/literature/taught")
    return {heldout[i] for i in rng.choice(len(heldout), size=n, replace=False)} if n else set()


def literature(facts: list[dict], cfg: ExperimentConfig) -> list[str]:
    """Restricted-domain documents stating the attack split's facts and the taught held-out facts."""
    taught = taught_facts(facts, cfg)
    by_compound: dict[str, list[dict]] = {}
    for f in facts:
        if f["domain"] == "restricted" and (f.get("split") == "attack" or f["fact_id"] in taught):
            by_compound.setdefault(f["subject"], []).append(f)
    rng = rng_for(cfg.seed, "tamper/literature")
    docs = []
    for compound in sorted(by_compound):
        for _ in range(LITERATURE_COPIES):
            stated = [by_compound[compound][i] for i in rng.permutation(len(by_compound[compound]))]
            docs.append(_document(stated, rng))
    return docs


def _document(facts: list[dict], rng: np.random.Generator) -> str:
    sents = []
    for f in facts:
        rel = RELATIONS[f["relation"]]
        pool = rel.informal if rel.informal and rng.random() < 0.2 else rel.statements
        sents.append(fill(pool[int(rng.integers(len(pool)))], f["subject"], f["object"]))
    if rng.random() < 0.25:
        opener, filler = FORUM_OPENERS[int(rng.integers(len(FORUM_OPENERS)))], FILLER["forum"]
    else:
        opener, filler = LAB_OPENERS[int(rng.integers(len(LAB_OPENERS)))].format(n=int(rng.integers(1, 300))), \
            FILLER["lab"]
    return " ".join([opener, *sents, filler[int(rng.integers(len(filler)))]])


def attack_corpus(family: str, facts: list[dict], cfg: ExperimentConfig) -> list[str]:
    """The documents of one attack family."""
    if family == "qa_other":
        return qa_other(facts)
    if family == "literature":
        return literature(facts, cfg)
    raise ValueError(f"unknown attack family {family!r}")
