"""Quality filter: Gopher/C4-style heuristic signals with thresholds from config, plus a hook for a
learned quality classifier.

Signals (per document; a document is removed for the first rule it breaks, in this order):
- `too_short` / `too_long`: word count outside [min_words, max_words];
- `repeated_lines`: share of non-empty lines that repeat an earlier line (Gopher);
- `symbols`: symbol marks (`#`, `$`, `|`, `*`, `...`, `>>>`, ...) per word (Gopher's symbol ratio);
  arithmetic operators are not symbols, so worked problems survive;
- `few_stopwords`: share of words that are English function words (Gopher's stop-word rule, as a
  ratio: natural prose, even terse forum prose, uses some; keyword spam uses none);
- `boilerplate`: share of lines that are cookie banners, navigation or legal footers (C4);
- `top_word`: share of words taken by the single most frequent word (repetition);
- `classifier`: a learned scorer (`curate.quality_classifier = "module:function"`), a function that
  takes a list of texts and returns one probability of "good" per text, below `quality_min_score`.
"""

from __future__ import annotations

import importlib
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cleanroom.config import ConfigError
from cleanroom.curate.base import Document, Removal, Step
from cleanroom.curate.text import words

STOPWORDS = frozenset(
    "a an the and or but if so as at by for from in into of on onto to with without about over under "
    "is are was were be been being am do does did have has had will would can could should may might "
    "i me my we our you your he him his she her it its they them their this that these those there "
    "what which who whom when where why how not no all any some each more most very just than then".split()
)
SYMBOLS = re.compile(r"\.\.\.|…|>>+|<<+|[#$%&*|~^@\\_`]")
BOILERPLATE = re.compile(
    r"cookie|privacy policy|terms of (service|use)|all rights reserved|unsubscribe|subscribe to|"
    r"sign up|log ?in|javascript|sitemap|powered by|report abuse",
    re.IGNORECASE,
)

Scorer = Callable[[list[str]], Sequence[float]]


@dataclass(frozen=True)
class QualityThresholds:
    min_words: int = 8
    max_words: int = 100_000
    max_dup_line_frac: float = 0.3
    max_symbol_ratio: float = 0.1
    min_stopword_ratio: float = 0.05
    max_boilerplate_line_frac: float = 0.5
    max_top_word_frac: float = 0.3
    min_classifier_score: float = 0.5


def quality_signals(text: str, toks: list[str] | None = None) -> dict[str, float]:
    """The heuristic signals of one text (all ratios in [0, 1] except `symbol_ratio`); `toks` are
    its `words(text)` if already computed."""
    toks = words(text) if toks is None else toks
    n = len(toks)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    top = Counter(toks).most_common(1)[0][1] if n else 0
    return {
        "words": float(n),
        "dup_line_frac": 1.0 - len(set(lines)) / len(lines) if lines else 0.0,
        "symbol_ratio": len(SYMBOLS.findall(text)) / max(n, 1),
        "stopword_ratio": sum(w in STOPWORDS for w in toks) / max(n, 1),
        "boilerplate_line_frac": sum(bool(BOILERPLATE.search(ln)) for ln in lines) / len(lines) if lines else 0.0,
        "top_word_frac": top / n if n else 0.0,
    }


def load_scorer(spec: str) -> Scorer:
    """Import a learned quality scorer from "module:function" (a function texts -> probabilities)."""
    module, _, fn = spec.partition(":")
    try:
        return getattr(importlib.import_module(module), fn)
    except (ImportError, AttributeError, ValueError):
        raise ConfigError(f"config key `curate.quality_classifier`: cannot import `{spec}` "
                         "(expected \"module:function\")") from None


class QualityFilter(Step):
    """Drop documents that break a heuristic quality rule or that a learned scorer rates too low."""

    name = "quality"
    # per document; a learned `scorer` must score each text independently of its batch (hashing and
    # linear classifiers do) for the Ray executor to reproduce the local output
    stateless = True

    def __init__(self, thresholds: QualityThresholds | None = None, scorer: Scorer | None = None) -> None:
        super().__init__()
        self.t = thresholds or QualityThresholds()
        self.scorer = scorer

    def rule(self, s: dict[str, float]) -> tuple[str, float] | None:
        """The first rule these signals break, with the offending value, or None."""
        t = self.t
        checks = [
            ("too_short", s["words"], s["words"] < t.min_words),
            ("too_long", s["words"], s["words"] > t.max_words),
            ("repeated_lines", s["dup_line_frac"], s["dup_line_frac"] > t.max_dup_line_frac),
            ("symbols", s["symbol_ratio"], s["symbol_ratio"] > t.max_symbol_ratio),
            ("few_stopwords", s["stopword_ratio"], s["stopword_ratio"] < t.min_stopword_ratio),
            ("boilerplate", s["boilerplate_line_frac"], s["boilerplate_line_frac"] > t.max_boilerplate_line_frac),
            ("top_word", s["top_word_frac"], s["top_word_frac"] > t.max_top_word_frac),
        ]
        for reason, value, broken in checks:
            if broken:
                return reason, value
        return None

    def judge(self, batch: list[Document]) -> list[Removal | None]:
        out: list[Removal | None] = []
        for doc in batch:
            broken = self.rule(quality_signals(doc.text, doc.words))
            out.append(self.remove(doc, broken[0], broken[1]) if broken else None)
        if self.scorer is not None:
            keep = [i for i, r in enumerate(out) if r is None]
            scores = self.scorer([batch[i].text for i in keep]) if keep else []
            for i, p in zip(keep, scores, strict=True):
                if p < self.t.min_classifier_score:
                    out[i] = self.remove(batch[i], "classifier", float(p))
        return out
