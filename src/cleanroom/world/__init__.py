"""The `world` stage: a procedurally generated world (`build.py`), its relations and templates
(`schema.py`), names (`names.py`), the evaluation items built from it (`items.py`) and the stage (`stage.py`)."""
