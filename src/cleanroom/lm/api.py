"""The one model interface (lm-evaluation-harness style): requests in, answers out, in request order.

A caller (the lab's eval stage, the audit, a teacher) never sees which model answers, or how:

- `LoglikelihoodRequest(context, continuation)` -> `Loglikelihood`: log P(continuation | context),
  summed over the continuation's tokens. Multiple-choice items send one per option.
- `GenerateRequest(context, until, max_tokens, ...)` -> text: decoding until a stop string, EOS or
  `max_tokens` new tokens, cut before the first stop string (`cut_at_stop`). Greedy at temperature 0,
  else sampled (top-p, an optional per-request seed, an optional repetition penalty over the
  completion). `chat=True` treats the context as one user message: a local model applies its chat
  template (`LM.apply_chat_template`), an endpoint sends it to `/v1/chat/completions`.

Every backend (`lm.native`, `lm.hf`, `lm.openai`) implements `LM`; `lm.cache.CachedLM` wraps any of
them with the request cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Protocol, runtime_checkable

DEFAULT_STOP = ("\n", ".")


@dataclass(frozen=True)
class LoglikelihoodRequest:
    context: str
    continuation: str


@dataclass(frozen=True)
class GenerateRequest:
    context: str
    until: tuple[str, ...] = DEFAULT_STOP
    max_tokens: int = 8
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    seed: int | None = None
    repetition_penalty: float | None = None  # over the completion's own tokens only
    chat: bool = False  # the context is one user message
    system: str | None = None  # a system message before it (chat only)

    @property
    def params(self) -> GenParams:
        return GenParams(max_tokens=self.max_tokens, temperature=self.temperature, top_p=self.top_p,
                         stop=tuple(self.until), seed=self.seed, repetition_penalty=self.repetition_penalty)

    def messages(self) -> list[dict]:
        sys = [{"role": "system", "content": self.system}] if self.system else []
        return [*sys, {"role": "user", "content": self.context}]


@dataclass(frozen=True)
class Loglikelihood:
    """The answer to a `LoglikelihoodRequest`."""

    logprob: float  # summed over the continuation's tokens
    n_tokens: int  # continuation length in tokens
    is_greedy: bool  # every continuation token was the argmax at its position


@dataclass(frozen=True)
class GenParams:
    """Sampling parameters; part of every cache key, so two runs with equal params share answers."""

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
    """A generated text with its token counts (what `LM.generate` returns per request)."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str = "stop"  # "stop" (EOS or a stop string) | "length"
    cached: bool = False


@dataclass
class RequestCounts:
    """What a model has answered so far (for throughput reports and the no-work-on-rerun tests)."""

    loglikelihood: int = 0
    generate: int = 0
    forward_calls: int = 0  # forward passes (local) or HTTP requests (endpoint) actually run
    tokens: int = 0  # token positions run through the model (including padding)
    extra: dict[str, float] = field(default_factory=dict)


@runtime_checkable
class LM(Protocol):
    """What every caller needs from a model: answers to batches of requests, in request order."""

    name: str  # what reports call the model
    identity: str  # what the request cache keys on (changes when the weights change)
    counts: RequestCounts

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[Loglikelihood]: ...

    def generate(self, requests: Sequence[GenerateRequest]) -> list[Completion]: ...

    def generate_until(self, requests: Sequence[GenerateRequest]) -> list[str]: ...

    def apply_chat_template(self, messages: list[dict]) -> str: ...


def cut_at_stop(text: str, until: Sequence[str]) -> str:
    """`text` up to (not including) the earliest stop string, if any occurs."""
    cut = len(text)
    for s in until:
        if s:
            i = text.find(s)
            if i != -1:
                cut = min(cut, i)
    return text[:cut]


def plain_transcript(messages: list[dict]) -> str:
    """The chat rendering of a model without a chat template: `role: content` lines, then `assistant:`."""
    return "\n".join(f"{m['role']}: {m['content']}" for m in messages) + "\nassistant:"
