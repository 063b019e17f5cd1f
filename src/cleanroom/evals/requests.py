"""The requests a task sends to a model, and the answers it gets back (lm-evaluation-harness style).

A task never sees a model: it turns items into requests of two kinds, a model adapter answers a whole
list of them at once (batching, padding and prefix sharing are the adapter's business), and the task
turns the answers into per-item predictions and metrics.

- `LoglikelihoodRequest(context, continuation)`: log P(continuation | context), summed over the
  continuation's tokens. Multiple-choice items send one per option (`" " + option` after the prompt).
- `GenerateRequest(context, until, max_tokens)`: greedy decoding until a stop string, EOS, or
  `max_tokens` new tokens; the answer is the generated text cut before the first stop string.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
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


@dataclass(frozen=True)
class Loglikelihood:
    """The answer to a `LoglikelihoodRequest`."""

    logprob: float  # summed over the continuation's tokens
    n_tokens: int  # continuation length in tokens
    is_greedy: bool  # every continuation token was the argmax at its position


@dataclass
class RequestCounts:
    """What an adapter has answered so far (for throughput reports)."""

    loglikelihood: int = 0
    generate: int = 0
    forward_calls: int = 0
    tokens: int = 0  # token positions run through the model (including padding)
    extra: dict[str, float] = field(default_factory=dict)


@runtime_checkable
class LanguageModel(Protocol):
    """What a task needs from a model: answers to batches of requests, in request order."""

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[Loglikelihood]: ...

    def generate_until(self, requests: Sequence[GenerateRequest]) -> list[str]: ...


def cut_at_stop(text: str, until: Sequence[str]) -> str:
    """`text` up to (not including) the earliest stop string, if any occurs."""
    cut = len(text)
    for s in until:
        if s:
            i = text.find(s)
            if i != -1:
                cut = min(cut, i)
    return text[:cut]
