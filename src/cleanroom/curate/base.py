"""Documents, steps and their statistics: the datatrove-style building blocks of curation.

A *step* is a small object whose `run(docs, rank, world_size)` consumes an iterable of `Document`s
and yields the ones it keeps. Every document it drops becomes a `Removal` (the lineage row: which
document, which step, why, with what score, matched against what) and every step keeps `StepStats`
(documents and word units in and out, removals by reason and by world `kind`). Steps know nothing
about files or executors; `executor.LocalExecutor` chains them in one process and
`ray_executor.RayExecutor` spreads the same chain over a Ray cluster with the same output.

How a step may be split, which only an executor that distributes work cares about:
- `stateless = True`: the verdict on a document depends on that document alone (quality,
  decontamination), so any worker may judge any shard of documents, in any batches;
- `features(batch)` + `decide(batch, features)` (exact and near dedup): the per-document work
  (hashes, MinHash signatures), a pure function of each document's text, and the decision that depends
  on every earlier document (keep the first copy), which must see the corpus in order;
  `judge(batch) == decide(batch, features(batch))`;
- neither (the safety classifier, fitted on everything that reaches it): runs whole, in one place.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from cleanroom.curate.text import words
from cleanroom.errors import MissingDependencyError
from cleanroom.text_stats import count_tokens


def require(module: str, package: str | None = None) -> Any:
    """Import `module` or raise an error that says which pip package to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(
            f"this curation step needs `{package or module}`: pip install {package or module}"
        ) from None


@dataclass(slots=True)
class Document:
    """One document. `row` holds the original columns, written back unchanged for kept documents."""

    id: str
    text: str
    meta: dict[str, Any] = field(default_factory=dict)
    row: dict[str, Any] = field(default_factory=dict)
    _tokens: int = -1
    _words: list[str] | None = None

    @property
    def tokens(self) -> int:
        """Word units (`\\w+|[^\\w\\s]`), the pre-tokenizer budget unit; computed once."""
        if self._tokens < 0:
            self._tokens = count_tokens(self.text)
        return self._tokens

    @property
    def words(self) -> list[str]:
        """Lower-cased `\\w+` words (what matching steps compare); computed once, shared by all steps."""
        if self._words is None:
            self._words = words(self.text)
        return self._words

    @property
    def kind(self) -> str:
        """The world's label for what this document is (e.g. `bio`, `spam`), if the corpus has one."""
        return str(self.meta.get("kind", ""))

    @classmethod
    def from_row(cls, row: dict[str, Any], index: int = 0) -> Document:
        """A document from a Parquet row with at least a `text` column (`id`, `meta` optional)."""
        meta = row.get("meta")
        if isinstance(meta, str):
            try:
                meta = json.loads(meta) if meta else {}
            except json.JSONDecodeError:
                meta = {}
        if not isinstance(meta, dict):
            meta = {}
        doc_id = row.get("id")
        return cls(id=str(doc_id) if doc_id is not None else f"doc-{index:08d}", text=str(row.get("text") or ""),
                   meta=meta, row=row)


@dataclass(slots=True)
class Removal:
    """A lineage row: `doc_id` was removed by `step` for `reason` (score and matched id if any)."""

    doc_id: str
    step: str
    reason: str
    score: float = math.nan
    matched: str = ""
    detail: str = ""


@dataclass
class StepStats:
    """Counters one step keeps while it runs."""

    step: str
    docs_in: int = 0
    docs_out: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    seconds: float = 0.0
    removed_by_reason: dict[str, int] = field(default_factory=dict)
    removed_by_kind: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "step": self.step, "docs_in": self.docs_in, "docs_out": self.docs_out,
            "tokens_in": self.tokens_in, "tokens_out": self.tokens_out, "seconds": round(self.seconds, 3),
            "removed": self.docs_in - self.docs_out,
            "removed_by_reason": dict(sorted(self.removed_by_reason.items())),
            "removed_by_kind": dict(sorted(self.removed_by_kind.items())),
        }


def batched(docs: Iterable[Document], size: int) -> Iterator[list[Document]]:
    it = iter(docs)
    while batch := list(islice(it, size)):
        yield batch


class Step:
    """Base class: a named block that consumes documents and yields the ones it keeps.

    Subclasses implement `judge(batch)`, returning for each document either None (keep) or a
    `Removal`. Batches let steps vectorise (hashing, n-grams, classifiers); order is preserved, and
    order-dependent steps (dedup keeps the first copy) judge a batch front to back.
    """

    name: str = "step"
    batch_size: int = 2048
    stateless: bool = False  # the verdict on a document depends on it alone (see the module docstring)

    def __init__(self) -> None:
        self.stats = StepStats(self.name)
        self.removed: list[Removal] = []

    def judge(self, batch: list[Document]) -> list[Removal | None]:
        raise NotImplementedError

    def judge_with_records(self, batch: list[Document]) -> tuple[list[Removal | None], list[list[Any]]]:
        """`judge`, plus the side records it made for each document (decontamination's leaks), so that a
        stateless step's verdicts can be computed on one machine and replayed on another."""
        return self.judge(batch), [[] for _ in batch]

    def replay_records(self, records: list[Any]) -> None:
        """Take back the side records `judge_with_records` made for one document (default: none)."""

    def run(self, docs: Iterable[Document], rank: int = 0, world_size: int = 1) -> Iterator[Document]:
        """Yield the documents this step keeps. `rank`/`world_size` name this worker's shard of the
        input (1 worker locally); steps that compare documents only see their own shard."""
        for batch in batched(docs, self.batch_size):
            t0 = time.perf_counter()
            verdicts = self.judge(batch)
            self.stats.seconds += time.perf_counter() - t0
            for doc, removal in zip(batch, verdicts, strict=True):
                self.stats.docs_in += 1
                self.stats.tokens_in += doc.tokens
                if removal is None:
                    self.stats.docs_out += 1
                    self.stats.tokens_out += doc.tokens
                    yield doc
                else:
                    self._record(doc, removal)

    def _record(self, doc: Document, removal: Removal) -> None:
        self.removed.append(removal)
        by_reason = self.stats.removed_by_reason
        by_reason[removal.reason] = by_reason.get(removal.reason, 0) + 1
        if doc.kind:
            by_kind = self.stats.removed_by_kind
            by_kind[doc.kind] = by_kind.get(doc.kind, 0) + 1

    def remove(self, doc: Document, reason: str, score: float = math.nan, matched: str = "",
               detail: str = "") -> Removal:
        return Removal(doc.id, self.name, reason, float(score), matched, detail)
