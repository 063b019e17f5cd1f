"""The stage graph: each stage's entry point, prerequisites, hashed config sections and what it reads.

A leaf: the runner (`pipeline.py`) and the report (which stage ran, for how long) both read it, and stage
functions are named as "module:function" strings, so reading the graph imports no stage.
"""

from __future__ import annotations

from dataclasses import dataclass

from cleanroom.config import ExperimentConfig


@dataclass(frozen=True)
class Stage:
    name: str
    func: str | None  # "module:function"; None = not built yet
    deps: tuple[str, ...]  # stage names; "model" = the stage that made the key's model
    sections: tuple[str, ...]  # config sections the outputs depend on (plus the seed); `corpora.{item}`: one table
    over: str = ""  # "" = once per run; else one key per item of: corpora | trained | arms | models | attacked
    parallel: bool = False  # per-item keys may run at once (`runtime.jobs`)
    batch_func: str | None = None  # "module:function" settling several keys at once (`runtime.batch_models`)
    version: str = "1"  # bump when a stage's code changes its outputs
    doc: str = ""
    # the outputs of a dependency one item reads ({corpus}: the item's corpus recipe, {base}: an arm's base
    # recipe); the item's inputs hash only those, so adding a recipe never redoes the other recipes' work
    reads: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # "module:function" (cfg, item) -> a digest of what the item reads from outside the run directory (a
    # user's files): part of its inputs, so editing those files redoes the item
    external: str = ""

    @property
    def per_recipe(self) -> bool:
        return bool(self.over)


STAGES: dict[str, Stage] = {
    s.name: s
    for s in [
        Stage("world", "cleanroom.world.stage:run_world", (), ("world", "items"),
              doc="entities, facts, popularity, restricted domain, evaluation items"),
        Stage("generate", "cleanroom.generate.stage:run_generate", ("world",), ("recipes",),
              doc="corpus recipes at one token budget"),
        Stage("collect", "cleanroom.collect.stage:run_collect", (),
              ("corpora.{item}", "recipes.token_budget", "recipes.shard_docs"), over="corpora",
              external="cleanroom.collect.stage:external_digest",
              doc="a recipe's documents from a teacher LLM or from files (no world behind them)"),
        Stage("curate", "cleanroom.curate.stage:run_curate", ("generate", "world", "collect"), ("curate", "recipes"),
              doc="dedup, decontamination, quality and safety filters, lineage"),
        Stage("tokenize", "cleanroom.tokenize.stage:run_tokenize", ("generate", "collect", "curate"), ("tokenizer",),
              doc="BPE tokenizer on the union of corpora; token files per recipe"),
        Stage("train", "cleanroom.train.stage:run_train", ("tokenize",), ("model", "train"), over="trained",
              parallel=True, batch_func="cleanroom.train.stage:run_train_batched",
              doc="Llama-style models (train.replicates per recipe); HF export",
              reads=(("tokenize", ("tokenizer.json", "tokens/{corpus}.")),)),
        Stage("safeguard", "cleanroom.safeguard.stage:run_safeguard", ("model", "tokenize", "world", "curate"),
              ("safeguard", "eval"), over="arms", parallel=True,
              doc="a post-hoc safeguard (unlearning, refusal) on a trained model",
              reads=(("tokenize", ("tokenizer.json",)), ("curate", ("curated/{base}/", "curation/filtered_web/")))),
        Stage("eval", "cleanroom.evals.stage:run_eval", ("model", "world"), ("eval",), over="models",
              parallel=True, doc="every task's per-item scores"),
        Stage("tamper", "cleanroom.tamper.stage:run_tamper", ("model", "world", "tokenize"), ("tamper", "eval"),
              over="attacked", parallel=True, version="4",
              doc="fine-tuning attacks on restricted-domain text; held-out accuracy curves",
              reads=(("tokenize", ("tokenizer.json",)),)),
        Stage("report", "cleanroom.report.stage:run_report", ("eval", "tamper", "generate", "collect"), ("eval",),
              doc="summary.json, report.md, report.html, figures"),
    ]
}
ORDER = list(STAGES)
MODEL_MAKERS = {"safeguard": ("train",), "eval": ("train", "safeguard"), "tamper": ("train", "safeguard")}


def stage_items(cfg: ExperimentConfig, over: str) -> list[str]:
    """What a per-item stage iterates over: trained models (every recipe's replicates), corpora, arms, models
    (trained + arms) or attacked (+ scratch)."""
    return {"trained": cfg.trained(), "corpora": list(cfg.corpora), "arms": cfg.arms(), "models": cfg.models(),
            "attacked": cfg.attacked()}[over]
