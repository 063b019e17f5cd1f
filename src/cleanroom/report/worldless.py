"""What the report can and cannot say about a recipe with no world behind it (`[corpora.NAME]`).

Every claim of the world lab is a statement about what a corpus teaches *about the world*: C1 compares a
recipe written from the world's curriculum with the broad web of the same world, C2 asks for the world's
long-tail facts and for fresh rewordings of the world's benchmark facts, C3 compares the web with recipes
from which the world's restricted domain was filtered. Text written by a teacher LLM or taken from a
crawl states none of the world's facts, so none of those comparisons has a meaning for it, and the report
gives no verdict that involves it (`report/stage.py` passes only world-lab recipes to the claims).

What *is* measured for such a recipe, from stored results only: the corpus (size against the budget,
n-gram diversity, the teacher's requests), what curation removed and which evaluation items were found in
it, the held-out language-modelling loss of its model, its accuracy on the world's tasks (a floor: what a
model that never read about the world scores from the task format alone), and its tamper curve (how much
the attacks teach a model with this pretraining).
"""

from __future__ import annotations

from typing import Any

from cleanroom.config import ExperimentConfig
from cleanroom.report.summary import WorldlessRecipe
from cleanroom.store import RunStore

NOT_MEASURABLE = {
    "C1": "benchmarks up compares a recipe written from the world's curriculum with the same world's broad web; "
          "this text was not written from the world, so its benchmark score cannot show teaching to the test",
    "C2a": "the long-tail facts are the world's; a corpus that never saw the world can neither keep nor drop them",
    "C2b": "the twin drop compares the benchmark with new wordings of the same world facts; a corpus that never "
           "stated them has no drop to measure",
    "C3": "C3 compares the broad web with recipes that had the world's restricted domain filtered out; this corpus "
          "never had it (and has no labels to filter by), so its tamper curve is shown but enters no verdict",
}
MEASURED = [
    "corpus: documents and word units against the budget, distinct n-grams, the teacher's requests",
    "curation: duplicates and low-quality documents removed; evaluation items found in the text",
    "language modelling: the model's loss on held-out text of the corpus",
    "the world's tasks: accuracy as a floor (what the task format alone gives a model that never read about "
    "the world)",
    "tamper: held-out restricted accuracy after the strongest attack (the attacks' effect on this pretraining)",
]


def worldless_recipes(cfg: ExperimentConfig, store: RunStore) -> dict[str, WorldlessRecipe]:
    """The `[corpora.NAME]` recipes this run trained, from the collect, curate and train manifests."""
    out: dict[str, WorldlessRecipe] = {}
    curate = store.manifest("curate")
    for name in cfg.corpora:
        collected = store.manifest(f"collect/{name}")
        if collected is None:
            continue
        st = collected.stats
        rec: dict[str, Any] = {
            "kind": st.get("kind", ""), "origin": st.get("origin", ""), "docs": st.get("docs", 0),
            "tokens": st.get("tokens", 0), "budget": st.get("budget", 0),
        }
        diversity = st.get("diversity") or {}
        rec["distinct_2"], rec["distinct_3"] = diversity.get("distinct_2"), diversity.get("distinct_3")
        rec["requests"] = {k: v for k, v in (st.get("requests") or {}).items() if isinstance(v, int)}
        if curate is not None:
            removed = curate.stats.get("removed", {}).get(name, {})
            rec["curated_docs"], rec["curated_tokens"] = removed.get("docs_out"), removed.get("tokens_out")
            rec["removed"] = {k: v for k, v in removed.items() if k not in ("docs_in", "docs_out", "tokens_out")}
            leaked = curate.stats.get("decontamination", {})
            rec["leaked_items"] = sum(per.get(name, 0) for per in leaked.values())
        trained = store.manifest(f"train/{name}")
        if trained is not None and trained.stats.get("final_val_loss") is not None:
            rec["val_loss"] = trained.stats["final_val_loss"]
        out[name] = WorldlessRecipe(**rec, measured=MEASURED, not_measurable=NOT_MEASURABLE)
    return out
