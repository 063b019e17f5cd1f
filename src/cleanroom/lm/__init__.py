"""The one model interface: `LM` (log-likelihood, generate-until, chat templating), its backends
(`native`: cleanroom's Transformer; `hf`: any transformers model, GGUF included; `openai`: any
OpenAI-compatible endpoint) and `cache.CachedLM`. The lab's eval stage, the audit and the teachers
all answer their requests through it (a failure is a `cleanroom.errors.ModelError`). Backends import
torch / openai lazily: import them by module.
"""

from cleanroom.lm.api import (
    DEFAULT_STOP,
    LM,
    Completion,
    GenerateRequest,
    GenParams,
    Loglikelihood,
    LoglikelihoodRequest,
    RequestCounts,
    cut_at_stop,
)

__all__ = ["DEFAULT_STOP", "LM", "Completion", "GenParams", "GenerateRequest", "Loglikelihood",
           "LoglikelihoodRequest", "RequestCounts", "cut_at_stop"]
