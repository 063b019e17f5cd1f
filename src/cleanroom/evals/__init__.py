"""Evaluation: tasks emit requests, model adapters answer them, statistics aggregate (lm-eval style).

- `requests`: `LoglikelihoodRequest`, `GenerateRequest`, the `LM` protocol.
- `adapters`: `NativeLM` (our Transformer; packed prefix-sharing fast path) and `HFLM`.
- `tasks`: bench, twin, longtail, restricted from the world's items; per-item rows and metrics.
- `stats`: bootstrap CIs, paired differences, difference of differences, per-decile accuracy.
- `stage`: the `eval` stage (the tamper test is its own stage: `cleanroom.tamper`).
"""
