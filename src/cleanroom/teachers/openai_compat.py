"""A teacher behind any OpenAI-compatible endpoint: `cleanroom.lm.openai.OpenAIClient` (the one HTTP
client, with its retry loop and bounded concurrency) answering the teacher protocol."""

from cleanroom.lm.openai import OpenAIClient

OpenAITeacher = OpenAIClient

__all__ = ["OpenAITeacher"]
