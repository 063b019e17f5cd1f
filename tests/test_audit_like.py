"""Benchmark-like training data (the Phi mechanism on real weights): it looks like the test and holds none of
the audited items."""

from __future__ import annotations

import pytest
from audit_helpers import need_benchmarks

from cleanroom.audit.items import TaskOptions
from cleanroom.audit.render import benchmark_like_records
from cleanroom.audit.tasks import GSM8KTask, MMLUTask
from cleanroom.errors import ConfigError


def test_mmlu_like_items_are_other_questions_of_the_audited_subjects():
    need_benchmarks()
    o = TaskOptions(limit=30, seed=0, formulations=("letter", "cloze"))
    task = MMLUTask()
    audited = [it for it in task.items(o) if it.family == "original"]
    like = task.like_items(o, 40)
    assert len(like) == 80 and {it.family for it in like} == {"original"}  # 40 questions x 2 formulations
    assert not {it.source_id for it in like} & {it.source_id for it in audited}
    assert {it.meta["subject"] for it in like} <= {it.meta["subject"] for it in audited}
    assert like == task.like_items(o, 40)  # seeded
    letter = [it for it in like if it.variant == "letter"][0]
    assert letter.prompt.startswith("The following are multiple choice questions") and letter.prompt.endswith("Answer:")


def test_gsm8k_like_items_come_from_templates_whose_items_are_not_audited():
    need_benchmarks()
    task = GSM8KTask()
    o = TaskOptions(limit=20, seed=0)
    audited = [it for it in task.items(o) if it.family == "original"]
    audited_templates = {it.meta["template"] for it in task.items(o) if it.family.startswith("symbolic")}
    like = task.like_items(o, 60)
    assert len(like) == 60
    assert not {it.meta["template"] for it in like} & audited_templates
    assert not {it.meta["question"] for it in like} & {it.meta["question"] for it in audited}
    records = benchmark_like_records(["gsm8k"], o, 5)
    assert all(r["completion"].startswith(" #### ") and r["prompt"].startswith("Question: ") for r in records)
    with pytest.raises(ConfigError, match="no template is left"):  # every templated item audited
        task.like_items(TaskOptions(limit=None, seed=0), 3)


def test_a_like_item_that_repeats_an_audited_question_is_refused(monkeypatch):
    """The overlap guard: a benchmark-like set that contains an audited question is a leak, not teaching to the test."""
    need_benchmarks()
    o = TaskOptions(limit=10, seed=0, formulations=("letter",))
    audited = [it for it in MMLUTask().items(o) if it.family == "original"]
    monkeypatch.setattr(MMLUTask, "like_items", lambda self, o, n: audited[:n])
    with pytest.raises(ConfigError, match="repeat audited questions"):
        benchmark_like_records(["mmlu"], o, 2)
