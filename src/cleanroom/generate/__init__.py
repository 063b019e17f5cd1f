"""The `generate` stage and its parts: the procedural teacher (`render.py`), the corpus contract
(`corpus.py`), real-teacher corpora (`teacher.py`, `prompts.py`) and the stage itself (`stage.py`)."""
