"""Audit scoring throughput: the audit's log-likelihood path (`cleanroom.audit.models.LocalModel`: HFAdapter,
packed options, batched) against lm-evaluation-harness's `hf` backend and a naive one-request-per-forward
scorer, on the same model object and the same MMLU items (letter and cloze), in one process.

    python bench/audit_throughput.py --quick          # a small random Llama, 24 items: seconds
    python bench/audit_throughput.py --model smollm2 --items 100

Prints exactly one JSON line on stdout (logs go to stderr): seconds per scorer, speedups, whether every
prediction is identical, and the largest log-probability difference. Without `lm_eval` installed the
JSON says so and the comparison is against the naive scorer only.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from benchlib import emit, log, parser


def small_llama(directory: Path, texts: list[str]) -> Path:
    """A random 4-layer Llama with a byte-level BPE trained on the items (a bench double, not a test fixture)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=2000, special_tokens=["<|endoftext|>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                       show_progress=False))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=fast.vocab_size, hidden_size=128, intermediate_size=384, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                      eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id)
    LlamaForCausalLM(cfg).save_pretrained(directory)
    fast.save_pretrained(directory)
    return directory


def naive(model, tok, requests) -> list[float]:
    """One forward pass per (context, continuation), no batching: the baseline every scorer must match."""
    out = []
    with torch.inference_mode():
        for ctx, cont in requests:
            c = tok(ctx, add_special_tokens=False)["input_ids"]
            w = tok(ctx + cont, add_special_tokens=False)["input_ids"]
            logp = torch.log_softmax(model(torch.tensor([w])).logits[0].float(), -1)
            out.append(float(sum(logp[t - 1, w[t]] for t in range(len(c), len(w)))))
    return out


def lm_eval_hf(model, tok, requests, batch_size: int) -> list[float]:
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    for name in ("lm-eval", "lm_eval"):
        logging.getLogger(name).setLevel(logging.ERROR)
    lm = HFLM(pretrained=model, tokenizer=tok, batch_size=batch_size, device="cpu")
    inst = [Instance(request_type="loglikelihood", doc={}, arguments=(c, x), idx=i)
            for i, (c, x) in enumerate(requests)]
    with contextlib.redirect_stdout(sys.stderr):
        return [float(r[0]) for r in lm.loglikelihood(inst, disable_tqdm=True)]


def predictions(items, lls: list[float]) -> list[int]:
    out, k = [], 0
    for it in items:
        lp = np.array(lls[k:k + len(it.options)])
        k += len(it.options)
        if it.meta.get("normalize"):
            lp = lp / np.array([len(o) - 1 for o in it.options])
        out.append(int(np.argmax(lp)))
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = parser(__doc__)
    ap.add_argument("--model", default=None, help="local model (dir, .gguf, smollm2); default: a small random Llama")
    ap.add_argument("--items", type=int, default=None, help="MMLU source items (default 24 quick, 100 otherwise)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from cleanroom.audit.items import TaskOptions
    from cleanroom.audit.models import LocalModel
    from cleanroom.audit.tasks import MMLUTask
    from cleanroom.evals.requests import LoglikelihoodRequest

    n = args.items or (24 if args.quick else 100)
    items = [it for it in MMLUTask().items(TaskOptions(limit=n, seed=0, formulations=("letter", "cloze")))
             if it.family == "original"]
    requests = [(it.prompt, o) for it in items for o in it.options]
    tmp = None
    model_name = args.model
    if model_name is None:
        tmp = tempfile.TemporaryDirectory(prefix="audit-bench-")
        model_name = str(small_llama(Path(tmp.name) / "small-llama", [c + x for c, x in requests]))
    audit = LocalModel(model_name, batch_size=args.batch_size, threads=args.threads)
    audit._ensure()
    model, tok = audit.lm, audit.tok
    log(f"model {audit.name}: {len(items)} items, {len(requests)} requests")

    reqs = [LoglikelihoodRequest(c, x) for c, x in requests]
    audit.loglikelihood(reqs[:8], lambda i, r: None)  # warm-up
    t0 = time.perf_counter()
    got: list[float] = [0.0] * len(reqs)
    audit.loglikelihood(reqs, lambda i, r: got.__setitem__(i, r.logprob))
    audit_s = time.perf_counter() - t0
    log(f"audit path: {audit_s:.2f}s")

    result: dict = {"bench": "audit_throughput", "model": audit.name, "items": len(items), "requests": len(reqs),
                    "threads": torch.get_num_threads(), "audit_s": round(audit_s, 3),
                    "audit_items_per_s": round(len(items) / audit_s, 2)}
    pred_audit = predictions(items, got)
    try:
        import lm_eval

        t0 = time.perf_counter()
        ref = lm_eval_hf(model, tok, requests, args.batch_size)
        lm_s = time.perf_counter() - t0
        log(f"lm-eval hf: {lm_s:.2f}s")
        result.update(lm_eval=lm_eval.__version__, lm_eval_s=round(lm_s, 3),
                      speedup_vs_lm_eval=round(lm_s / audit_s, 2),
                      identical_predictions_vs_lm_eval=pred_audit == predictions(items, ref),
                      max_abs_logprob_diff_vs_lm_eval=float(np.max(np.abs(np.array(got) - np.array(ref)))))
    except ImportError:
        result["lm_eval"] = "not installed (pip install lm-eval==0.4.13 to compare)"
    sub = slice(0, min(len(requests), 40 if args.quick else len(requests)))  # the naive scorer is slow
    t0 = time.perf_counter()
    ref_naive = naive(model, tok, requests[sub])
    naive_s = (time.perf_counter() - t0) * len(requests) / len(ref_naive)
    result.update(naive_s_estimated=round(naive_s, 3), speedup_vs_naive=round(naive_s / audit_s, 2),
                  max_abs_logprob_diff_vs_naive=float(np.max(np.abs(np.array(got[sub]) - np.array(ref_naive)))))
    emit(result)
    if tmp is not None:
        tmp.cleanup()
    return result


if __name__ == "__main__":
    main()
