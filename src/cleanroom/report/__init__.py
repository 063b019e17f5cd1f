"""The `report` stage: claims and verdicts (`claims.py`), `summary.json` (`summary.py`), figures and the
Markdown / HTML report card (`figures.py`, `render.py`), from stored results only (`stage.py`); over
seeds, `cleanroom sweep` (`sweep.py`)."""
