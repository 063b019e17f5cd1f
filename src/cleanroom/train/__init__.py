"""The `train` stage: a Llama-style model per recipe and its Hugging Face export.

Modules: `model` (the Transformer and its KV cache), `data` (batches from token files), `trainer`
(AdamW, schedule, checkpoints, DDP), `export` (Hugging Face format out, our model back in), `stage`
(the pipeline entry point) and `__main__` (`torchrun -m cleanroom.train`).
"""
