"""The audit's item record and task protocol (the contract every task, built in or plugged in, follows)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

ORIGINAL = "original"
Kind = Literal["choice", "generate"]


@dataclass(frozen=True)
class AuditItem:
    """One question put to the model.

    - `id`: unique within the task (e.g. `mmlu-anatomy-0003/letter/rot1`).
    - `task`: the task name; `variant`: the formulation ("letter", "cloze", "generate", ...): statistics
      are computed per (task, variant, family).
    - `family`: "original" for the benchmark item, else the twin family name ("rot", "symbolic_names").
    - `source_id`: the original item's id; pairs a twin with its original and is the bootstrap cluster.
    - `kind`: "choice" (log-likelihood of each option, or a letter asked for by chat) or "generate"
      (free text graded by the task's `grade`).
    - `prompt`: the context for log-likelihood / completion; `options`: the continuations scored for a
      choice item (e.g. `[" A", " B", ...]` or `[" Paris", ...]`); `gold`: the correct option's index.
    - `target`: the correct answer as text (a letter, a number, a name); `aliases`: other accepted forms.
    - `meta`: JSON-able extras. Choice items must carry `question` and `choices` (option texts) so a
      chat-only model can be asked for a letter; anything else (subject, popularity bucket) is free.
    - `chat_prompt`: the user message for chat models (generate items; choice items get a letter
      question built from `meta`). Empty = use `prompt`.
    """

    id: str
    task: str
    variant: str
    family: str
    source_id: str
    kind: Kind
    prompt: str
    options: tuple[str, ...] = ()
    gold: int = -1
    target: str = ""
    aliases: tuple[str, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    chat_prompt: str = ""

    def meta_json(self) -> str:
        return json.dumps(self.meta, sort_keys=True, ensure_ascii=False, default=str)


@dataclass
class Grade:
    """A task's verdict on one generated answer."""

    correct: bool
    parsed: bool  # an answer could be extracted at all
    pred: str  # the extracted answer ("" when unparseable)
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. {"correct_strict": False}


@dataclass
class TaskOptions:
    """What the user asked for, as every task sees it."""

    limit: int | None = None  # originals per task (None = all)
    seed: int = 0
    shots: int = 0
    formulations: tuple[str, ...] = ("letter", "cloze")
    max_gen_tokens: int = 256  # completion-style generation (GSM8K)
    task_limits: dict[str, int | None] = field(default_factory=dict)  # per-task `limit` overrides

    def for_task(self, name: str) -> TaskOptions:
        """These options as task `name` sees them (its own limit, when one is given)."""
        if name not in self.task_limits:
            return self
        return replace(self, limit=self.task_limits[name], task_limits={})


class AuditTask(Protocol):
    """A benchmark (or probe) with its fresh twins; it never sees the model.

    `items(options)` returns originals and twins (twins carry their original's `source_id`);
    `grade(item, text)` grades a generated answer of a "generate" item; `describe()` returns the
    task's data source lines for the report (name, origin, license) and notes (e.g. twin counts).
    """

    name: str

    def items(self, options: TaskOptions) -> list[AuditItem]: ...

    def grade(self, item: AuditItem, text: str) -> Grade: ...

    def describe(self) -> dict[str, Any]: ...
