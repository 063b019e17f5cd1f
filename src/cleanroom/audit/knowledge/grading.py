"""Answer normalisation, alias matching and SimpleQA-style grading of short answers.

`normalize` follows SQuAD's answer normalisation (lower case, punctuation and the articles a/an/the
removed, whitespace collapsed) and also folds diacritics and the Latin letters NFKD does not
decompose (ø, æ, ł, ß, ...), so "Tromsø", "TROMSO" and "the tromso" compare equal.

`grade_answer` gives SimpleQA's three grades without a model:
- **correct**: the answer names the gold (any alias, matched as a whole phrase) and no competing value
  of the same kind (another country, another year ...); hedging words ("I think", "probably", "I'm not
  sure, but") do not matter when a single candidate is given, as in SimpleQA's grader instructions;
- **incorrect**: it names a different value, or the gold together with a competitor ("Norway or
  Sweden"), or anything else that is not an abstention;
- **not_attempted**: empty, or an abstention phrase ("I don't know", "not sure", "cannot answer",
  refusals) with no candidate answer in it.
Years are graded on the first year-like number in the answer ("born in 1835 and died in 1910" answers
a birth-year question with 1835; a decade such as "1960s" is no year). Competitors come from the
relation's own answer vocabulary (every value of that kind in the data), matched by longest span, so
"Guinea" inside "Equatorial Guinea" is not a second candidate. An abstention phrase grades "not
attempted" only when the answer offers no candidate: no value of the vocabulary and no capitalised
word outside a small stop list and the question's subject ("I'm not sure, but I think Charles Dickens"
is an incorrect attempt).

An optional LLM grader (`LLMGrader`: question, gold, aliases, answer -> grade) can replace the rules;
the caller keeps both grades.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence

GRADES = ("correct", "incorrect", "not_attempted")
LLMGrader = Callable[[str, str, Sequence[str], str], str]

# letters that NFKD leaves alone but an English speaker writes without the mark
_FOLD = str.maketrans({"ø": "o", "Ø": "O", "æ": "ae", "Æ": "AE", "œ": "oe", "Œ": "OE", "ł": "l", "Ł": "L",
                       "đ": "d", "Đ": "D", "ð": "d", "Ð": "D", "þ": "th", "Þ": "Th", "ß": "ss", "ı": "i",
                       "ʻ": "'", "ʼ": "'", "’": "'", "‘": "'", "–": "-", "—": "-"})
_ARTICLES = {"a", "an", "the"}
_PUNCT = re.compile(r"[^\w\s]|_")


def fold(text: str) -> str:
    """Diacritics removed: NFKD, combining marks dropped, a few extra Latin letters folded."""
    text = unicodedata.normalize("NFKD", text.translate(_FOLD))
    return "".join(c for c in text if not unicodedata.combining(c))


def tokens(text: str) -> list[str]:
    """Normalised word tokens: folded, case-folded, punctuation -> space, articles dropped."""
    words = _PUNCT.sub(" ", fold(text).casefold().replace("'", "")).split()
    return [w for w in words if w not in _ARTICLES]


def normalize(text: str) -> str:
    return " ".join(tokens(text))


def alias_set(values: Iterable[str]) -> list[str]:
    """Distinct normalised non-empty aliases, in first-seen order."""
    out: dict[str, None] = {}
    for v in values:
        n = normalize(v)
        if n:
            out.setdefault(n, None)
    return list(out)


# ----------------------------------------------------------------------------------- abstention

_ABSTAIN = re.compile(
    r"\b(i\s+(do\s*n[o']?t|don't|dont|cannot|can't|cant|am\s+not\s+able\s+to|am\s+unable\s+to)\s+"
    r"(know|say|tell|answer|recall|remember|be\s+sure|determine|provide|help|find|confirm|verify)"
    r"|not\s+(sure|certain)|unsure|no\s+idea|no\s+clue|unknown|uncertain|cannot\s+be\s+determined"
    r"|(can't|cannot|unable\s+to)\s+(answer|say|determine|provide)|(do\s*n[o']?t|don't)\s+have\s+"
    r"(enough\s+)?(information|data|access)|no\s+(information|data|record)|as\s+an\s+ai|i'?m\s+sorry|sorry"
    r"|i\s+apologi[sz]e|n/?a\b|not\s+available|no\s+answer|pass\b)",
    re.IGNORECASE,
)
# capitalised words that are not a candidate answer by themselves
_NOT_CANDIDATE = {"i", "i'm", "im", "sorry", "unfortunately", "as", "not", "the", "it", "he", "she", "this", "that",
                  "unknown", "however", "but", "answer", "question", "ai", "maybe", "perhaps", "probably",
                  "possibly", "no", "yes", "there", "my", "in", "a", "an", "what", "who", "which", "please",
                  "based", "according", "hmm", "well", "note", "n/a", "none"}
_YEAR = re.compile(r"(?<![\d.,])(\d{3,4})(?![\d,]|\.\d|'?s\b)")  # not "1,835", "18.35", "1960s"


def is_abstention(answer: str) -> bool:
    """Empty, or an abstention/refusal phrase ("I don't know", "not sure", "I cannot answer")."""
    return not normalize(answer) or bool(_ABSTAIN.search(answer.replace("’", "'")))


def _spans(toks: list[str], phrase: list[str]) -> list[tuple[int, int]]:
    n = len(phrase)
    return [(i, i + n) for i in range(len(toks) - n + 1) if toks[i:i + n] == phrase]


def _matches(toks: list[str], values: dict[str, int]) -> set[int]:
    """Values (by index) named in `toks`, keeping only maximal spans (longest match wins)."""
    found: list[tuple[int, int, int]] = []
    for alias, idx in values.items():
        for s, e in _spans(toks, alias.split()):
            found.append((s, e, idx))
    found.sort(key=lambda f: (-(f[1] - f[0]), f[0]))
    taken: list[tuple[int, int]] = []
    named = set()
    for s, e, idx in found:
        if any(s >= ts and e <= te for ts, te in taken):
            continue  # inside a longer match ("guinea" inside "equatorial guinea")
        taken.append((s, e))
        named.add(idx)
    return named


def _has_candidate(answer: str, ignore: str = "") -> bool:
    """A capitalised word that is neither a stop word nor part of `ignore` (the question's subject)."""
    skip = set(tokens(ignore))
    words = re.findall(r"[A-Za-zÀ-ÿ][\w'’.-]*", answer)
    return any(w[0].isupper() and w.casefold().strip(".'’") not in _NOT_CANDIDATE and normalize(w) not in skip
               for w in words)


def grade_answer(answer: str, aliases: Sequence[str], kind: str = "", competitors: Iterable[str] = (),
                 subject: str = "") -> str:
    """SimpleQA grade of a short answer: "correct", "incorrect" or "not_attempted" (see module doc).

    `aliases`: every accepted form of the gold; `kind`: the answer type ("year" switches to the year
    rule); `competitors`: forms of the other values of the same
    kind (anything not an alias of the gold); `subject`: the entity asked about (never a candidate).
    """
    gold = alias_set(aliases)
    if kind == "year":
        m = _YEAR.search(answer)
        if m is None:
            return "not_attempted" if is_abstention(answer) and not _has_candidate(answer, subject) else "incorrect"
        return "correct" if str(int(m.group(1))) in {g.lstrip("0") for g in gold} else "incorrect"
    toks = tokens(answer)
    if not toks:
        return "not_attempted"
    goldset = set(gold)
    values = {g: 0 for g in gold}
    for c in alias_set(competitors):
        if c not in goldset:
            values.setdefault(c, 1)
    named = _matches(toks, values)
    if named == {0}:
        return "correct"
    if named:
        return "incorrect"  # a wrong value, or the gold hedged with a competitor
    if is_abstention(answer) and not _has_candidate(answer, subject):
        return "not_attempted"
    return "incorrect"
