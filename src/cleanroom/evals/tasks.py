"""Tasks over the world's evaluation items (`world.schema.TASKS`); requests in, per-item rows out.

- `bench`: curriculum facts in the textbook exercise format, plus arithmetic word problems (exact).
- `twin`: the same facts (and problems of the same kind) in the same format, worded apart from every
  recipe (GSM1k analogue); `format_shift`: the same facts in a task format no recipe renders.
- `longtail` / `longtail_qa`: long-tail facts by popularity decile (PopQA / SimpleQA analogue).
- `restricted`: held-out restricted-domain facts (what the tamper attack tries to recover).

Item kinds (see `cleanroom.world.build`):
- "choice": one `loglikelihood` request per option, continuation `" " + option` after the prompt.
  `acc` = argmax of the summed log-probability; `acc_norm` = argmax of the log-probability divided
  by the option's length in characters (lm-evaluation-harness's `acc_norm`, which also normalizes by
  the choice string's length, not by tokens). The primary metric is `acc`.
- "exact": one `generate_until` request (greedy, stop at "\\n" or ".", at most `max_gen_tokens`);
  correct iff the generation, stripped, equals `target`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from cleanroom.lm.api import DEFAULT_STOP, LM, GenerateRequest, LoglikelihoodRequest
from cleanroom.stats import accuracy_ci, per_decile

ROW_SCHEMA = pa.schema([
    ("id", pa.string()), ("task", pa.string()), ("kind", pa.string()), ("prompt", pa.string()),
    ("options", pa.list_(pa.string())), ("gold", pa.int32()), ("target", pa.string()),
    ("prediction", pa.int32()),  # chosen option index (choice); 0 if the generation matched, else -1 (exact)
    ("prediction_text", pa.string()),  # the chosen option, or the stripped generation
    ("correct", pa.bool_()),
    ("prediction_norm", pa.int32()), ("correct_norm", pa.bool_()),
    ("logprobs", pa.list_(pa.float64())),  # summed log P(" " + option | prompt), per option
    ("logprobs_norm", pa.list_(pa.float64())),  # the same divided by len(option) in characters
    ("n_tokens", pa.list_(pa.int32())),  # option length in tokens
    ("decile", pa.int32()), ("fact_id", pa.string()), ("relation", pa.string()), ("template", pa.string()),
    ("cluster", pa.string()),  # what the item's correctness is correlated with (the bootstrap's unit)
])


def chance_level(items: Sequence[dict]) -> float:
    """Expected accuracy of random guessing: mean of 1/len(options) for choice items, 0 for exact."""
    if not items:
        return float("nan")
    return float(np.mean([1.0 / len(it["options"]) if it["kind"] == "choice" else 0.0 for it in items]))


def evaluate_items(model: LM, items: Sequence[dict], *, max_gen_tokens: int = 8,
                   stop: Sequence[str] = DEFAULT_STOP) -> list[dict[str, Any]]:
    """Score items with any `LM`; one output row (ROW_SCHEMA) per item, in item order."""
    ll_reqs: list[LoglikelihoodRequest] = []
    ll_slices: dict[int, tuple[int, int]] = {}
    gen_reqs: list[GenerateRequest] = []
    gen_index: dict[int, int] = {}
    for k, it in enumerate(items):
        if it["kind"] == "choice":
            start = len(ll_reqs)
            ll_reqs += [LoglikelihoodRequest(it["prompt"], " " + o) for o in it["options"]]
            ll_slices[k] = (start, len(ll_reqs))
        elif it["kind"] == "exact":
            gen_index[k] = len(gen_reqs)
            gen_reqs.append(GenerateRequest(it["prompt"], tuple(stop), int(max_gen_tokens)))
        else:
            raise ValueError(f"item {it['id']}: unknown kind {it['kind']!r} (expected choice or exact)")
    ll = model.loglikelihood(ll_reqs) if ll_reqs else []
    gens = model.generate_until(gen_reqs) if gen_reqs else []

    rows = []
    for k, it in enumerate(items):
        row = {key: it.get(key) for key in ("id", "task", "kind", "prompt", "options", "gold", "target",
                                             "fact_id", "relation", "template")}
        row["cluster"] = it.get("cluster") or it["id"]
        row["decile"] = int(it.get("decile") or 0)
        if it["kind"] == "choice":
            s, e = ll_slices[k]
            lps = [r.logprob for r in ll[s:e]]
            norm = [lp / max(1, len(o)) for lp, o in zip(lps, it["options"], strict=True)]
            pred, pred_norm = int(np.argmax(lps)), int(np.argmax(norm))
            row.update(prediction=pred, prediction_text=it["options"][pred], correct=pred == it["gold"],
                       prediction_norm=pred_norm, correct_norm=pred_norm == it["gold"], logprobs=lps,
                       logprobs_norm=norm, n_tokens=[r.n_tokens for r in ll[s:e]])
        else:
            text = gens[gen_index[k]].strip()
            ok = text == str(it["target"]).strip()
            row.update(prediction=0 if ok else -1, prediction_text=text, correct=ok,
                       prediction_norm=0 if ok else -1, correct_norm=ok, logprobs=[], logprobs_norm=[],
                       n_tokens=[])
        rows.append(row)
    return rows


def clusters_of(rows: Sequence[dict]) -> list[str]:
    """The bootstrap unit of each row (its `cluster`, else the row itself)."""
    return [r.get("cluster") or r["id"] for r in rows]


def task_metrics(rows: Sequence[dict], items: Sequence[dict], *, n_boot: int, seed: int) -> dict[str, Any]:
    """{acc, acc_norm, ci_low, ci_high, n, chance} (+ `deciles` when items carry a popularity decile);
    CIs resample clusters (`clusters_of`)."""
    correct = [bool(r["correct"]) for r in rows]
    acc, low, high = accuracy_ci(correct, n_boot, seed, clusters_of(rows))
    out: dict[str, Any] = {
        "acc": acc,
        "acc_norm": float(np.mean([bool(r["correct_norm"]) for r in rows])) if rows else float("nan"),
        "ci_low": low,
        "ci_high": high,
        "n": len(rows),
        "chance": chance_level(items),
    }
    if rows and any(int(r["decile"]) > 0 for r in rows):
        out["deciles"] = per_decile([int(r["decile"]) for r in rows], correct, n_boot, seed, clusters_of(rows))
    return out


def rows_table(rows: Sequence[dict]) -> pa.Table:
    return pa.Table.from_pylist(list(rows), schema=ROW_SCHEMA)
