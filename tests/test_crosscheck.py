"""An independent evaluator: lm-evaluation-harness (`hf` backend) scores an exported model on the
benchmark items and must agree with the native scorer item by item.

The task is a YAML over a local JSONL of the run's multiple-choice `bench` and `twin` items (nothing
is downloaded: HF_DATASETS_OFFLINE / HF_HUB_OFFLINE). `doc_to_text` starts with the literal
`<|bos|>`, which the tokenizer maps to the BOS token, as the native scorer prepends it.
"""

from __future__ import annotations

import json
import os

import pytest
from doubles import tiny_run

from cleanroom.evals.tasks import evaluate_items
from cleanroom.lm.native import NativeLM
from cleanroom.world_store import load_items

lm_eval = pytest.importorskip("lm_eval", reason="the crosscheck needs lm-eval (installed by `make test`)")

TASK_YAML = """task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {path}
test_split: test
output_type: multiple_choice
doc_to_text: "<|bos|>{{{{prompt}}}}"
doc_to_choice: "{{{{options}}}}"
doc_to_target: "{{{{gold}}}}"
metric_list:
  - metric: acc
"""


def test_lm_eval_harness_agrees_with_the_native_scorer(tmp_path, monkeypatch):
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg, store = tiny_run(tmp_path / "run", recipes=("web",))
    native = NativeLM.load(store.path("models/web"), batch_size=16)
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    names = []
    for task in ("bench", "twin"):
        items = [it for it in load_items(store, task) if it["kind"] == "choice"]
        path = tasks / f"{task}.jsonl"
        path.write_text("".join(json.dumps({k: it[k] for k in ("id", "prompt", "options", "gold")}) + "\n"
                                for it in items))
        (tasks / f"{task}.yaml").write_text(TASK_YAML.format(name=f"cleanroom_{task}", path=path))
        names.append(f"cleanroom_{task}")
    out = simple_evaluate(model="hf", model_args=f"pretrained={store.path('models/web')},dtype=float32",
                          tasks=names, task_manager=TaskManager(include_path=str(tasks)), batch_size=8,
                          device="cpu", log_samples=True)
    for task, name in zip(("bench", "twin"), names, strict=True):
        items = [it for it in load_items(store, task) if it["kind"] == "choice"]
        rows = {r["id"]: r for r in evaluate_items(native, items)}
        samples = out["samples"][name]
        assert len(samples) == len(items) > 10
        for s in samples:
            lls = [r[0] for r in s["filtered_resps"]]
            row = rows[s["doc"]["id"]]
            assert max(range(len(lls)), key=lls.__getitem__) == row["prediction"], s["doc"]["id"]
            assert lls == pytest.approx(row["logprobs"], abs=1e-3)
        acc = sum(r["correct"] for r in rows.values()) / len(rows)
        assert out["results"][name]["acc,none"] == pytest.approx(acc)
    assert os.environ["HF_DATASETS_OFFLINE"] == "1"
