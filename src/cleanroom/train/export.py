"""Hugging Face export of our Transformer, and loading an export back into it.

`export_hf` writes a directory that `transformers.AutoModelForCausalLM.from_pretrained` loads as a
`LlamaForCausalLM` and `AutoTokenizer.from_pretrained` loads as a fast tokenizer:

    config.json              LlamaConfig fields (written directly: no transformers import needed)
    model.safetensors        fp32 weights, HF names (`model.layers.0.self_attn.q_proj.weight`, ...);
                             `lm_head.weight` is omitted when embeddings are tied (HF re-ties them)
    generation_config.json   bos/eos/pad ids
    tokenizer.json           the run's tokenizer (unchanged)
    tokenizer_config.json    PreTrainedTokenizerFast + special tokens
    special_tokens_map.json

Our parameter names are HF's minus the `model.` prefix and our RoPE uses HF's rotate_half layout,
so the conversion is a rename: nothing is permuted. `load_native` reverses it.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save

from cleanroom.config import ExperimentConfig, ModelConfig
from cleanroom.store import StoreError, replace_dir, write_bytes
from cleanroom.tokenize.tokenizer import BOS, EOS, PAD, load_tokenizer, special_ids
from cleanroom.train.model import Transformer


def unwrap(model: torch.nn.Module) -> Transformer:
    """The plain Transformer inside a DDP and/or torch.compile wrapper."""
    model = getattr(model, "module", model)  # DDP
    return getattr(model, "_orig_mod", model)  # torch.compile


def hf_config(mcfg: ModelConfig, vocab_size: int, bos: int, eos: int, pad: int) -> dict:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": vocab_size,
        "hidden_size": mcfg.d_model,
        "intermediate_size": mcfg.ffn_hidden,
        "num_hidden_layers": mcfg.n_layers,
        "num_attention_heads": mcfg.n_heads,
        "num_key_value_heads": mcfg.n_kv_heads,
        "head_dim": mcfg.d_model // mcfg.n_heads,
        "hidden_act": "silu",
        "max_position_embeddings": mcfg.seq_len,
        "rms_norm_eps": mcfg.norm_eps,
        # transformers >= 5 reads rope_parameters; 4.x reads rope_theta
        "rope_theta": mcfg.rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": mcfg.rope_theta},
        "tie_word_embeddings": mcfg.tie_embeddings,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "initializer_range": 0.02,
        "bos_token_id": bos,
        "eos_token_id": eos,
        "pad_token_id": pad,
        "torch_dtype": "float32",
        "use_cache": True,
    }


def _tokenizer_files(out: Path, tokenizer_path: Path, seq_len: int) -> None:
    shutil.copyfile(tokenizer_path, out / "tokenizer.json")
    special = {"bos_token": BOS, "eos_token": EOS, "pad_token": PAD}
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
    tok_cfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **special,
        "model_max_length": seq_len,
        "padding_side": "right",
        "add_bos_token": False,  # documents are framed <|bos|> text <|eos|>; add BOS explicitly
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=2) + "\n")


def export_hf(model: torch.nn.Module, cfg: ExperimentConfig | ModelConfig, tokenizer_path: str | Path,
              out_dir: str | Path) -> Path:
    """Write `out_dir` (e.g. `models/<recipe>/`) atomically: a temp dir renamed into place when complete."""
    model = unwrap(model)
    mcfg = cfg.model if isinstance(cfg, ExperimentConfig) else cfg
    out_dir = Path(out_dir)
    tok = load_tokenizer(tokenizer_path)
    if tok.get_vocab_size() != model.vocab_size:
        raise StoreError(f"tokenizer has {tok.get_vocab_size()} tokens but the model {model.vocab_size}")
    bos, eos, pad = special_ids(tok)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        state = {}
        for name, t in model.state_dict().items():
            if name == "lm_head.weight":
                if mcfg.tie_embeddings:
                    continue
                state[name] = t
            else:
                state[f"model.{name}"] = t
        state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in state.items()}
        # through write_bytes, so a full disk is one line naming the file (safetensors raises its own type)
        write_bytes(tmp / "model.safetensors", save(state, metadata={"format": "pt"}))
        (tmp / "config.json").write_text(json.dumps(hf_config(mcfg, model.vocab_size, bos, eos, pad), indent=2) + "\n")
        gen = {"bos_token_id": bos, "eos_token_id": eos, "pad_token_id": pad}
        (tmp / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
        _tokenizer_files(tmp, Path(tokenizer_path), mcfg.seq_len)
        replace_dir(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def model_config_from_hf(config: dict) -> ModelConfig:
    rope = config.get("rope_parameters") or {}
    return ModelConfig(
        d_model=config["hidden_size"],
        n_layers=config["num_hidden_layers"],
        n_heads=config["num_attention_heads"],
        n_kv_heads=config.get("num_key_value_heads") or config["num_attention_heads"],
        ffn_hidden=config["intermediate_size"],
        seq_len=config["max_position_embeddings"],
        tie_embeddings=config.get("tie_word_embeddings", True),
        rope_theta=rope.get("rope_theta", config.get("rope_theta", 10000.0)),
        norm_eps=config["rms_norm_eps"],
    )


def load_native(model_dir: str | Path, device: str | torch.device = "cpu"):
    """Load an exported `models/<recipe>/` into our Transformer (eval mode, fp32) and its tokenizer.

    Returns (model, tokenizers.Tokenizer).
    """
    d = Path(model_dir)
    cfg_path, weights = d / "config.json", d / "model.safetensors"
    if not cfg_path.exists() or not weights.exists():
        raise StoreError(f"no exported model in {d} (expected config.json and model.safetensors; "
                         "run `cleanroom train`)")
    try:
        config = json.loads(cfg_path.read_text())
        mcfg = model_config_from_hf(config)
        state = load_file(str(weights))
    except (ValueError, KeyError, OSError) as e:
        raise StoreError(f"corrupted model in {d}: {e}") from None
    model = Transformer(mcfg, config["vocab_size"])
    ours = {k.removeprefix("model."): v for k, v in state.items()}
    if mcfg.tie_embeddings:
        ours.pop("lm_head.weight", None)
        ours["lm_head.weight"] = ours["embed_tokens.weight"]
    missing, unexpected = model.load_state_dict(ours, strict=False)
    if missing or unexpected:
        raise StoreError(f"model in {d} does not match its config: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return model.to(device).eval(), load_tokenizer(d / "tokenizer.json")
