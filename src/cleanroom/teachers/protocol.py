"""The teacher protocol: a batch of prompts in, one completion (with token counts) per prompt out.

Every teacher — the procedural world renderer, an OpenAI-compatible endpoint, a local transformers
model — answers `generate(prompts, params, on_result=None)`. `on_result(i, completion)` is called as
soon as prompt `i` is answered, before the whole batch is done, so the caller can persist each
completion the moment it exists: a crash or an exhausted retry budget then loses no finished work.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Protocol, runtime_checkable

from cleanroom.errors import CleanroomError


class TeacherError(CleanroomError, RuntimeError):
    """A teacher failed in a way the user must act on (message is phrased for them)."""


@dataclass(frozen=True)
class GenParams:
    """Sampling parameters; part of the cache key, so two runs with equal params share completions."""

    max_tokens: int = 384
    temperature: float = 0.8
    top_p: float = 0.95
    stop: tuple[str, ...] = field(default_factory=tuple)
    seed: int | None = None
    repetition_penalty: float | None = None  # None = the engine's default (no penalty)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["stop"] = list(self.stop)
        if d["repetition_penalty"] is None:  # keeps keys of runs made before the field existed
            del d["repetition_penalty"]
        return d


@dataclass
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str = "stop"
    cached: bool = False


OnResult = Callable[[int, Completion], None]


@runtime_checkable
class Teacher(Protocol):
    """What the generation driver needs from a teacher."""

    name: str  # "procedural" | "openai" | "transformers"
    model: str  # model identifier as the cache and the corpus metadata record it

    def generate(self, prompts: Sequence[str], params: GenParams,
                 on_result: OnResult | None = None) -> list[Completion]: ...


def request_key(teacher: str, model: str, prompt: str, params: GenParams) -> str:
    """The cache key of one request: sha256 over (teacher, model, prompt, params)."""
    blob = json.dumps([teacher, model, prompt, params.as_dict()], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()
