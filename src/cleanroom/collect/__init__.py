"""The `collect` stage: recipes without a world, whose documents come from a teacher LLM or from files.

Each `[corpora.NAME]` table of the config becomes `corpora/NAME/` in the corpus contract
(`corpus.py`), and from there a recipe like any other: curated, tokenized, trained, evaluated
and attacked. `stage.py` is the stage; `files.py` reads a user's Parquet or JSONL files.
"""
