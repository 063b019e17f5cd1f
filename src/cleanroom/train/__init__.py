"""Training: the run's BPE tokenizer, token files, a Llama-style model, the trainer and HF export.

Modules: `tokenizer` (train/load the byte-level BPE), `tokenize` (the `tokenize` stage: token files per
recipe), `data` (batches from token files), `model` (the Transformer), `trainer` (the `train` stage),
`export` (Hugging Face format out, our model back in).
"""
