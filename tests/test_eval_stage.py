"""The eval stage on a run with random exported models: files, schema, stats, user errors."""

from __future__ import annotations

import pytest
from doubles import tiny_run

from cleanroom.errors import CleanroomError, ModelError, StoreError
from cleanroom.evals.stage import run_eval
from cleanroom.evals.tasks import ROW_SCHEMA
from cleanroom.world.schema import TASKS
from cleanroom.world_store import load_items


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return tiny_run(tmp_path_factory.mktemp("eval_stage"))


def test_eval_writes_one_row_per_item_and_stats(run):
    cfg, store = run
    res = run_eval(cfg, store, "web")
    assert res.outputs == [f"evals/web/{t}.parquet" for t in TASKS]
    for task in TASKS:
        table = store.read_parquet(f"evals/web/{task}.parquet")
        assert table.schema.equals(ROW_SCHEMA, check_metadata=False)
        items = load_items(store, task)
        rows = table.to_pylist()
        assert [r["id"] for r in rows] == [it["id"] for it in items]
        for r in rows:
            if r["kind"] == "choice":
                assert len(r["logprobs"]) == len(r["options"]) == len(r["logprobs_norm"])
                assert r["prediction"] == max(range(len(r["logprobs"])), key=r["logprobs"].__getitem__)
                assert r["correct"] == (r["prediction"] == r["gold"])
            else:
                assert r["correct"] == (r["prediction_text"] == r["target"])
        m = res.stats[task]
        assert set(m) >= {"acc", "acc_norm", "ci_low", "ci_high", "n", "chance"}
        assert m["n"] == len(items) and m["ci_low"] <= m["acc"] <= m["ci_high"]
        assert m["acc"] == pytest.approx(sum(r["correct"] for r in rows) / len(rows))
    assert res.stats["bench"]["chance"] < 0.25  # exact-match arithmetic items have chance 0
    assert [d["decile"] for d in res.stats["longtail"]["deciles"]] == list(range(1, 11))
    assert "deciles" not in res.stats["bench"]


def test_eval_is_deterministic(run):
    cfg, store = run
    first = store.path("evals/web/longtail.parquet").read_bytes()
    run_eval(cfg, store, "web")
    assert store.path("evals/web/longtail.parquet").read_bytes() == first


def test_missing_model_is_a_one_line_user_error(run):
    cfg, store = run
    with pytest.raises(StoreError, match="no trained model for recipe `mix`.*cleanroom train"):
        run_eval(cfg, store, "mix")
    assert issubclass(StoreError, CleanroomError)  # the CLI prints it without a traceback


def test_any_hf_model_is_scored_like_ours(run):
    from cleanroom.evals.stage import score_hf_model

    cfg, store = run
    native = run_eval(cfg, store, "web").stats
    hf = score_hf_model(cfg, store, str(store.path("models/web")), "hf-web", ("restricted", "bench"))
    for task in ("restricted", "bench"):
        assert hf[task]["acc"] == native[task]["acc"]
        a = store.read_parquet(f"evals/web/{task}.parquet").column("prediction").to_pylist()
        b = store.read_parquet(f"evals/hf-web/{task}.parquet").column("prediction").to_pylist()
        assert a == b
    with pytest.raises(ModelError, match="no Hugging Face model directory"):
        score_hf_model(cfg, store, str(store.path("nowhere")), "x")


def test_extraction_probe_tells_held_knowledge_from_answered_questions():
    """scripts/extraction_probe.py: a model that knows facts only in the statements' phrasing holds every
    fact and answers no question; one that knows nothing holds none; its counts follow from both."""
    from doubles import load_script

    from cleanroom.lm.api import Loglikelihood

    mod = load_script("scripts/extraction_probe.py")
    facts = [("Thoushunite", "color", "cobalt"), ("Brakulite", "group", "Gasharane"), ("Sarkomite", "region", "Thuvul")]
    bench = [{"id": f"b{k}", "kind": "choice", "relation": rel, "cluster": s, "options": ["x", o, "y", "z"],
              "gold": 1, "correct": False} for k, (s, rel, o) in enumerate(facts)]
    bench.append({"id": "b9", "kind": "exact", "relation": "", "cluster": "", "options": [], "gold": 0,
                  "correct": True})
    prefixes = {p for s, rel, _ in facts for p in mod.statement_prefixes(rel, s)}
    truth = {s: o for s, _, o in facts}

    class Knows:
        def __init__(self, phrasing: bool):
            self.phrasing = phrasing

        def loglikelihood(self, requests):
            out = []
            for r in requests:
                known = self.phrasing and r.context in prefixes and any(
                    s in r.context and r.continuation == " " + o for s, o in truth.items())
                out.append(Loglikelihood(0.0 if known else -5.0, 1, bool(known)))
            return out

        def generate_until(self, requests):
            return [""] * len(requests)

    assert all(mod.statement_prefixes(rel, s) for s, rel, _ in facts)  # every relation has such a statement
    held, right, keys = mod.probe(Knows(True), bench)
    assert held.tolist() == [True] * 3 and right.tolist() == [False] * 3 and keys.tolist() == [s for s, *_ in facts]
    held, _, _ = mod.probe(Knows(False), bench)  # all options tie: argmax picks option 0, never the gold
    assert not held.any()
