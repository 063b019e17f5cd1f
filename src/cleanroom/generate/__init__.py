"""The `generate` stage: the procedural teacher (`render.py`) and the stage that cuts its streams into the
world lab's recipes (`stage.py`), in the corpus contract of `cleanroom.corpus`."""
