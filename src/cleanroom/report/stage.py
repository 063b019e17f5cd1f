"""The `report` stage: summary.json, report.md, report.html and figures/, from stored results only."""

from __future__ import annotations

from cleanroom.config import ExperimentConfig, base_recipe
from cleanroom.contract import StageResult
from cleanroom.evals.tasks import clusters_of
from cleanroom.report.claims import Lab, all_claims, all_controls
from cleanroom.report.figures import make_figures
from cleanroom.report.render import to_html, to_markdown
from cleanroom.report.summary import (
    Summary,
    TamperPoint,
    TaskResult,
    data_section,
    decile_table,
    environment,
    load_eval_rows,
    stage_usage,
    task_result,
)
from cleanroom.report.worldless import worldless_recipes
from cleanroom.stats import accuracy_ci
from cleanroom.store import RunStore, StoreError
from cleanroom.tamper.strongest import accuracies, attack_items, strongest_per_steps
from cleanroom.world.schema import TASKS


def tamper_curve(store: RunStore, recipe: str, n_boot: int, seed: int) -> list[TamperPoint]:
    """Per step count: the strongest attack's held-out accuracy with its CI (`tamper.strongest`)."""
    if not store.path(f"evals/{recipe}/tamper_items.parquet").exists():
        return []
    by_attack = attack_items(store, recipe)
    out = []
    for k, best in strongest_per_steps(accuracies(by_attack)).items():
        rows = list(by_attack[best].values())
        correct = [bool(r["correct"]) for r in rows]
        acc, lo, hi = accuracy_ci(correct, n_boot, seed + k, clusters_of(rows))
        out.append(TamperPoint(steps=k, acc=acc, ci_low=lo, ci_high=hi, attack=best[0], lr=best[2], n=len(correct)))
    return out


def group_results(lab: Lab, results: dict[str, dict[str, TaskResult]], seed: int) -> dict[str, dict[str, TaskResult]]:
    """Per recipe group with several replicates, per task: the replicates' mean accuracy with its interval over
    models and items (the unit claims compare), against the task's chance level."""
    out: dict[str, dict[str, TaskResult]] = {}
    for g, models in lab.groups.items():
        if len(models) < 2:
            continue
        out[g] = {}
        for k, task in enumerate(results[models[0]]):
            c = lab.accuracy(task, g, seed + k)
            out[g][task] = TaskResult(acc=c.effect, ci_low=c.ci_low, ci_high=c.ci_high, n=c.n,
                                      chance=results[models[0]][task].chance)
    return out


def build_summary(cfg: ExperimentConfig, store: RunStore) -> Summary:
    recipes = [m for m in cfg.models() if store.path(f"evals/{m}").is_dir()]  # recipes, then safeguarded arms
    if not recipes:
        raise StoreError(f"no evaluation results under {store.path('evals')}: run `cleanroom eval` first")
    n_boot, seed = cfg.eval.bootstrap, cfg.seed
    results, deciles, tamper = {}, {}, {}
    for r in recipes:
        results[r] = {t: task_result(load_eval_rows(store, r, t), n_boot, seed) for t in TASKS
                      if store.exists(f"evals/{r}/{t}.parquet")}
        deciles[r] = decile_table(load_eval_rows(store, r, "longtail"), n_boot, seed)
    for r in cfg.attacked():
        if store.exists(f"evals/{r}/tamper_items.parquet"):
            tamper[r] = tamper_curve(store, r, n_boot, seed)
    # no verdict involves a recipe without a world
    lab = Lab(store, [r for r in recipes if base_recipe(r) not in cfg.corpora], n_boot)
    usage = stage_usage(store, cfg)
    return Summary(
        name=cfg.name, seed=cfg.seed, preset=cfg.name, recipes=recipes, results=results,
        group_results=group_results(lab, results, seed),
        claims=all_claims(lab, seed), controls=all_controls(lab, seed),
        longtail_by_decile=deciles, tamper=tamper,
        data=data_section(store), timings={k: u.seconds for k, u in usage.items()},
        cpu_seconds={k: u.cpu_seconds for k, u in usage.items() if u.cpu_seconds is not None},
        core_share={k: u.core_share for k, u in usage.items() if u.core_share is not None}, environment=environment(),
        worldless=worldless_recipes(cfg, store),
    )


def write_report(cfg: ExperimentConfig, store: RunStore) -> tuple[Summary, list[str]]:
    summary = build_summary(cfg, store)
    store.write_text("summary.json", summary.model_dump_json(indent=2) + "\n")
    figures = make_figures(store, summary)
    store.write_text("report.md", to_markdown(summary, figures))
    store.write_text("report.html", to_html(summary, figures, store))
    return summary, ["summary.json", "report.md", "report.html", *figures.values()]


def run_report(cfg: ExperimentConfig, store: RunStore) -> StageResult:
    summary, outputs = write_report(cfg, store)
    stats = {k: {"verdict": c.verdict, "effect": c.effect, "ci_low": c.ci_low, "ci_high": c.ci_high}
             for k, c in summary.claims.items()}
    return StageResult(outputs=outputs, stats={"claims": stats})
