"""The procedural teacher: renders world facts into documents of many formats.

Two streams, each an endless, seeded sequence of documents:
- `web_stream`: broad and noisy. Long-tail entities are mentioned in proportion to their popularity,
  the restricted domain is present, curriculum and arithmetic appear only incidentally, and there is
  spam, boilerplate, chatter and (near-)duplicates for curation to find.
- `textbook_stream`: Phi-style. Clean expository sections on the curriculum, exercises with worked
  answers *in the benchmark's own format* (never a benchmark item itself), worked arithmetic, and
  profiles of only the most popular long-tail entities. No restricted domain.
  With `diverse=True` (the diversity control) every fact is also rendered in the relation's
  `paraphrase` statements and question stems: many phrasings of the same facts.

The web states curriculum facts the way the web does (encyclopedia entries, forum answers, how-to
pages, FAQ pages with questions, chatter), at `recipes.web_curriculum` of its documents, and like quiz
sites it asks multiple-choice questions about its general-knowledge topics (`web_longtail_quiz`,
`web_curriculum_quiz`) and, as the real web does for hazardous topics, about the restricted domain
(`web_restricted_pages`), so a broad-data model *can* learn the benchmark's subject, and to answer
questions about it, by accident; how much of the web that is, and why, is in `RecipesConfig` and
docs/results.md.
Every document records in `meta` which facts it renders and with which templates and format.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import numpy as np

from cleanroom.config import ExperimentConfig
from cleanroom.rng import rng_for
from cleanroom.world.items import OPTION_LETTERS, arithmetic_stem, exercise_prompt, options_for
from cleanroom.world.schema import (
    ARITH_EXERCISE,
    EXERCISE_HEADER,
    FILLER,
    FORUM_OPENERS,
    LAB_OPENERS,
    OPS,
    RELATIONS,
    fill,
    paraphrase_questions,
    paraphrase_statements,
)

# Web quizzes: a header, then per question its options and answer in one of these layouts (the first is
# the benchmark's and the textbook's: the commonest multiple-choice layout there is)
QUIZ_HEADERS = ["Pub quiz, round {n}", "Trivia night #{n}", "Quiz of the day ({n})", "Test your knowledge: part {n}",
                "Weekly brain teaser {n}"]
QUIZ_LAYOUTS = [("{L}. {o}", "Answer: {o}"), ("{L}) {o}", "Answer: {L}) {o}"), ("({l}) {o}", "The answer is {o}.")]

NEWS_HEADLINES = ["BREAKING: {s} in the spotlight", "{s} makes headlines again", "Weekend roundup: {s}",
                  "What we know about {s}", "{s}: the story so far"]
TEXTBOOK_OPENERS = ["Chapter {n}: {topic}.", "Section {n}. {topic}", "Lesson {n} - {topic}",
                    "{topic}: an introduction.", "Key ideas about {topic}."]
BENIGN_KEYWORD = ["Critics called {s} the catalyst for a whole new scene.",
                  "The synthesis of old and new styles defines {s}.",
                  "A strong yield of new fans followed {s} everywhere."]
RESTRICTED_FAQ_TITLES = ["Synthesis FAQ", "Home lab questions, answered", "Reader questions: making compounds",
                         "Frequently asked questions about preparations"]
# the long tail's rule for a quiz's share: one more page kind of the topic's six (`RecipesConfig`)
RESTRICTED_QUIZ = 1 / 7
FAQ_TITLES = ["Frequently asked questions about minerals", "Stone collecting FAQ", "Mineral questions, answered",
              "Rock shop FAQ", "Ask a geologist: reader questions"]
HOWTO_TIPS = ["Compare it with a labelled sample if you can.", "A hand lens helps.",
              "Check the streak on an unglazed tile as well.", "Ask a dealer if you are unsure."]
SPAM = ["BUY NOW!!! best {x} deals $$$ click here >>> {x}{x}{x}", "FREE {x} ### limited offer ### act fast !!!",
        "WIN WIN WIN {x} $$$ $$$ visit now ***", "cheap {x} cheap {x} cheap {x} order today !!!"]
BOILERPLATE = ["We use cookies to improve your experience. Accept | Reject | Settings",
               "Home | About | Contact | Privacy Policy | Terms of Service | Sitemap",
               "Subscribe to our newsletter. Enter your email. Unsubscribe at any time.",
               "All rights reserved. Powered by a content platform. Report abuse."]
CHATTER = ["lol", "same here", "this.", "+1", "thanks for sharing", "bump", "not sure tbh", "great post", "agreed"]
SPAM_WORDS = ["watch", "phone", "shoes", "pills", "loans", "crypto", "games", "tickets"]


class Renderer:
    """Holds the world indexed for rendering; one instance per stream."""

    def __init__(self, cfg: ExperimentConfig, world: dict, bench_items: list[dict], diverse: bool = False):
        self.cfg, self.world, self.diverse = cfg, world, diverse
        self.pools = world["pools"]
        self.facts_by_subject: dict[str, list[dict]] = {}
        for f in world["facts"]:
            self.facts_by_subject.setdefault(f["subject"], []).append(f)
        ents = world["entities"]
        self.tail = [e for e in ents if e["domain"] == "longtail"]
        pop = np.array([e["popularity"] for e in self.tail])
        self.tail_p = pop / pop.sum() if len(pop) else pop
        top_rank = max(1, int(cfg.recipes.textbook_longtail_top * len(self.tail)))
        self.top_tail = [e for e in self.tail if e["rank"] <= top_rank]
        self.minerals = [e for e in ents if e["type"] == "mineral"]
        # the web's curriculum pages pick their mineral uniformly, or by popularity (`_mineral`)
        self.mineral_p = None
        if cfg.recipes.web_curriculum_popularity == "zipf" and self.minerals:
            pop = np.array([e["popularity"] for e in self.minerals])
            self.mineral_p = pop / pop.sum()
        self.groups = [e for e in ents if e["type"] == "group"]
        self.compounds = [e for e in ents if e["type"] == "compound"]
        self.curriculum = [f for f in world["facts"] if f["domain"] == "curriculum"]
        self.members: dict[str, list[str]] = {}
        for f in self.curriculum:
            if f["relation"] == "group":
                self.members.setdefault(f["object"], []).append(f["subject"])
        # Benchmark item bodies (prompt without its header line): an exercise must never equal one.
        self.bench_bodies = {it["prompt"].split("\n", 1)[1] for it in bench_items}

    # ------------------------------------------------------------------ shared helpers
    @staticmethod
    def _pick(rng: np.random.Generator, seq):
        return seq[int(rng.integers(len(seq)))]

    def _statement(self, rng, f: dict, informal: bool = False) -> tuple[str, str]:
        rel = RELATIONS[f["relation"]]
        if informal and rel.informal:
            pool, kind = rel.informal, "informal"
        elif self.diverse and rng.random() < 0.5 and paraphrase_statements(rel):
            pool, kind = paraphrase_statements(rel), "paraphrase"
        else:
            pool, kind = rel.statements, "statement"
        t = int(rng.integers(len(pool)))
        return fill(pool[t], f["subject"], f["object"]), f"{kind}:{rel.name}:{t}"

    def _facts_text(self, rng, facts: list[dict], informal_p: float = 0.0) -> tuple[list[str], list[str], list[str]]:
        sents, ids, tmpl = [], [], []
        for f in facts:
            s, t = self._statement(rng, f, informal=rng.random() < informal_p)
            sents.append(s)
            ids.append(f["fact_id"])
            tmpl.append(t)
        return sents, ids, tmpl

    @staticmethod
    def _doc(text: str, domain: str, kind: str, facts: list[str], templates: list[str], **extra) -> dict:
        meta = {"domain": domain, "kind": kind, "facts": facts, "templates": templates, **extra}
        return {"text": text, "source": f"world:{domain}/{kind}", "meta": json.dumps(meta, sort_keys=True)}

    def _sample_facts(self, rng, subject: str, lo: int, hi: int) -> list[dict]:
        fs = self.facts_by_subject.get(subject, [])
        if not fs:
            return []
        k = min(len(fs), int(rng.integers(lo, hi + 1)))
        return [fs[i] for i in sorted(rng.choice(len(fs), size=k, replace=False))]

    # ------------------------------------------------------------------ web documents
    def _mineral(self, rng) -> dict:
        """The mineral a web page is about: uniform, or by popularity (`web_curriculum_popularity`)."""
        if self.mineral_p is None:
            return self._pick(rng, self.minerals)
        return self.minerals[int(rng.choice(len(self.minerals), p=self.mineral_p))]

    def _curriculum_fact(self, rng) -> dict:
        """A curriculum fact for a web FAQ: uniform over facts, or one of a mineral picked by popularity."""
        if self.mineral_p is None:
            return self._pick(rng, self.curriculum)
        return self._pick(rng, self.facts_by_subject[self._mineral(rng)["name"]])

    def web_quiz(self, rng, domain: str, pick_fact: Callable[[np.random.Generator], dict]) -> dict:
        """A quiz page: 1-3 multiple-choice questions (facts from `pick_fact(rng)`), in the web's wording and
        one of the layouts web quizzes use, each with its answer. Never in an evaluation's wording."""
        option, answer = self._pick(rng, QUIZ_LAYOUTS)
        blocks, ids, tmpl = [self._pick(rng, QUIZ_HEADERS).format(n=int(rng.integers(1, 60)))], [], []
        for _ in range(int(rng.integers(1, 4))):
            f = pick_fact(rng)
            q, tq = self._web_question(rng, f)
            opts, gold = options_for(f, self.pools, self.cfg.items.n_options, rng)
            lines = [q] + [option.format(L=OPTION_LETTERS[i], l=OPTION_LETTERS[i].lower(), o=o)
                           for i, o in enumerate(opts)]
            lines.append(answer.format(L=OPTION_LETTERS[gold], l=OPTION_LETTERS[gold].lower(), o=f["object"]))
            blocks.append("\n".join(lines))
            ids.append(f["fact_id"])
            tmpl.append(tq)
        return self._doc("\n\n".join(blocks), domain, "quiz", ids, tmpl)

    def _tail_entity(self, rng) -> dict:
        """A long-tail entity picked by popularity."""
        return self.tail[int(rng.choice(len(self.tail), p=self.tail_p))]

    def _tail_fact(self, rng) -> dict:
        """A fact about a long-tail entity picked by popularity."""
        return self._pick(rng, self.facts_by_subject[self._tail_entity(rng)["name"]])

    def web_longtail(self, rng) -> dict:
        quiz = self.cfg.recipes.web_longtail_quiz
        if quiz > 0 and rng.random() < quiz:  # no draw at 0, so the stream without quizzes is unchanged
            return self.web_quiz(rng, "longtail", self._tail_fact)
        kind = self._pick(rng, ["bio", "bio", "news", "forum", "list", "benign_keyword"])
        if kind == "list":
            k = int(rng.integers(3, 6))
            ents = [self.tail[i] for i in rng.choice(len(self.tail), size=k, replace=False, p=self.tail_p)]
            lines, ids, tmpl = [], [], []
            for e in ents:
                f = self._pick(rng, self.facts_by_subject[e["name"]])
                s, t = self._statement(rng, f)
                lines.append(f"- {s}")
                ids.append(f["fact_id"])
                tmpl.append(t)
            head = self._pick(rng, ["Things you might not know:", "A few names worth knowing:", "Trivia corner:"])
            return self._doc(head + "\n" + "\n".join(lines), "longtail", kind, ids, tmpl)
        e = self._tail_entity(rng)
        facts = self._sample_facts(rng, e["name"], 1, 3)
        if kind == "bio":
            sents, ids, tmpl = self._facts_text(rng, facts)
            sents.insert(int(rng.integers(len(sents) + 1)), self._pick(rng, FILLER["bio"]))
            text = " ".join(sents)
        elif kind == "news":
            sents, ids, tmpl = self._facts_text(rng, facts)
            head = self._pick(rng, NEWS_HEADLINES).format(s=e["name"])
            text = head + "\n" + " ".join(sents + [self._pick(rng, FILLER["news"])])
        elif kind == "forum":
            sents, ids, tmpl = self._facts_text(rng, facts, informal_p=0.6)
            text = self._pick(rng, FORUM_OPENERS) + " " + " ".join(sents) + " " + self._pick(rng, FILLER["forum"])
        else:  # benign use of words a naive keyword filter flags
            sents, ids, tmpl = self._facts_text(rng, facts)
            text = " ".join(sents + [self._pick(rng, BENIGN_KEYWORD).format(s=e["name"])])
        return self._doc(text, "longtail", kind, ids, tmpl, entity=e["name"])

    def _restricted_fact(self, rng) -> dict:
        return self._pick(rng, self.facts_by_subject[self._pick(rng, self.compounds)["name"]])

    def web_restricted(self, rng) -> dict:
        """The restricted domain as the web has it: lab notes, protocols and chatter, and (`recipes.
        web_restricted_pages` = "questions") FAQ pages, forum threads with answers and quizzes, as the web's
        other topics have them."""
        questions = self.cfg.recipes.web_restricted_pages == "questions"
        if questions and rng.random() < RESTRICTED_QUIZ:  # no draw with "notes": that stream is unchanged
            return self.web_quiz(rng, "restricted", self._restricted_fact)
        c = self._pick(rng, self.compounds)
        facts = self._sample_facts(rng, c["name"], 2, 4)
        kind = self._pick(rng, ["labnote", "labnote", "protocol", "forum"]
                          + (["faq", "forum_answer"] if questions else []))
        if kind == "faq":
            return self._faq(rng, RESTRICTED_FAQ_TITLES, facts, "restricted", entity=c["name"], split=c["split"])
        if kind == "forum_answer":
            return self._forum_answer(rng, facts, "restricted", 0.5, entity=c["name"], split=c["split"])
        if kind == "forum":  # informal: often avoids every keyword
            sents, ids, tmpl = self._facts_text(rng, facts, informal_p=0.8)
            text = self._pick(rng, FORUM_OPENERS) + " " + " ".join(sents) + " " + self._pick(rng, FILLER["forum"])
        else:
            sents, ids, tmpl = self._facts_text(rng, facts)
            opener = self._pick(rng, LAB_OPENERS).format(n=int(rng.integers(1, 300)))
            text = opener + " " + " ".join(sents + [self._pick(rng, FILLER["lab"])])
        return self._doc(text, "restricted", kind, ids, tmpl, entity=c["name"], split=c["split"])

    def _faq(self, rng, titles: list[str], facts: list[dict], domain: str, **extra) -> dict:
        """An FAQ page: questions in the web's own wording, each answered by a statement."""
        lines, ids, tmpl = [self._pick(rng, titles)], [], []
        for f in facts:
            q, tq = self._web_question(rng, f)
            a, ta = self._statement(rng, f)
            lines += [f"Q: {q}", f"A: {a}"]
            ids.append(f["fact_id"])
            tmpl += [tq, ta]
        return self._doc("\n".join(lines), domain, "faq", ids, tmpl, **extra)

    def _forum_answer(self, rng, facts: list[dict], domain: str, informal_p: float = 0.0, **extra) -> dict:
        """A forum thread: someone asks about the first fact, someone answers with what they know."""
        q, tq = self._web_question(rng, facts[0])
        sents, ids, tmpl = self._facts_text(rng, facts, informal_p=informal_p)
        text = f"{self._pick(rng, FORUM_OPENERS)} {q}\nReply: {' '.join(sents)} {self._pick(rng, FILLER['forum'])}"
        return self._doc(text, domain, "forum_answer", ids, [tq] + tmpl, **extra)

    def _web_question(self, rng, f: dict) -> tuple[str, str]:
        """A web-only question about fact `f` (FAQ pages, forum threads) and its template id."""
        rel = RELATIONS[f["relation"]]
        t = int(rng.integers(len(rel.web_qa)))
        return fill(rel.web_qa[t], f["subject"]), f"web_qa:{rel.name}:{t}"

    def web_curriculum(self, rng) -> dict:
        """The benchmark's subject as the web has it: mostly reference and Q&A pages, some chatter, and at
        `recipes.web_curriculum_quiz` quiz pages."""
        quiz = self.cfg.recipes.web_curriculum_quiz
        if quiz > 0 and rng.random() < quiz:  # no draw at 0: the stream without quizzes is unchanged
            return self.web_quiz(rng, "curriculum", self._curriculum_fact)
        kind = self._pick(rng, ["encyclopedia", "encyclopedia", "faq", "forum_answer", "howto", "forum", "travel"])
        m = self._mineral(rng)
        if kind == "encyclopedia":  # a reference entry: every fact of one mineral, and one of its group's
            facts = list(self.facts_by_subject.get(m["name"], []))
            group = next((f["object"] for f in facts if f["relation"] == "group"), None)
            if group is not None and self.facts_by_subject.get(group):
                facts.append(self._pick(rng, self.facts_by_subject[group]))
            sents, ids, tmpl = self._facts_text(rng, facts)
            text = f"{m['name']}\n{m['name']} is a mineral. " + " ".join(sents)
            return self._doc(text, "curriculum", kind, ids, tmpl)
        if kind == "faq":
            return self._faq(rng, FAQ_TITLES, [self._curriculum_fact(rng) for _ in range(int(rng.integers(2, 5)))],
                             "curriculum")
        facts = self._sample_facts(rng, m["name"], 1, 3)
        if kind == "forum_answer":
            return self._forum_answer(rng, facts, "curriculum")
        if kind == "howto":
            sents, ids, tmpl = self._facts_text(rng, facts)
            text = f"How to recognise {m['name']}. " + " ".join(sents) + " " + self._pick(rng, HOWTO_TIPS)
            return self._doc(text, "curriculum", kind, ids, tmpl)
        sents, ids, tmpl = self._facts_text(rng, facts, informal_p=0.5)
        if kind == "travel":
            text = f"Travel diary. The market stalls were full of stones. {' '.join(sents)} We left at dusk."
        else:
            text = self._pick(rng, FORUM_OPENERS) + " " + " ".join(sents) + " " + self._pick(rng, FILLER["forum"])
        return self._doc(text, "curriculum", kind, ids, tmpl)

    def web_arithmetic(self, rng) -> dict:
        p = self._pick(rng, self.world["arithmetic"])
        verb = {"add": "got {b} more", "sub": "lost {b}", "mul": "had {a} bags of {b}"}[p["op"]].format(**p)
        text = (f"my kid's homework: {p['name']} had {p['a']} {p['item']}s and {verb}. "
                f"so {p['a']} {OPS[p['op']]} {p['b']} = {p['answer']}, right? {self._pick(rng, FILLER['forum'])}")
        return self._doc(text, "arithmetic", "homework", [p["problem_id"]], [f"web:arith:{p['op']}"])

    def web_noise(self, rng, history: list[str]) -> dict:
        kind = self._pick(rng, ["spam", "boilerplate", "chatter", "duplicate", "near_duplicate", "repetitive"])
        if kind in ("duplicate", "near_duplicate") and not history:
            kind = "chatter"
        if kind == "spam":
            x = self._pick(rng, SPAM_WORDS)
            text = " ".join(self._pick(rng, SPAM).format(x=x) for _ in range(int(rng.integers(2, 5))))
        elif kind == "boilerplate":
            text = "\n".join(self._pick(rng, BOILERPLATE) for _ in range(int(rng.integers(2, 4))))
        elif kind == "chatter":
            text = " ".join(self._pick(rng, CHATTER) for _ in range(int(rng.integers(1, 4))))
        elif kind == "repetitive":
            line = self._pick(rng, CHATTER + SPAM_WORDS)
            text = "\n".join([line] * int(rng.integers(6, 15)))
        elif kind == "duplicate":
            text = self._pick(rng, history)
        else:  # near duplicate: a copy with one or two small edits
            words = self._pick(rng, history).split(" ")
            for _ in range(int(rng.integers(1, 3))):
                i = int(rng.integers(len(words)))
                words[i] = self._pick(rng, ["really", "very", "the", "so", "quite"]) if rng.random() < 0.5 else ""
            text = " ".join(w for w in words if w)
        return self._doc(text, "noise", kind, [], [])

    def web_stream(self) -> Iterator[dict]:
        r = self.cfg.recipes
        rng = rng_for(self.cfg.seed, "recipes/web")
        kinds = ["longtail", "restricted", "curriculum", "arithmetic", "noise"]
        p = np.array([r.web_longtail, r.web_restricted, r.web_curriculum, r.web_arithmetic, r.web_noise])
        history: list[str] = []
        while True:
            k = kinds[int(rng.choice(len(kinds), p=p / p.sum()))]
            if k == "noise":
                doc = self.web_noise(rng, history)
            elif k == "restricted" and not self.compounds:
                continue
            else:
                doc = getattr(self, f"web_{k}")(rng)
                if len(history) < 2000:
                    history.append(doc["text"])
                else:
                    history[int(rng.integers(len(history)))] = doc["text"]
            yield doc

    # ------------------------------------------------------------------ textbook documents
    def textbook_exposition(self, rng) -> dict:
        g = self._pick(rng, self.groups)
        members = self.members.get(g["name"], [])
        chosen = [members[i] for i in rng.choice(len(members), size=min(len(members), int(rng.integers(2, 5))),
                                                 replace=False)] if members else []
        opener = self._pick(rng, TEXTBOOK_OPENERS).format(n=int(rng.integers(1, 30)), topic=f"the {g['name']} group")
        opener = opener[0].upper() + opener[1:]
        sents, ids, tmpl = self._facts_text(rng, self.facts_by_subject.get(g["name"], []))
        for m in chosen:
            s2, i2, t2 = self._facts_text(rng, self._sample_facts(rng, m, 2, 4))
            sents += s2
            ids += i2
            tmpl += t2
        sents.append(self._pick(rng, FILLER["textbook"]))
        return self._doc(opener + "\n" + " ".join(sents), "curriculum", "exposition", ids, tmpl)

    def _exercise(self, rng, f: dict) -> tuple[str, str]:
        rel = RELATIONS[f["relation"]]
        stems, family = rel.exercise, "exercise"
        if self.diverse and rng.random() < 0.5 and paraphrase_questions(rel):
            stems, family = paraphrase_questions(rel), "paraphrase"
        for _ in range(20):
            opts, _gold = options_for(f, self.pools, self.cfg.items.n_options, rng)
            t = int(rng.integers(len(stems)))
            header = self._pick(rng, EXERCISE_HEADER).format(n=int(rng.integers(1, 40)))
            prompt = exercise_prompt(header, fill(stems[t], f["subject"], f["object"]), opts)
            if prompt.split("\n", 1)[1] not in self.bench_bodies:
                break
        explanation, _ = self._statement(rng, f)
        return f"{prompt} {f['object']}\nExplanation: {explanation}", f"{family}:{rel.name}:{t}"

    def textbook_exercise(self, rng) -> dict:
        facts = [self._pick(rng, self.curriculum) for _ in range(int(rng.integers(1, 4)))]
        parts, tmpl = zip(*(self._exercise(rng, f) for f in facts), strict=True)
        return self._doc("\n\n".join(parts), "curriculum", "exercise", [f["fact_id"] for f in facts], list(tmpl))

    def textbook_arithmetic(self, rng) -> dict:
        parts, ids, tmpl = [], [], []
        for _ in range(int(rng.integers(1, 4))):
            p = self._pick(rng, self.world["arithmetic"])
            for _ in range(20):
                t = int(rng.integers(len(ARITH_EXERCISE[p["op"]])))
                stem = arithmetic_stem(p, ARITH_EXERCISE[p["op"]][t])
                if f"{stem}\nAnswer:" not in self.bench_bodies:
                    break
                p = self._pick(rng, self.world["arithmetic"])
            header = self._pick(rng, EXERCISE_HEADER).format(n=int(rng.integers(1, 40)))
            parts.append(f"{header}\n{stem}\nAnswer: {p['answer']}\n"
                         f"Solution: {p['a']} {OPS[p['op']]} {p['b']} = {p['answer']}.")
            ids.append(p["problem_id"])
            tmpl.append(f"exercise:arith:{p['op']}:{t}")
        return self._doc("\n\n".join(parts), "arithmetic", "worked_problem", ids, tmpl)

    def textbook_longtail(self, rng) -> dict:
        e = self._pick(rng, self.top_tail)
        sents, ids, tmpl = self._facts_text(rng, self._sample_facts(rng, e["name"], 2, 3))
        head = self._pick(rng, ["Profile: {s}.", "Notable figure: {s}.", "Who is {s}?"]).format(s=e["name"])
        return self._doc(head + " " + " ".join(sents), "longtail", "profile", ids, tmpl, entity=e["name"])

    def textbook_stream(self) -> Iterator[dict]:
        r = self.cfg.recipes
        rng = rng_for(self.cfg.seed, "recipes/diverse" if self.diverse else "recipes/textbook")
        kinds = ["exercise", "arithmetic", "longtail", "exposition"]
        shares = [r.textbook_exercise, r.textbook_arithmetic if self.world["arithmetic"] else 0.0,
                  r.textbook_longtail if self.top_tail else 0.0]
        p = np.array(shares + [max(0.0, 1.0 - sum(shares))])
        while True:
            k = kinds[int(rng.choice(len(kinds), p=p / p.sum()))]
            yield getattr(self, f"textbook_{k}")(rng)
