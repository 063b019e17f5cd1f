"""The `eval` stage: tasks turn the world's items into requests for `cleanroom.lm` and score the answers.

- `tasks`: bench, twin, longtail, restricted from the world's items; per-item rows and metrics.
- `stage`: the `eval` stage (the tamper test is its own stage: `cleanroom.tamper`).

Statistics live in `cleanroom.stats`, the model interface in `cleanroom.lm`.
"""
