"""Audit throughput: the audit's model path (`cleanroom.lm.hf.HFLM`, what `cleanroom audit` runs) against
lm-evaluation-harness's `hf` backend on the same model object and the same requests, in one process,
log-likelihood and generation measured separately:

- log-likelihood: every MMLU item the audit scores (letter originals and their twins `rot`,
  `none_of_others`, `wicked`, and the option-text originals): prefix-tree packing shares the header,
  the question the twins repeat, and each context across its options;
- generation: GSM8K originals (0-shot, the audit's stop strings, `--gen-tokens` new tokens): rows leave
  the batch as they finish; lm-eval's `generate_until` (HF `generate`, `until` stop strings).

    python bench/audit_throughput.py --quick          # a small random Llama: seconds
    python bench/audit_throughput.py --model smollm2 --items 40 --gen-items 24

Prints exactly one JSON line on stdout (logs go to stderr): seconds per path, the two speedups, whether
every prediction / generated text is identical, and the largest log-probability difference (also vs a
naive one-request-per-forward scorer). Without `lm_eval` the JSON says so.
"""

from __future__ import annotations

import contextlib
import logging
import os
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


def lm_eval_generate(model, tok, requests, batch_size: int) -> list[str]:
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=model, tokenizer=tok, batch_size=batch_size, device="cpu")
    inst = [Instance(request_type="generate_until", doc={}, idx=i, arguments=(
        r.context, {"until": list(r.until), "max_gen_toks": r.max_tokens, "do_sample": False}))
        for i, r in enumerate(requests)]
    with contextlib.redirect_stdout(sys.stderr):
        return list(lm.generate_until(inst, disable_tqdm=True))


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
    ap.add_argument("--items", type=int, default=None, help="MMLU source items (default 6 quick, 40 otherwise)")
    ap.add_argument("--gen-items", type=int, default=None, help="GSM8K items (default 4 quick, 24 otherwise)")
    ap.add_argument("--gen-tokens", type=int, default=None, help="max new tokens (default 16 quick, 256 otherwise)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=None,
                    help="alternate the two paths this many times and keep each one's best time (default 1 quick, 2)")
    args = ap.parse_args(argv)
    repeat = args.repeat or (1 if args.quick else 2)
    if args.threads:
        torch.set_num_threads(args.threads)
    from cleanroom.audit.items import TaskOptions
    from cleanroom.audit.tasks import GSM_STOP, GSM8KTask, MMLUTask
    from cleanroom.lm.api import GenerateRequest, LoglikelihoodRequest
    from cleanroom.lm.hf import LocalLM

    n = args.items or (6 if args.quick else 40)
    items = MMLUTask().items(TaskOptions(limit=n, seed=0, formulations=("letter", "cloze")))
    requests = [(it.prompt, o) for it in items for o in it.options]
    n_gen = args.gen_items or (4 if args.quick else 24)
    gen_tokens = args.gen_tokens or (16 if args.quick else 256)
    gsm = [it for it in GSM8KTask().items(TaskOptions(limit=n_gen, seed=0)) if it.family == "original"]
    gen_reqs = [GenerateRequest(it.prompt, GSM_STOP, gen_tokens) for it in gsm]
    tmp = None
    model_name = args.model
    if model_name is None:
        tmp = tempfile.TemporaryDirectory(prefix="audit-bench-")
        texts = [c + x for c, x in requests] + [r.context for r in gen_reqs]
        model_name = str(small_llama(Path(tmp.name) / "small-llama", texts))
    audit = LocalLM(model_name, batch_size=args.batch_size, threads=args.threads).lm
    model, tok = audit.model, audit.tok
    log(f"model {audit.name}: {len(items)} MMLU items, {len(requests)} requests; {len(gen_reqs)} generations")

    reqs = [LoglikelihoodRequest(c, x) for c, x in requests]
    audit.loglikelihood(reqs[:8])  # warm-up
    try:
        import lm_eval
    except ImportError:
        lm_eval = None
    best: dict[str, float] = {}

    def timed(key: str, fn):
        t0 = time.perf_counter()
        value = fn()
        best[key] = min(best.get(key, float("inf")), time.perf_counter() - t0)
        log(f"{key}: {time.perf_counter() - t0:.2f}s")
        return value

    for _ in range(repeat):  # alternated, so a change in machine load hits both paths alike
        got = [r.logprob for r in timed("audit_ll_s", lambda: audit.loglikelihood(reqs))]
        if lm_eval is not None:
            ref = timed("lm_eval_ll_s", lambda: lm_eval_hf(model, tok, requests, args.batch_size))
        texts = timed("audit_gen_s", lambda: audit.generate_until(gen_reqs))
        if lm_eval is not None:
            ref_texts = timed("lm_eval_gen_s", lambda: lm_eval_generate(model, tok, gen_reqs, args.batch_size))
    audit_s = best["audit_ll_s"]
    result: dict = {"bench": "audit_throughput", "model": audit.name, "items": len(items), "requests": len(reqs),
                    "generations": len(gen_reqs), "gen_tokens": gen_tokens, "threads": torch.get_num_threads(),
                    "repeat": repeat, "load_avg": [round(x, 2) for x in os.getloadavg()],
                    "audit_ll_s": round(audit_s, 3), "audit_gen_s": round(best["audit_gen_s"], 3),
                    "audit_items_per_s": round(len(items) / audit_s, 2)}
    pred_audit = predictions(items, got)
    if lm_eval is None:
        result["lm_eval"] = "not installed (pip install lm-eval==0.4.13 to compare)"
    else:
        result.update(lm_eval=lm_eval.__version__, lm_eval_ll_s=round(best["lm_eval_ll_s"], 3),
                      lm_eval_gen_s=round(best["lm_eval_gen_s"], 3),
                      ll_speedup_vs_lm_eval=round(best["lm_eval_ll_s"] / audit_s, 2),
                      gen_speedup_vs_lm_eval=round(best["lm_eval_gen_s"] / best["audit_gen_s"], 2),
                      identical_predictions_vs_lm_eval=pred_audit == predictions(items, ref),
                      max_abs_logprob_diff_vs_lm_eval=float(np.max(np.abs(np.array(got) - np.array(ref)))),
                      identical_generations_vs_lm_eval=sum(a == b for a, b in zip(texts, ref_texts, strict=True)))
    sub = slice(0, min(len(requests), 40 if args.quick else 200))  # the naive scorer is slow
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
