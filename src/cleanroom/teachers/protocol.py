"""The teacher protocol: a batch of prompts in, one completion (with token counts) per prompt out.

Every teacher — the procedural world renderer, an OpenAI-compatible endpoint, a local transformers
model — answers `generate(prompts, params, on_result=None)`. `on_result(i, completion)` is called as
soon as prompt `i` is answered, before the whole batch is done, so the caller can persist each
completion the moment it exists: a crash or an exhausted retry budget then loses no finished work.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from cleanroom.lm.api import Completion, GenParams
from cleanroom.lm.cache import request_key

OnResult = Callable[[int, Completion], None]


@runtime_checkable
class Teacher(Protocol):
    """What the generation driver needs from a teacher."""

    name: str  # "procedural" | "openai" | "transformers"
    model: str  # model identifier as the cache and the corpus metadata record it

    def generate(self, prompts: Sequence[str], params: GenParams,
                 on_result: OnResult | None = None) -> list[Completion]: ...


__all__ = ["Completion", "GenParams", "OnResult", "Teacher", "request_key"]
