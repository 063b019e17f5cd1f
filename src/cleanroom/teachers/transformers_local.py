"""A local teacher: a Hugging Face causal LM run in-process (`cleanroom.lm.hf.HFLM`), chat template
applied when the model has one. Model resolution (`resolve_model`: alias, `.gguf`, directory) and
loading live in `cleanroom.lm.hf`; HF models generate in bf16 on CPU (AMX), GGUF models in float32.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from cleanroom.lm.api import GenerateRequest
from cleanroom.lm.hf import resolve_model
from cleanroom.teachers.protocol import Completion, GenParams, OnResult


class TransformersTeacher:
    """Batched local generation through the one model interface (the teacher protocol on top)."""

    name = "transformers"

    def __init__(self, model: str, *, batch_size: int = 64, dtype: str = "auto", threads: int = 0,
                 system_prompt: str | None = None):
        self.spec = resolve_model(model)
        self.model = self.spec.name
        self.model_arg, self.batch_size, self.dtype, self.threads = model, batch_size, dtype, threads
        self.system_prompt = system_prompt
        self._lm = None
        self.seconds = 0.0

    def generate(self, prompts: Sequence[str], params: GenParams,
                 on_result: OnResult | None = None) -> list[Completion]:
        """The teacher protocol over `HFLM.generate`; prompt i samples with seed `params.seed + i`."""
        from cleanroom.lm.hf import HFLM

        if self._lm is None:
            self._lm = HFLM.from_spec(self.model_arg, dtype=self.dtype, threads=self.threads,
                                      batch_size=self.batch_size)
        reqs = [GenerateRequest(p, tuple(params.stop), params.max_tokens, params.temperature, params.top_p,
                                None if params.seed is None else params.seed + i, params.repetition_penalty,
                                chat=True, system=self.system_prompt) for i, p in enumerate(prompts)]
        t0 = time.perf_counter()
        results: list[Completion] = []
        for s in range(0, len(reqs), self.batch_size):  # report each batch as it finishes
            outs = self._lm.generate(reqs[s:s + self.batch_size])
            for i, c in enumerate(outs, start=s):
                if on_result is not None:
                    on_result(i, c)
            results += outs
        self.seconds += time.perf_counter() - t0
        return results
