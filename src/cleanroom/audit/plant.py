"""The audit's own control on real weights: a planted leak (`cleanroom audit --plant FRACTION`).

A seeded random `fraction` of each task's sampled source items (the *leaked* part) is rendered in the
benchmark's own prompt format with its gold answer (`render.training_records`: MMLU/GPQA originals in
every formulation the audit scores, GSM8K originals with their worked solutions) and a copy of the
model is fine-tuned on it (`cleanroom.finetune`, LoRA by default) for the largest exposure in
`epochs`, exporting a model after each smaller one. The base model (exposure 0) and every exposure are
then audited exactly like any model, and each audit is split into the leaked and the *untouched* part.

What the control must show, per (task, formulation) and exposure:
- the benchmark itself sees the leak: the accuracy gained on the leaked items since exposure 0 minus
  the accuracy gained on the untouched ones (a difference in differences over items, item-bootstrap
  CI) is positive;
- per twin family, the leaked part's gap (benchmark minus twin, cluster bootstrap, as in every audit)
  is *supported* once the leak shows, and the untouched part's gap stays *inconclusive* at every
  exposure (the null).
A family whose leaked-part gap is not supported while the benchmark shows the leak cannot detect this
kind of contamination: the report says so, and that family is not evidence for it. ConStat (Dekoninck
et al., NeurIPS 2024) validated its test the same way: half of each benchmark fine-tuned into models,
the other half and uncontaminated fine-tunes as the controls.

Writes `OUT/leak/` (the fine-tuned model and its epoch exports), `OUT/exposure-<e>/` (an audit
directory each), `OUT/plant.json` and `OUT/plant.md`. Every part resumes: the fine-tune from its
checkpoint, each audit from its request cache.
"""

from __future__ import annotations

import dataclasses
import random
from collections import defaultdict
from typing import Any

import numpy as np

from cleanroom.audit.items import ORIGINAL
from cleanroom.audit.render import training_records
from cleanroom.audit.run import TASKS, AuditConfig, run_audit
from cleanroom.audit.stats import difference_of_means, pair_family, verdict
from cleanroom.audit.summary import load_rows
from cleanroom.errors import ConfigError
from cleanroom.store import write_json, write_text
from cleanroom.ui import say


@dataclasses.dataclass
class PlantConfig:
    fraction: float = 0.5
    epochs: tuple[int, ...] = (1, 2, 4)
    method: str = "lora"
    lr: float = 1e-3
    batch_size: int = 8
    max_len: int = 384
    seed: int = 0


def leaked_sources(source_ids: list[str], fraction: float, seed: int, task: str) -> set[str]:
    """The seeded random part of a task's source items that is leaked (the rest stays untouched)."""
    ids = sorted(set(source_ids))
    k = int(round(fraction * len(ids)))
    return set(random.Random(f"{seed}:plant:{task}").sample(ids, k))


def _gap(rows: list[dict], family: str, n_boot: int, seed: int) -> dict[str, Any]:
    pf = pair_family(rows, family)
    if not pf.keys:
        return {"n": 0}
    g, lo, hi = pf.gap(n_boot, seed)
    return {"n": len(pf.keys), "gap": g, "ci_low": lo, "ci_high": hi, "verdict": verdict(lo, hi, expected_sign=1),
            "bench_acc": float(np.mean(pf.orig)), "twin_acc": float(np.mean(pf.twin)), "gap_raw": float(pf.raw.mean()),
            "gap_letter_prior": pf.prior_mean()}


def analyse(rows_by_exposure: dict[int, list[dict]], leaked: dict[str, set[str]], n_boot: int = 2000,
            seed: int = 0) -> dict[str, Any]:
    """The control's numbers (see the module doc) from each exposure's item rows."""
    base = {(r["task"], r["variant"], r["source_id"]): bool(r["correct"])
            for r in rows_by_exposure[min(rows_by_exposure)] if r["family"] == ORIGINAL}
    benchmark, families = [], []
    for e, rows in sorted(rows_by_exposure.items()):
        by: dict[tuple[str, str], list[dict]] = defaultdict(list)
        for r in rows:
            by[(r["task"], r["variant"])].append(r)
        for (task, variant), rs in sorted(by.items()):
            part = {"leaked": [r for r in rs if r["source_id"] in leaked.get(task, set())],
                    "untouched": [r for r in rs if r["source_id"] not in leaked.get(task, set())]}
            orig = {p: [r for r in v if r["family"] == ORIGINAL] for p, v in part.items()}
            gain = {p: np.array([float(r["correct"]) - float(base[(task, variant, r["source_id"])]) for r in v])
                    for p, v in orig.items()}
            d, lo, hi = difference_of_means(gain["leaked"], [r["source_id"] for r in orig["leaked"]],
                                            gain["untouched"], [r["source_id"] for r in orig["untouched"]],
                                            n_boot=n_boot, seed=seed)
            benchmark.append({"exposure": e, "task": task, "variant": variant,
                              "acc_leaked": float(np.mean([r["correct"] for r in orig["leaked"]] or [np.nan])),
                              "acc_untouched": float(np.mean([r["correct"] for r in orig["untouched"]] or [np.nan])),
                              "n_leaked": len(orig["leaked"]), "n_untouched": len(orig["untouched"]),
                              "leak_effect": d, "ci_low": lo, "ci_high": hi,
                              "detected": bool(e > 0 and lo > 0)})
            for fam in sorted({r["family"] for r in rs} - {ORIGINAL}):
                families.append({"exposure": e, "task": task, "variant": variant, "family": fam,
                                 "leaked": _gap(part["leaked"], fam, n_boot, seed),
                                 "untouched": _gap(part["untouched"], fam, n_boot, seed)})
    top = max(rows_by_exposure)
    shown = {(b["task"], b["variant"]) for b in benchmark if b["exposure"] == top and b["detected"]}
    verdicts = []
    for f in (f for f in families if f["exposure"] == top):
        null_ok = all(g["untouched"].get("verdict", "inconclusive") == "inconclusive" for g in families
                      if (g["task"], g["variant"], g["family"]) == (f["task"], f["variant"], f["family"]))
        detects = f["leaked"].get("verdict") == "supported"
        leak_shown = (f["task"], f["variant"]) in shown
        verdicts.append({"task": f["task"], "variant": f["variant"], "family": f["family"],
                         "benchmark_shows_leak": leak_shown, "detects_leak": detects, "null_inconclusive": null_ok,
                         "evidence": bool(leak_shown and detects and null_ok)})
    return {"benchmark": benchmark, "families": families, "verdicts": verdicts}


def run_plant(cfg: AuditConfig, plant: PlantConfig) -> dict[str, Any]:
    """Fine-tune the leak, audit every exposure, write `plant.json` / `plant.md` (see the module doc)."""
    from cleanroom.finetune import FinetuneConfig, finetune

    if not 0 < plant.fraction < 1:
        raise ConfigError(f"--plant must be a fraction between 0 and 1, got {plant.fraction}")
    epochs = sorted(set(plant.epochs))
    if not epochs or epochs[0] < 1:
        raise ConfigError(f"--plant-epochs must be positive integers, got {plant.epochs}")
    if cfg.base_url:
        raise ConfigError("--plant fine-tunes a local copy of the model: pass a local --model, not --base-url")
    out = cfg.out
    records, leaked = [], {}
    for name in cfg.tasks:
        task = TASKS[name]()
        items = task.items(cfg.options.for_task(name))
        leaked[name] = leaked_sources([it.source_id for it in items if it.family == ORIGINAL], plant.fraction,
                                      plant.seed, name)
        records += training_records([it for it in items if it.family == ORIGINAL and it.source_id in leaked[name]])
    say(f"[bold]plant[/]: {sum(map(len, leaked.values()))} leaked source items, {len(records)} training records, "
        f"exposures {epochs} epochs")
    ft = FinetuneConfig(model=cfg.model, method=plant.method, epochs=epochs[-1], export_epochs=epochs[:-1],
                        lr=plant.lr, batch_size=plant.batch_size, max_len=plant.max_len, seed=plant.seed,
                        threads=cfg.threads, device=cfg.device)
    info = finetune(ft, records, out / "leak")
    models = {0: cfg.model, **{e: str(out / "leak" / f"epoch-{e}") for e in epochs[:-1]},
              epochs[-1]: str(out / "leak")}
    rows: dict[int, list[dict]] = {}
    timings: dict[str, float] = {"finetune_s": info.get("train_seconds_this_call", 0.0)}
    order = [0, epochs[-1], *epochs[:-1]]  # the null and the largest dose first: the most telling, if cut short
    for e in order:
        model = models[e]
        say(f"[bold]plant[/]: auditing exposure {e} ({model})")
        s = run_audit(dataclasses.replace(cfg, model=model, out=out / f"exposure-{e}"))
        rows[e] = load_rows(out / f"exposure-{e}")
        timings[f"exposure_{e}_audit_s"] = s.timings.get("total_s", 0.0)
    result = analyse(rows, leaked, cfg.n_boot, plant.seed)
    result.update(config={**dataclasses.asdict(plant), "tasks": cfg.tasks, "model": cfg.model,
                          "limit": cfg.options.limit, "task_limits": cfg.options.task_limits,
                          "formulations": list(cfg.options.formulations)},
                  leaked={k: sorted(v) for k, v in leaked.items()},
                  finetune={k: info[k] for k in ("records", "tokens_per_epoch", "trainable_params", "losses")
                            if k in info}, timings=timings)
    write_json(out / "plant.json", result)
    write_text(out / "plant.md", render_plant(result))
    return result


def _ci(g: dict[str, Any]) -> str:
    if not g.get("n"):
        return "-"
    raw = "" if g.get("gap_letter_prior") is None else f"; raw {g['gap_raw']:+.3f}"
    return f"{g['gap']:+.3f} [{g['ci_low']:+.3f}, {g['ci_high']:+.3f}] {g['verdict']} (n={g['n']}{raw})"


def render_plant(r: dict[str, Any]) -> str:
    c = r["config"]
    lines = [f"# Planted-leak control: {c['model']}", "",
             f"{c['fraction']:.0%} of the sampled source items of {', '.join(c['tasks'])} (limit {c['limit']}) "
             f"fine-tuned in with their gold answers ({c['method']}, lr {c['lr']}, exposures {c['epochs']} "
             f"epochs; {r['finetune'].get('records')} records, {r['finetune'].get('tokens_per_epoch')} tokens "
             f"per epoch). Exposure 0 is the model itself.", "",
             "## Does the benchmark see the leak?", "",
             "| exposure | task · format | acc leaked | acc untouched | leak effect (gain leaked - gain untouched) "
             "[95% CI] | detected |", "| --- | --- | --- | --- | --- | --- |"]
    for b in r["benchmark"]:
        lines.append(f"| {b['exposure']} | {b['task']} · {b['variant']} | {b['acc_leaked']:.3f} (n={b['n_leaked']}) "
                     f"| {b['acc_untouched']:.3f} (n={b['n_untouched']}) | {b['leak_effect']:+.3f} "
                     f"[{b['ci_low']:+.3f}, {b['ci_high']:+.3f}] | {'yes' if b['detected'] else 'no'} |")
    lines += ["", "## Twin families: gap on the leaked part vs the untouched part (the null)", "",
              "Lettered families: the gap beyond the model's letter prior (`audit.stats`), the raw gap beside it.",
              "",
              "| exposure | task · format | family | leaked-part gap [95% CI] | untouched-part gap [95% CI] |",
              "| --- | --- | --- | --- | --- |"]
    for f in r["families"]:
        lines.append(f"| {f['exposure']} | {f['task']} · {f['variant']} | {f['family']} | {_ci(f['leaked'])} "
                     f"| {_ci(f['untouched'])} |")
    lines += ["", "## Which families are evidence", ""]
    for v in r["verdicts"]:
        where = f"{v['task']} · {v['variant']} · {v['family']}"
        if not v["benchmark_shows_leak"]:
            why = "the benchmark itself does not show the leak at the largest exposure: no test of this family"
        elif v["evidence"]:
            why = "detects the leak; its null stays inconclusive at every exposure: evidence"
        elif not v["detects_leak"]:
            why = "does NOT detect a leak the benchmark shows: not evidence for this kind of contamination"
        else:
            why = "detects the leak but its null is not inconclusive at every exposure: not evidence"
        lines.append(f"- {where}: {why}")
    return "\n".join(lines) + "\n"
