"""The `collect` stage: recipes without a world, whose documents come from a teacher LLM or from files.

Each `[corpora.NAME]` table of the config becomes `corpora/NAME/` in the corpus contract
(`cleanroom.corpus`), and from there a recipe like any other: curated, tokenized, trained, evaluated
and attacked. `stage.py` is the stage; `teacher.py` drives a teacher LLM over the prompts of `prompts.py`
(also `cleanroom generate --teacher`); `files.py` reads a user's Parquet or JSONL files.
"""
