"""The `tokenize` stage: the run's byte-level BPE (`tokenizer.py`) and one token file per recipe (`stage.py`)."""
