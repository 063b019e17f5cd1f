"""Teachers: the procedural world renderer, OpenAI-compatible endpoints, local transformers models.

`make_teacher` builds one from CLI-style arguments; heavy imports happen only for the kind asked for.
"""

from __future__ import annotations

from cleanroom.errors import ConfigError
from cleanroom.teachers.protocol import Completion, GenParams, Teacher, request_key

__all__ = ["Completion", "GenParams", "Teacher", "make_teacher", "request_key"]


def make_teacher(kind: str, model: str | None, *, base_url: str | None = None, concurrency: int = 8,
                 batch_size: int = 64, timeout: float = 120.0, max_retries: int = 5, mode: str = "chat",
                 api_key_env: str = "OPENAI_API_KEY", dtype: str = "auto") -> Teacher:
    """A teacher of `kind` (openai | transformers | procedural); ConfigError on bad arguments."""
    if kind == "openai":
        if not base_url or not model:
            raise ConfigError("--teacher openai needs --base-url URL and --model NAME")
        from cleanroom.teachers.openai_compat import OpenAITeacher

        return OpenAITeacher(base_url, model, api_key_env=api_key_env, mode=mode, concurrency=concurrency,
                             timeout=timeout, max_retries=max_retries)
    if kind == "transformers":
        from cleanroom.teachers.transformers_local import TransformersTeacher

        return TransformersTeacher(model or "smollm2", batch_size=batch_size, dtype=dtype)
    if kind == "procedural":
        from cleanroom.teachers.procedural import ProceduralTeacher

        return ProceduralTeacher()
    raise ConfigError(f"unknown teacher `{kind}` (choose openai, transformers or procedural)")
