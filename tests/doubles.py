"""Tiny models and tokenizers for evaluator tests and benchmarks (no run directory needed).

`tiny_tokenizer` trains a byte-level BPE with the run's special tokens on a handful of texts;
`tiny_llama` builds a randomly initialised `transformers.LlamaForCausalLM` of a few thousand
parameters. Both are deterministic given their arguments. `load_script` imports a file under
scripts/ or bench/ (they are not a package) as a module.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import torch

from cleanroom.lm.causal import BOS, EOS, PAD

REPO = Path(__file__).resolve().parents[1]


def load_script(relpath: str) -> ModuleType:
    """The repository file `relpath` (e.g. "scripts/seed_sweep.py") imported as a module."""
    path = REPO / relpath
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_tokenizer(texts: Sequence[str], vocab_size: int = 400):
    """A byte-level BPE `tokenizers.Tokenizer` with `<|bos|>`, `<|eos|>`, `<|pad|>`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[BOS, EOS, PAD], min_frequency=1,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(list(texts), trainer)
    return tok


def hf_tokenizer(tok):
    """The same tokenizer as a transformers fast tokenizer."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD)


def tiny_llama(vocab_size: int, seed: int = 0, hidden: int = 32, layers: int = 2, max_len: int = 256):
    """A random LlamaForCausalLM (fp32, eval mode)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=max_len, tie_word_embeddings=True)
    return LlamaForCausalLM(cfg).eval()


def tiny_run(root, preset: str = "smoke", recipes: Sequence[str] = ("web",), overrides: Sequence[str] = (),
             seed: int = 0):
    """A run directory with a world, a tokenizer and randomly initialised exported models.

    Enough for the eval and tamper stages without generating corpora or training: returns
    (cfg, store). Models are `cleanroom.train.model.Transformer`s at the preset's shape.
    """
    from cleanroom.config import load_config
    from cleanroom.store import RunStore
    from cleanroom.tamper.attacks import literature, qa_other
    from cleanroom.tokenize.tokenizer import save_tokenizer, train_tokenizer
    from cleanroom.train.export import export_hf
    from cleanroom.train.model import Transformer
    from cleanroom.world.schema import TASKS
    from cleanroom.world.stage import run_world
    from cleanroom.world_store import load_items

    cfg = load_config(preset, None, list(overrides))
    store = RunStore(root)
    run_world(cfg, store)
    texts = [it["prompt"] + " " + o for t in TASKS
             for it in load_items(store, t) for o in it["options"]]
    facts = store.read_parquet("world/facts.parquet").to_pylist()
    texts += qa_other(facts) + literature(facts, cfg)
    tok = train_tokenizer(texts, cfg.tokenizer.vocab_size, min_frequency=1)
    save_tokenizer(tok, store.path("tokenizer.json"))
    for i, recipe in enumerate(recipes):
        torch.manual_seed(seed + i)
        model = Transformer(cfg.model, tok.get_vocab_size()).eval()
        export_hf(model, cfg, store.path("tokenizer.json"), store.path(f"models/{recipe}"))
    return cfg, store
