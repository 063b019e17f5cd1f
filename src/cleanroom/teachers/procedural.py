"""The world lab's teacher behind the same protocol: it renders facts instead of sampling an LLM.

Given a prompt, it finds the world subjects the prompt names and renders their facts with the
relations' statement templates (`world.schema`), in an order and phrasing seeded by the prompt, so
equal prompts give equal text. A prompt that names no world subject is answered from its own seed
passage (the quoted block of `recipes.prompts.render`), sentence-shuffled — a cheap stand-in teacher that lets
the real-teacher driver, cache and resume logic be exercised without a model.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence

import numpy as np

from cleanroom.teachers.protocol import Completion, GenParams, OnResult
from cleanroom.text_stats import count_tokens
from cleanroom.world.schema import RELATIONS, fill

_SENT = re.compile(r"(?<=[.!?])\s+")
_PASSAGE = re.compile(r'"""\n(.*?)\n"""', re.DOTALL)


class ProceduralTeacher:
    name = "procedural"

    def __init__(self, facts: Iterable[dict] = (), model: str = "world-renderer"):
        self.model = model
        self.by_subject: dict[str, list[dict]] = {}
        for f in facts:
            if f.get("relation") in RELATIONS:
                self.by_subject.setdefault(f["subject"], []).append(f)
        # longest names first, so "Ana Bel" wins over "Ana" when both are subjects
        self._subjects = sorted(self.by_subject, key=len, reverse=True)
        self.calls = 0

    def _rng(self, prompt: str, params: GenParams) -> np.random.Generator:
        h = hashlib.sha256(f"{params.seed}|{prompt}".encode()).digest()
        return np.random.default_rng(int.from_bytes(h[:8], "little"))

    def _render(self, prompt: str, params: GenParams) -> str:
        rng = self._rng(prompt, params)
        sentences: list[str] = []
        for subject in self._subjects:
            if subject in prompt:
                for f in self.by_subject[subject]:
                    tpl = RELATIONS[f["relation"]].statements
                    sentences.append(fill(tpl[int(rng.integers(len(tpl)))], f["subject"], f["object"]))
        if not sentences:
            m = _PASSAGE.search(prompt)
            passage = m.group(1) if m else ""
            sentences = [s.strip() for s in _SENT.split(passage.strip()) if s.strip()]
        if not sentences:
            sentences = [prompt.strip().splitlines()[0] if prompt.strip() else "Nothing to say."]
        rng.shuffle(sentences)
        words, out = 0, []
        for s in sentences:  # respect max_tokens in word units
            n = count_tokens(s)
            if out and words + n > params.max_tokens:
                break
            out.append(s)
            words += n
        return " ".join(out)

    def generate(self, prompts: Sequence[str], params: GenParams,
                 on_result: OnResult | None = None) -> list[Completion]:
        results = []
        for i, p in enumerate(prompts):
            self.calls += 1
            text = self._render(p, params)
            c = Completion(text=text, prompt_tokens=count_tokens(p), completion_tokens=count_tokens(text))
            results.append(c)
            if on_result is not None:
                on_result(i, c)
        return results
