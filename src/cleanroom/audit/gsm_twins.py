"""Fresh twins of GSM8K items by rule: calculator-annotation re-instantiation and the NoOp sentence.

**Calculator re-instantiation** (family "calc"). GSM8K solutions annotate every computation,
`<<16-3-4=9>>`. Each literal in an annotation is one of: the result of an earlier annotation, a number
written in the question, or a constant of the reasoning (12 per dozen, 100 per cent). New values are
drawn for the question's numbers (same magnitude and roundness, never 0 or 1), the chain is
recomputed in order with earlier results replaced by their new values, and the final answer is the
new value of the annotation that produced the original `#### N`. An item is rejected (no twin) when:
an annotation does not evaluate to its own stated result, a literal is both a question number and an
earlier result (ambiguous), a question number also appears in the chain scaled by a unit factor
(x100, /60, ...; it would be changed in one place and not the other), an expression uses a number more
often than the question writes it (`2/2` for "2 bolts and half that much": one 2 is a constant), a
number word of the question ("half", "dozen", "week") stands for a value that is also a question
number (the chain cannot tell them apart), an annotation is a bare value (`<<125=125>>`: the solution
chose between results, a decision the chain does not record), or no draw in `tries` gives a
chain where every originally-integer result stays a non-negative integer, every other result stays
non-negative with at most two decimals, and the final answer is a non-negative integer.

**NoOp** (family "noop"). One irrelevant sentence with a number ("Last year, Maria's neighbour
planted 7 rose bushes.") is inserted before the question's final sentence; the answer is unchanged
(the GSM-NoOp idea: a model that pattern-matches numbers into the computation gets it wrong).
"""

from __future__ import annotations

import ast
import copy
import math
import random
import re
from dataclasses import dataclass, field

from cleanroom.audit.benchmarks import MathProblem
from cleanroom.audit.symbolic import TemplateError, evaluate

_ANNOTATION = re.compile(r"<<([^<>=]+)=([^<>]*)>>")
_EXPR_OK = re.compile(r"^[\d\s.+\-*/()]+$")
_QNUM = re.compile(r"(?<![\w.])(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?(?![\w])")
_UNIT_FACTORS = (10, 12, 24, 60, 100, 1000)
_WORD_CONSTANTS = {"half": 2.0, "halves": 2.0, "twice": 2.0, "double": 2.0, "doubles": 2.0, "third": 3.0, "thirds": 3.0,
                   "triple": 3.0, "thrice": 3.0, "quarter": 4.0, "quarters": 4.0, "dozen": 12.0, "dozens": 12.0,
                   "week": 7.0, "weeks": 7.0, "hour": 60.0, "hours": 60.0, "minutes": 60.0}


@dataclass
class CalcTwin:
    question: str
    answer: str
    substitutions: dict[str, str] = field(default_factory=dict)  # original number -> new number (as written)


def _num(text: str) -> float | None:
    try:
        return float(text.replace(",", "").strip())
    except ValueError:
        return None


def _is_int(x: float) -> bool:
    return math.isfinite(x) and abs(x - round(x)) < 1e-9


def _fmt(v: float, like: str) -> str:
    """`v` written the way the original number `like` was (commas, decimals)."""
    decimals = len(like.split(".")[1]) if "." in like else 0
    if decimals:
        return f"{v:,.{decimals}f}" if "," in like else f"{v:.{decimals}f}"
    iv = int(round(v))
    return f"{iv:,}" if "," in like else str(iv)


def _draw(v: float, like: str, rng: random.Random) -> float:
    """A new value near `v` (x0.5..x1.5) with the same number of decimals and trailing zeros."""
    decimals = len(like.split(".")[1]) if "." in like else 0
    scale = 10 ** decimals
    m = int(round(v * scale))
    zeros = 0
    while m and m % (10 ** (zeros + 1)) == 0:
        zeros += 1
    step = 10 ** zeros
    lo = max(step, (int(m * 0.5) // step) * step)
    hi = max(lo + 2 * step, int(math.ceil(m * 1.5 / step)) * step)
    choices = [x for x in range(lo, hi + 1, step) if x != m and x / scale not in (0, 1)]
    return rng.choice(choices) / scale


def _literals(expr: ast.expr) -> list[ast.Constant]:
    return [n for n in ast.walk(expr) if isinstance(n, ast.Constant) and isinstance(n.value, (int, float))]


def calc_twin(p: MathProblem, seed: int, tries: int = 200) -> CalcTwin:
    """A re-instantiated twin of `p` (see the module doc); TemplateError saying why when there is none."""
    steps = []
    for m in _ANNOTATION.finditer(p.solution):
        expr, stated = m.group(1).replace("x", "*").strip(), _num(m.group(2))
        if not _EXPR_OK.match(expr) or stated is None:
            raise TemplateError(f"annotation `{m.group(0)}` is not plain arithmetic")
        try:
            tree = ast.parse(expr, mode="eval").body
            value = float(evaluate(tree, {}))
        except (SyntaxError, TemplateError, ZeroDivisionError) as e:
            raise TemplateError(f"annotation `{m.group(0)}` does not evaluate ({e})") from None
        if abs(value - stated) > 1e-6 * max(1.0, abs(stated)):
            raise TemplateError(f"annotation `{m.group(0)}` evaluates to {value:g}, not its stated result")
        if isinstance(tree, ast.Constant) or (isinstance(tree, ast.UnaryOp) and isinstance(tree.operand, ast.Constant)):
            raise TemplateError(f"annotation `{m.group(0)}` is a bare value (the solution chose between results)")
        steps.append((tree, stated))
    answer = _num(p.answer)
    if not steps or answer is None:
        raise TemplateError("no calculator annotations")
    final = max((j for j, (_, r) in enumerate(steps) if abs(r - answer) < 1e-9), default=None)
    if final is None:
        raise TemplateError("no annotation produces the final answer")

    qnums: dict[float, list[tuple[int, int, str]]] = {}
    for m in _QNUM.finditer(p.question):
        written = m.group(1) + (m.group(2) or "")
        qnums.setdefault(float(written.replace(",", "")), []).append((m.start(), m.end(), written))
    # which literal is what: ("result", j) | ("question", value) | ("constant", value)
    roles: list[list[tuple[str, float]]] = []
    used: set[float] = set()
    constants: set[float] = set()
    for i, (tree, _) in enumerate(steps):
        r = []
        for lit in _literals(tree):
            v = float(lit.value)
            earlier = [j for j in range(i) if abs(steps[j][1] - v) < 1e-9]
            in_question = v in qnums and v not in (0.0, 1.0)
            if earlier and in_question:
                raise TemplateError(f"{v:g} is both a question number and an earlier result")
            if earlier:
                r.append(("result", float(earlier[-1])))
            elif in_question:
                r.append(("question", v))
                used.add(v)
            else:
                r.append(("constant", v))
                constants.add(v)
        roles.append(r)
    if not used:
        raise TemplateError("no question number is used in the calculation")
    for (tree, _), role in zip(steps, roles, strict=True):  # `2/2` for "2 bolts ... half that": one is a constant
        for v in {x for kind, x in role if kind == "question"}:
            if sum(1 for kind, x in role if kind == "question" and x == v) > len(qnums[v]):
                raise TemplateError(f"{v:g} occurs more often in `{ast.unparse(tree)}` than in the question")
    words = set(re.findall(r"[a-z]+", p.question.lower()))
    for word, v in _WORD_CONSTANTS.items():
        if word in words and v in used:
            raise TemplateError(f"`{word}` means {v:g}, which is also a question number")
    for v in used:
        for f in _UNIT_FACTORS:
            if any(abs(c - v * f) < 1e-9 or abs(c - v / f) < 1e-9 for c in constants):
                raise TemplateError(f"{v:g} also appears scaled by {f} in the calculation")

    rng = random.Random(f"{seed}:calc:{p.id}")
    for _ in range(tries):
        new = {v: _draw(v, qnums[v][0][2], rng) for v in used}
        results: list[float] = []
        ok = True
        for (tree, old), role in zip(steps, roles, strict=True):
            tree2 = copy.deepcopy(tree)  # literals in `ast.walk` order, as `roles` lists them
            for lit, (kind, x) in zip(_literals(tree2), role, strict=True):
                lit.value = new[x] if kind == "question" else results[int(x)] if kind == "result" else x
            try:
                v = float(evaluate(tree2, {}))
            except (ZeroDivisionError, TemplateError, OverflowError):
                ok = False
                break
            if v < 0 or (_is_int(old) and not _is_int(v)) or (not _is_int(old) and not _is_int(v * 100)):
                ok = False
                break
            results.append(v)
        if not ok or not _is_int(results[final]):
            continue
        question = p.question
        subs = {}
        for v in sorted(used, key=lambda x: -qnums[x][0][0]):
            for start, end, written in sorted(qnums[v], reverse=True):
                question = question[:start] + _fmt(new[v], written) + question[end:]
                subs[written] = _fmt(new[v], written)
        return CalcTwin(question, str(int(round(results[final]))), subs)
    raise TemplateError(f"no draw in {tries} keeps every result a non-negative integer")


_NOOP_NAMES = ("Maria", "Kenji", "Amara", "Lukas", "Priya", "Diego", "Hannah", "Omar", "Sofia", "Tomas")
_NOOP_SENTENCES = (
    "Last year, {name}'s neighbour planted {n} rose bushes.",
    "The shop on the corner has been open for {n} years.",
    "{name} once read that some parrots live for more than {n} years.",
    "It rained on {n} days last month.",
    "{name}'s favourite book has {n} chapters.",
    "The town library moved to a new building {n} years ago.",
    "There are {n} benches in the park across the street.",
    "{name}'s cousin collects stamps and owns {n} of them.",
)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'])")


def noop_twin(p: MathProblem, seed: int) -> str:
    """The question with one irrelevant numeric sentence inserted before its final sentence."""
    rng = random.Random(f"{seed}:noop:{p.id}")
    numbers = {m.group(1).replace(",", "") for m in _QNUM.finditer(p.question)}
    n = rng.choice([k for k in range(3, 40) if str(k) not in numbers])
    sentence = rng.choice(_NOOP_SENTENCES).format(name=rng.choice(_NOOP_NAMES), n=n)
    parts = _SENTENCE_END.split(p.question.strip())
    if len(parts) == 1:
        return f"{sentence} {parts[0]}"
    return " ".join(parts[:-1] + [sentence, parts[-1]])
