"""Decontamination: remove documents that contain an evaluation item, verbatim or lightly edited.

The Cosmopedia method in two passes:
1. **Candidates by n-gram overlap.** Every item (prompt + gold target, as lower-cased words) is cut
   into word n-grams; a document that shares one with an item is a candidate for that item. The
   n-gram is `ngram` words (13 by default), or a third of the item's length for short items (at
   least `min_ngram`), so that one or two edited words cannot hide a 20-word item. N-grams shared by
   more than `max_items_per_ngram` items are template boilerplate ("in which city was") and ignored.
2. **Confirmation by sequence match.** For each candidate, the document window aligned with the
   matching n-gram is compared with the item by `difflib.SequenceMatcher` over words, and the match
   ratio 2*M/T is computed twice: plain, and with every word weighted by its squared IDF over the
   evaluation items (template words such as "which", "answer" and option letters weigh ~1-4, an
   item's subject ~30, a number ~20). Both reaching `ratio` confirm the leak.
   Why weighted: items are short and templated, so the plain ratio calls a textbook exercise with the
   same template about another subject ("... classify Pinbruite? A. Solturane ..." vs "... classify
   Thourshoite? ...") a leak (0.89); weighted it scores ~0.7, while the item itself renumbered or
   with an edited connective word keeps >= 0.85. Why plain too: a document that states a QA item's
   fact in its own words ("X is the work of Y" for "Whose work is X? Answer: Y") shares all the
   heavy words but is not the item. In-format teaching (same template, other subject or other
   distractors) stays below the default 0.8; a copy that differs from an item *only* in its subject,
   or that keeps its stem, answer and most distractors, may be removed (we err on removal).

Every confirmed (document, item) pair is kept in `leaks` for the per-task report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from difflib import SequenceMatcher

import numpy as np

from cleanroom.curate.base import Document, Removal, Step
from cleanroom.curate.text import WordHasher, ngram_hashes, words


@dataclass(frozen=True, slots=True)
class EvalItem:
    """The text of one evaluation item that must not appear in training data."""

    id: str
    task: str
    text: str


@dataclass(frozen=True, slots=True)
class Leak:
    doc_id: str
    item_id: str
    task: str
    ratio: float


def items_from_rows(rows: list[dict]) -> list[EvalItem]:
    """Evaluation items from `world/items` rows: the prompt followed by the gold target."""
    out = []
    for r in rows:
        target = r.get("target") or ""
        text = f"{r.get('prompt') or ''} {target}".strip()
        out.append(EvalItem(str(r["id"]), str(r.get("task") or "items"), text))
    return out


class Decontaminate(Step):
    """Drop documents containing any evaluation item (n-gram candidates, sequence-match confirmation)."""

    name = "decontaminate"
    stateless = True  # a document's verdict depends on the items and that document only

    def __init__(self, items: list[EvalItem], ngram: int = 13, ratio: float = 0.8, min_ngram: int = 4,
                 max_items_per_ngram: int = 5, max_anchors: int = 8) -> None:
        super().__init__()
        self.items = items
        self.ngram, self.ratio, self.min_ngram = ngram, ratio, min(min_ngram, ngram)
        self.max_anchors = max_anchors
        self.leaks: list[Leak] = []
        self._hasher = WordHasher()
        self._item_words = [words(it.text) for it in items]
        df: dict[str, int] = {}
        for toks in self._item_words:
            for w in set(toks):
                df[w] = df.get(w, 0) + 1
        n_items = len(items)
        self._idf = {w: math.log((n_items + 1) / (c + 1)) + 1.0 for w, c in df.items()}
        self._idf_unseen = math.log(n_items + 1) + 1.0
        # size -> (sorted n-gram hashes, {hash: [(item index, offset in item), ...]})
        index: dict[int, dict[int, list[tuple[int, int]]]] = {}
        for k, toks in enumerate(self._item_words):
            if not toks:
                continue
            size = self.ngram_size(len(toks))
            grams = ngram_hashes(self._hasher(toks), size).tolist()
            table = index.setdefault(size, {})
            for off, h in enumerate(grams):
                hits = table.setdefault(h, [])
                if not hits or hits[-1][0] != k:
                    hits.append((k, off))
        self.ignored_ngrams = 0
        self._index: dict[int, tuple[np.ndarray, dict[int, list[tuple[int, int]]]]] = {}
        for size, table in index.items():
            common = [h for h, hits in table.items() if len({k for k, _ in hits}) > max_items_per_ngram]
            self.ignored_ngrams += len(common)
            for h in common:
                del table[h]
            self._index[size] = (np.array(sorted(table), dtype=np.uint64), table)

    def ngram_size(self, item_len: int) -> int:
        """Candidate n-gram length for an item of `item_len` words."""
        return min(item_len, self.ngram, max(self.min_ngram, item_len // 3))

    def judge(self, batch: list[Document]) -> list[Removal | None]:
        verdicts, leaks = self.judge_with_records(batch)
        for found in leaks:
            self.leaks += found
        return verdicts

    def replay_records(self, records: list[Leak]) -> None:
        self.leaks += records

    def judge_with_records(self, batch: list[Document]) -> tuple[list[Removal | None], list[list[Leak]]]:
        """Verdicts, and every confirmed (document, item) leak of each document."""
        toks = [d.words for d in batch]
        lengths = np.array([len(t) for t in toks], dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(lengths)])
        flat = self._hasher([w for t in toks for w in t])
        doc_of = np.repeat(np.arange(len(batch)), lengths)
        # candidates[(doc, item)] = aligned document positions where the item would start
        candidates: dict[tuple[int, int], set[int]] = {}
        for size, (keys, table) in self._index.items():
            grams = ngram_hashes(flat, size)
            if not len(grams) or not len(keys):
                continue
            pos = np.flatnonzero(np.isin(grams, keys))
            pos = pos[doc_of[pos] == doc_of[pos + size - 1]]  # drop n-grams that straddle two documents
            for p, h in zip(pos.tolist(), grams[pos].tolist(), strict=True):
                d = int(doc_of[p])
                for k, off in table[h]:
                    candidates.setdefault((d, k), set()).add(p - int(starts[d]) - off)
        best: dict[int, Leak] = {}
        leaks: list[list[Leak]] = [[] for _ in batch]
        for (d, k), anchors in sorted(candidates.items()):
            r = self._confirm(toks[d], self._item_words[k], anchors)
            if r >= self.ratio:
                item = self.items[k]
                leak = Leak(batch[d].id, item.id, item.task, round(r, 4))
                leaks[d].append(leak)
                if d not in best or r > best[d].ratio:
                    best[d] = leak
        verdicts = [
            self.remove(doc, "eval_item", best[d].ratio, matched=best[d].item_id, detail=best[d].task)
            if d in best else None
            for d, doc in enumerate(batch)
        ]
        return verdicts, leaks

    def weight(self, word: str) -> float:
        """Squared IDF of a word over the evaluation items (words no item uses weigh the most).

        Numbers weigh half the most, however often a digit occurs across items: they are content
        (operands, answers: "2 crates of 5" and "2 crates of 2" are different problems), but an
        exercise's own number ("Exercise 21.") is layout that a copy may change."""
        if word.isdigit():
            return 0.5 * self._idf_unseen**2
        return self._idf.get(word, self._idf_unseen) ** 2

    def weighted_ratio(self, a: list[str], b: list[str], matcher: SequenceMatcher | None = None) -> float:
        """min(plain, weighted) difflib ratio 2*M/T of two word sequences (M: matched, T: all words).

        The weighted ratio counts every word by `weight`, so a shared template with another subject
        does not look like the item; the plain ratio counts every word once, so a document that states
        a QA item's fact in its own words ("X is the work of Y" for "Whose work is X? Answer: Y") does
        not look like the item either. A leak has to pass both. Symmetric on purpose: words the
        document has in place of the item's (another subject, another answer) count against the match.
        """
        if matcher is None:
            matcher = SequenceMatcher(None, autojunk=False)
            matcher.set_seq2(b)
        matcher.set_seq1(a)
        blocks = matcher.get_matching_blocks()
        plain = 2.0 * sum(size for _, _, size in blocks) / (len(a) + len(b)) if a or b else 0.0
        matched = sum(self.weight(w) for i, _, size in blocks for w in a[i:i + size])
        total = sum(map(self.weight, a)) + sum(map(self.weight, b))
        return min(plain, 2.0 * matched / total if total else 0.0)

    def _confirm(self, doc_words: list[str], item_words: list[str], anchors: set[int]) -> float:
        """Best weighted match ratio between the item and the document windows aligned at `anchors`."""
        n = len(item_words)
        matcher = SequenceMatcher(None, autojunk=False)
        matcher.set_seq2(item_words)
        best = 0.0
        for a in sorted(anchors)[: self.max_anchors]:
            lo = max(0, a)
            best = max(best, self.weighted_ratio(doc_words[lo: lo + n], item_words, matcher))
            if best >= 1.0:
                break
        return best
