"""The built-in audit tasks: MMLU, GSM8K and GPQA with their fresh twins, in lm-evaluation-harness's formats.

Prompts (lm-evaluation-harness 0.4.13 task configs, so scores are comparable):
- MMLU letter (`mmlu`): "The following are multiple choice questions (with answers) about {subject}.\\n\\n"
  + "{question}\\nA. ..\\nB. ..\\nC. ..\\nD. ..\\nAnswer:", options " A".." D".
- MMLU cloze (`mmlu_continuation`): "The following are questions (with answers) about {subject}.\\n\\n"
  + "Question: {question}\\nAnswer:", options " " + each option's text; scored by length-normalised
  log-likelihood (lm-eval's acc_norm; plain acc is recorded too).
- GPQA (`gpqa_diamond_zeroshot`): "What is the correct answer to this question:{Q}\\nChoices:\\n(A) ..\\n
  ...\\nAnswer:", options " (A)".." (D)"; the options' order is seeded per item (lm-eval shuffles too).
- GSM8K (`gsm8k`): "Question: {question}\\nAnswer:", greedy until "Question:", graded by the number after
  "#### " (strict) and by the last number in the answer (flexible, the primary score), both after
  lm-eval's normalisation (commas, "$", a final "." removed).
Few-shot (`--shots k`): MMLU takes the first k items of each subject, GSM8K the last k test items,
as worked examples, and never evaluates them (lm-eval uses MMLU's dev split and GSM8K's train split,
which the offline packages do not ship). GPQA is zero-shot only.

Twin families: MMLU and GPQA letter format: `rot` (3 rotations), `none_of_others`, `wicked`
(`mc_twins`); the cloze format gets none (option order cannot matter when options are scored one by one,
and the NOTA rules need the options listed in the prompt). GSM8K: `symbolic_names`, `symbolic_numbers`,
`symbolic_both` (GSM-Symbolic re-instantiations) and `symbolic_default` (the template's own concrete
question, a control for the template's light edits of the original wording), `calc` and `noop`
(`gsm_twins`). With `--limit`, GSM8K takes the items that have a GSM-Symbolic template first (so the
symbolic families get as many pairs as possible), then the rest in file order.
"""

from __future__ import annotations

import random
import re
from typing import Any

from cleanroom.audit.benchmarks import (
    LETTERS,
    SOURCES,
    MathProblem,
    MCQuestion,
    gsm_symbolic_dir,
    load_gpqa,
    load_gsm8k,
    load_mmlu,
)
from cleanroom.audit.gsm_twins import calc_twin, noop_twin
from cleanroom.audit.items import ORIGINAL, AuditItem, Grade, TaskOptions
from cleanroom.audit.mc_twins import mc_twins
from cleanroom.audit.symbolic import TemplateError, load_templates
from cleanroom.errors import ConfigError, InputError, MissingDependencyError

MC_FAMILIES = ("rot", "none_of_others", "wicked")
GSM_FAMILIES = ("symbolic_default", "symbolic_names", "symbolic_numbers", "symbolic_both", "calc", "noop")
GSM_STOP = ("Question:", "</s>", "<|im_end|>")


def letter_question(question: str, choices: tuple[str, ...] | list[str]) -> str:
    """The chat prompt for a choice item: the question, lettered options, and how to answer."""
    letters = LETTERS[:len(choices)]
    opts = "\n".join(f"{letters[i]}. {c}" for i, c in enumerate(choices))
    return (f"Answer the following multiple choice question. Reply with only the letter of the correct "
            f"option ({', '.join(letters[:-1])} or {letters[-1]}).\n\n{question.strip()}\n\n{opts}")


def parse_letter(text: str, n_options: int) -> str | None:
    """The letter a chat answer chose, or None when it cannot be read unambiguously."""
    letters = LETTERS[:n_options]
    t = text.strip()
    m = re.fullmatch(rf"\(?([{letters}])\)?[.):]?", t)
    if m:
        return m.group(1)
    found = re.findall(rf"(?:answer|option|choice)\s*(?:is|:)?\s*\**\(?([{letters}])\)?(?![A-Za-z])", t, re.I)
    if found:
        return found[-1].upper()
    m = re.match(rf"\(?([{letters}])[.):]\s", t)
    if m:
        return m.group(1)
    standalone = set(re.findall(rf"(?<![A-Za-z])([{letters}])(?![A-Za-z])", t))
    return standalone.pop() if len(standalone) == 1 else None


# ---------------------------------------------------------------------------------------------- MC

def _mc_item(task: str, variant: str, family: str, name: str, src: MCQuestion, choices: tuple[str, ...],
             gold: int, prompt: str, options: tuple[str, ...], extra: dict[str, Any]) -> AuditItem:
    return AuditItem(
        id=f"{src.id}/{variant}/{name}", task=task, variant=variant, family=family, source_id=src.id,
        kind="choice", prompt=prompt, options=options, gold=gold, target=LETTERS[gold],
        meta={"question": src.question.strip(), "choices": list(choices), "subject": src.subject, **extra},
    )


class MMLUTask:
    """MMLU in letter and/or cloze format, with option-rule twins for the letter format."""

    name = "mmlu"

    def __init__(self, questions: list[MCQuestion] | None = None):
        self._questions = questions

    def questions(self) -> list[MCQuestion]:
        if self._questions is None:
            self._questions = load_mmlu()
        return self._questions

    def describe(self) -> dict[str, Any]:
        return {"sources": [SOURCES["mmlu"].__dict__]}

    @staticmethod
    def letter_text(q: MCQuestion, choices: tuple[str, ...]) -> str:
        opts = "".join(f"\n{LETTERS[i]}. {c}" for i, c in enumerate(choices))
        return f"{q.question.strip()}{opts}\nAnswer:"

    def _split(self, o: TaskOptions) -> tuple[dict[str, list[MCQuestion]], list[MCQuestion], list[MCQuestion]]:
        """(few-shot examples per subject, the audit's sample, the rest of the pool)."""
        shots: dict[str, list[MCQuestion]] = {}
        pool = []
        for q in self.questions():
            ex = shots.setdefault(q.subject, [])
            if len(ex) < o.shots:
                ex.append(q)
            else:
                pool.append(q)
        chosen = _spread(pool, o.limit, o.seed)
        taken = {id(q) for q in chosen}
        return shots, chosen, [q for q in pool if id(q) not in taken]

    def items(self, o: TaskOptions) -> list[AuditItem]:
        shots, chosen, _ = self._split(o)
        return [it for q in chosen for it in self._question_items(q, shots[q.subject], o, twins=True)]

    def like_items(self, o: TaskOptions, n: int) -> list[AuditItem]:
        """Benchmark-*like* originals: `n` questions of the audited subjects that the audit at `o` does not
        ask (nor uses as few-shot examples), in the same formulations; for teaching to the test."""
        shots, chosen, rest = self._split(o)
        subjects = {q.subject for q in chosen}
        pool = [q for q in rest if q.subject in subjects]
        picked = _spread(pool, n, o.seed + 1)
        return [it for q in picked for it in self._question_items(q, shots[q.subject], o, twins=False)]

    def _question_items(self, q: MCQuestion, shots: list[MCQuestion], o: TaskOptions, twins: bool) -> list[AuditItem]:
        out: list[AuditItem] = []
        for variant in o.formulations:
            if variant == "letter":
                head = f"The following are multiple choice questions (with answers) about {q.subject}.\n\n"
                head += "".join(f"{self.letter_text(e, e.choices)} {LETTERS[e.gold]}\n\n" for e in shots)
                versions = [(ORIGINAL, ORIGINAL, q.choices, q.gold)]
                if twins:
                    versions += [(t.family, t.name, t.choices, t.gold) for t in mc_twins(q, o.seed, set(MC_FAMILIES))]
                for family, name, choices, gold in versions:
                    opts = tuple(f" {LETTERS[i]}" for i in range(len(choices)))
                    out.append(_mc_item(self.name, "letter", family, name, q, choices, gold,
                                        head + self.letter_text(q, choices), opts, {}))
            elif variant == "cloze":
                head = f"The following are questions (with answers) about {q.subject}.\n\n"
                head += "".join(f"Question: {e.question.strip()}\nAnswer: {e.choices[e.gold]}\n\n" for e in shots)
                out.append(_mc_item(self.name, "cloze", ORIGINAL, ORIGINAL, q, q.choices, q.gold,
                                    head + f"Question: {q.question.strip()}\nAnswer:",
                                    tuple(f" {c}" for c in q.choices), {"normalize": True}))
            else:
                raise ConfigError(f"unknown formulation `{variant}` (choose letter, cloze or both)")
        return out

    def grade(self, item: AuditItem, text: str) -> Grade:
        raise InputError("MMLU items are choice items; they are not graded from free text")


def _spread(pool: list, limit: int | None, seed: int) -> list:
    """`limit` items spread over the whole pool (a seeded sample, kept in file order), or all of it."""
    if limit is None or limit >= len(pool):
        return list(pool)
    idx = sorted(random.Random(f"{seed}:sample").sample(range(len(pool)), limit))
    return [pool[i] for i in idx]


class GPQATask:
    """GPQA diamond in lm-eval's zero-shot letter format, with the option-rule twins."""

    name = "gpqa"

    def __init__(self, questions: list[MCQuestion] | None = None):
        self._questions = questions

    def describe(self) -> dict[str, Any]:
        return {"sources": [SOURCES["gpqa"].__dict__]}

    def items(self, o: TaskOptions) -> list[AuditItem]:
        qs = self._questions if self._questions is not None else load_gpqa()
        out = []
        for q in (qs if o.limit is None else qs[:o.limit]):
            versions = [(ORIGINAL, ORIGINAL, q.choices, q.gold)]
            versions += [(t.family, t.name, t.choices, t.gold) for t in mc_twins(q, o.seed, set(MC_FAMILIES))]
            for family, name, choices, gold in versions:
                opts = "".join(f"\n({LETTERS[i]}) {c}" for i, c in enumerate(choices))
                prompt = f"What is the correct answer to this question:{q.question}\nChoices:{opts}\nAnswer:"
                out.append(_mc_item(self.name, "letter", family, name, q, choices, gold, prompt,
                                    tuple(f" ({LETTERS[i]})" for i in range(len(choices))), {}))
        return out

    def grade(self, item: AuditItem, text: str) -> Grade:
        raise InputError("GPQA items are choice items; they are not graded from free text")


# ---------------------------------------------------------------------------------------------- GSM8K

_STRICT = re.compile(r"#### (\-?[0-9\.\,]+)")
_FLEXIBLE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")


def normalize_number(text: str) -> str:
    """lm-eval's gsm8k `regexes_to_ignore` (",", "$", everything up to "#### ", a final ".") + lower case."""
    t = re.sub(r"(?s).*#### ", "", text)
    t = t.replace(",", "").replace("$", "")
    return re.sub(r"\.$", "", t).strip().lower()


def extract_strict(text: str) -> str | None:
    m = _STRICT.search(text)
    return m.group(1) if m else None


def extract_flexible(text: str) -> str | None:
    found = _FLEXIBLE.findall(text)
    if not found:
        return None
    a, b = found[-1]
    return a or b


def gsm_chat_prompt(question: str) -> str:
    return ("Solve the following math problem. End your reply with a line of the form '#### N', where N is the "
            f"final numeric answer.\n\nQuestion: {question.strip()}")


class GSM8KTask:
    """GSM8K test with GSM-Symbolic, calculator and NoOp twins."""

    name = "gsm8k"

    def __init__(self, problems: list[MathProblem] | None = None, templates_dir: str | None = None):
        self._problems = problems
        self._templates_dir = templates_dir
        self.notes: dict[str, Any] = {}

    def describe(self) -> dict[str, Any]:
        return {"sources": [SOURCES["gsm8k"].__dict__, SOURCES["gsm_symbolic"].__dict__], **self.notes}

    def _templates(self) -> dict[int, Any]:
        try:
            directory = self._templates_dir or gsm_symbolic_dir()
        except MissingDependencyError as e:
            self.notes["symbolic_missing"] = str(e)
            return {}
        templates, skipped = load_templates(directory)
        self.notes["symbolic_templates"] = len(templates)
        self.notes["symbolic_unreadable"] = skipped
        return {t.id_orig: t for t in templates}

    def _item(self, p: MathProblem, family: str, name: str, question: str, answer: str, head: str,
              extra: dict[str, Any]) -> AuditItem:
        return AuditItem(
            id=f"{p.id}/generate/{name}", task=self.name, variant="generate", family=family, source_id=p.id,
            kind="generate", prompt=f"{head}Question: {question}\nAnswer:", target=answer,
            meta={"question": question, **extra}, chat_prompt=gsm_chat_prompt(question),
        )

    def _split(self, o: TaskOptions) -> tuple[list[MathProblem], list[MathProblem], dict[int, Any]]:
        """(few-shot examples, the audit's sample: templated items first, the templates by GSM8K index)."""
        problems = self._problems if self._problems is not None else load_gsm8k()
        shots = problems[len(problems) - o.shots:] if o.shots else []
        pool = problems[:len(problems) - o.shots] if o.shots else list(problems)
        templates = self._templates()
        pool.sort(key=lambda p: (p.index not in templates, p.index))
        return shots, (pool if o.limit is None else pool[:o.limit]), templates

    def like_items(self, o: TaskOptions, n: int) -> list[AuditItem]:
        """Benchmark-*like* originals: `n` GSM-Symbolic re-instantiations (names and numbers drawn anew,
        conditions checked, answers recomputed) of the templates whose GSM8K items the audit at `o` does
        not ask, round-robin over those templates. They carry no worked solution (the templates give one
        only for their own numbers), so a training record ends in `#### N` alone."""
        shots, chosen, templates = self._split(o)
        asked = {p.index for p in chosen} | {p.index for p in shots}
        free = [t for i, t in sorted(templates.items()) if i not in asked]
        if n and not free:
            raise ConfigError(f"every GSM-Symbolic template's item is in the audit's sample at --limit {o.limit}: "
                              "no template is left to teach from (use a smaller --limit)")
        head = "".join(f"Question: {e.question}\nAnswer: {e.solution}\n\n" for e in shots)
        out: list[AuditItem] = []
        for k in range(n * 4):
            if len(out) == n:
                break
            t = free[k % len(free)]
            try:
                inst = t.instantiate(random.Random(f"{o.seed}:like:{k}"), "both")
            except TemplateError:
                continue
            name = t.path.rsplit("/", 1)[-1]
            out.append(AuditItem(
                id=f"like-{name}-{k}/generate/original", task=self.name, variant="generate", family=ORIGINAL,
                source_id=f"like-{name}-{k}", kind="generate", prompt=f"{head}Question: {inst.question}\nAnswer:",
                target=str(inst.answer), meta={"question": inst.question, "template": name},
                chat_prompt=gsm_chat_prompt(inst.question)))
        return out

    def items(self, o: TaskOptions) -> list[AuditItem]:
        shots, chosen, templates = self._split(o)
        head = "".join(f"Question: {e.question}\nAnswer: {e.solution}\n\n" for e in shots)
        out: list[AuditItem] = []
        rejected: dict[str, dict[str, int]] = {}

        def reject(family: str, why: str) -> None:
            key = why.split(":")[-1].strip()[:60]
            rejected.setdefault(family, {})[key] = rejected.setdefault(family, {}).get(key, 0) + 1

        for p in chosen:
            out.append(self._item(p, ORIGINAL, ORIGINAL, p.question, p.answer, head, {"solution": p.solution}))
            t = templates.get(p.index)
            if t is not None:
                try:
                    out.append(self._item(p, "symbolic_default", "symbolic_default", t.question, t.own_answer(),
                                          head, {"template": t.path.rsplit("/", 1)[-1]}))
                except TemplateError as e:
                    reject("symbolic_default", str(e))
                for change in ("names", "numbers", "both"):
                    rng = random.Random(f"{o.seed}:symbolic:{change}:{p.id}")
                    try:
                        inst = t.instantiate(rng, change)
                    except TemplateError as e:
                        reject(f"symbolic_{change}", str(e))
                        continue
                    out.append(self._item(p, f"symbolic_{change}", f"symbolic_{change}", inst.question,
                                          str(inst.answer), head, {"template": t.path.rsplit("/", 1)[-1],
                                                                   "changed": inst.changed}))
            try:
                c = calc_twin(p, o.seed)
                out.append(self._item(p, "calc", "calc", c.question, c.answer, head,
                                      {"substitutions": c.substitutions}))
            except TemplateError as e:
                reject("calc", str(e))
            out.append(self._item(p, "noop", "noop", noop_twin(p, o.seed), p.answer, head, {}))
        self.notes["rejected_twins"] = rejected
        return out

    def grade(self, item: AuditItem, text: str) -> Grade:
        gold = normalize_number(item.target)
        strict, flexible = extract_strict(text), extract_flexible(text)
        ok_strict = strict is not None and normalize_number(strict) == gold
        ok_flexible = flexible is not None and normalize_number(flexible) == gold
        return Grade(correct=ok_flexible, parsed=flexible is not None,
                     pred=normalize_number(flexible) if flexible is not None else "",
                     extra={"correct_strict": ok_strict})


BUILTIN_TASKS = {"mmlu": MMLUTask, "gsm8k": GSM8KTask, "gpqa": GPQATask}
