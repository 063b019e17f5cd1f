"""Fresh twins of a multiple-choice item: the same question, with its options changed by a fixed rule.

- `rot1`..`rot3` (family "rot"): the options rotated by k places, so the gold answer moves to another
  letter (the option-permutation test: a model that knows the answer follows it; one that learned a
  letter does not). Reported as accuracy over the rotations and as *consistency*: the share of items
  whose chosen option text is the same in all rotations.
- "none_of_others" (MMLU-CF's rule): the gold option's text is replaced by "None of the other choices",
  which becomes the correct answer; the model must reject every remaining option.
- "wicked" (WiCkeD): one wrong option (seeded choice) is dropped and "None of the above" is appended as
  the last option; the gold answer stays correct.

Items whose options already say "none/all of the above" (or similar) get no NOTA twin: the rule would
make them ambiguous. Every twin keeps the original's id as `source_id`.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from cleanroom.audit.benchmarks import MCQuestion

NONE_OF_OTHERS = "None of the other choices"
NONE_OF_ABOVE = "None of the above"
_NOTA = re.compile(r"\b(none|all|both|neither)\s+of\s+(the\s+)?(above|these|those|other|others|them)\b", re.I)


@dataclass(frozen=True)
class MCTwin:
    family: str
    name: str  # e.g. "rot2"; unique per source item
    choices: tuple[str, ...]
    gold: int


def rotations(q: MCQuestion) -> list[MCTwin]:
    n = len(q.choices)
    return [MCTwin("rot", f"rot{k}", tuple(q.choices[(i + k) % n] for i in range(n)), (q.gold - k) % n)
            for k in range(1, n)]


def has_nota(q: MCQuestion) -> bool:
    return any(_NOTA.search(c) for c in q.choices)


def none_of_others(q: MCQuestion) -> MCTwin | None:
    if has_nota(q):
        return None
    choices = list(q.choices)
    choices[q.gold] = NONE_OF_OTHERS
    return MCTwin("none_of_others", "none_of_others", tuple(choices), q.gold)


def wicked(q: MCQuestion, seed: int) -> MCTwin | None:
    if has_nota(q):
        return None
    wrong = [i for i in range(len(q.choices)) if i != q.gold]
    drop = random.Random(f"{seed}:wicked:{q.id}").choice(wrong)
    choices = [c for i, c in enumerate(q.choices) if i != drop] + [NONE_OF_ABOVE]
    gold = q.gold - (1 if drop < q.gold else 0)
    return MCTwin("wicked", "wicked", tuple(choices), gold)


def mc_twins(q: MCQuestion, seed: int, families: set[str]) -> list[MCTwin]:
    """The twins of `q` in the requested families, in a fixed order."""
    out: list[MCTwin] = []
    if "rot" in families:
        out += rotations(q)
    if "none_of_others" in families and (t := none_of_others(q)) is not None:
        out.append(t)
    if "wicked" in families and (t := wicked(q, seed)) is not None:
        out.append(t)
    return out
