"""`cleanroom audit`: the benchmark-vs-fresh-twin gap of any real model.

Modules: `benchmarks` (offline data loaders, sources and licenses), `symbolic` (GSM-Symbolic template
sampler), `gsm_twins` (calculator re-instantiation, NoOp), `mc_twins` (rotations, None-of-the-others,
WiCkeD), `tasks` (MMLU / GSM8K / GPQA in lm-evaluation-harness formats), `models` (local HF / GGUF /
cleanroom models, OpenAI-compatible endpoints, the request cache), `stats` (cluster bootstrap gap,
McNemar, cross-model verdicts), `summary` (`summary.json` schema), `run` (orchestration), `report`.

**Plugging in a task** (e.g. the long-tail knowledge probe, `--tasks longtail`): write an object with
`name`, `items(options: TaskOptions) -> list[AuditItem]`, `grade(item, text) -> Grade` and
`describe() -> {"sources": [{name, package, origin, license}], ...notes}`, and register its factory with
`cleanroom.audit.run.register_task("longtail", LongtailTask)`. An `AuditItem` (see `items.py`) is:

    id         unique id                         family     "original" or a twin family name
    task       task name                         source_id  the original item's id (pairing + bootstrap cluster)
    variant    formulation ("letter", "qa", ...)  kind       "choice" (log-likelihood) or "generate" (graded)
    prompt     context / completion prompt       options    continuations scored for a choice item
    gold       index of the correct option       target     the correct answer as text; aliases: other forms
    meta       JSON: choice items need `question` and `choices`; free otherwise (subject, bucket, ...)
    chat_prompt  the user message for chat-only models (generate items)

Statistics are computed per (task, variant, family); every twin family is compared with the originals
over the source items both have. Tasks never see the model: the runner answers items through whichever
protocol the model offers (log-likelihood, completion or chat) and records it per row.
"""
