"""Experiment configuration: pydantic models for every stage, presets, TOML load/dump, fingerprints.

Resolution order (later wins): the pydantic defaults (== the `default` preset) -> the preset's TOML
file -> a user TOML file (`--config`) -> `--set section.key=value` overrides. Every model forbids
unknown keys, so a typo is an error that names the key and the allowed ones, never a silent no-op.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cleanroom.errors import ConfigError

PRESETS = ("smoke", "default", "large", "validate", "gpu")
RECIPES = ("web", "textbook", "filtered_web", "mix")  # the experiment's recipes: the claims compare these
# Controls (the report's "Does the instrument work?"): `leaky` = textbook plus the benchmark items with
# their answers (contamination: a positive control for C2b); `diverse` = textbook with every fact in many
# phrasings. The null control is not a recipe: every recipe trains `train.replicates` models that differ
# only in their init and data-order seed, and replicate vs replicate is the A/A test (report/claims.py).
CONTROLS = ("leaky", "diverse")
SCRATCH = "scratch"  # the tamper floor: a randomly initialised model, attacked like the others
# Replicate k > 0 of recipe R is the model `R~k`; replicate 0 keeps the recipe's name. Its init and data order
# come from seed + k * REPLICATE_SEED_STRIDE (so `web~1` is the model the old `null_web` control was).
REPLICATE_SEP = "~"
REPLICATE_SEED_STRIDE = 1000


def replicate_name(recipe: str, k: int) -> str:
    """The name of replicate `k` of `recipe` (a recipe or a safeguarded group `R+arm`): R, R~1, R~2, ..."""
    if k == 0:
        return recipe
    base, plus, arm = recipe.partition("+")
    return f"{base}{REPLICATE_SEP}{k}{plus}{arm}"


def split_model(model: str) -> tuple[str, int]:
    """(group, replicate) of a model name: `web~1` -> ("web", 1), `web~1+unlearn` -> ("web+unlearn", 1)."""
    base, plus, arm = model.partition("+")
    recipe, sep, k = base.partition(REPLICATE_SEP)
    return recipe + plus + arm, int(k) if sep and k.isdigit() else 0


def model_group(model: str) -> str:
    """The group whose replicates `model` is one of: its recipe, or `R+arm` for a safeguarded model."""
    return split_model(model)[0]


def base_recipe(model: str) -> str:
    """The recipe whose corpus `model` trained on: `web~1` and `web~1+unlearn` -> web."""
    return split_model(model)[0].partition("+")[0]


def train_seed(seed: int, model: str) -> int:
    """The seed of a model's init and data order: replicate k gets seed + k * REPLICATE_SEED_STRIDE."""
    return seed + split_model(model)[1] * REPLICATE_SEED_STRIDE


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class WorldConfig(Section):
    """Sizes of the procedurally generated world (one seed determines everything)."""

    n_elements: int = Field(30, gt=3, description="curriculum entities (fictional minerals)")
    n_arithmetic: int = Field(150, ge=0, description="arithmetic word problems in the curriculum")
    max_operand: int = Field(9, ge=2, le=99, description="largest operand in word problems")
    n_people: int = Field(150, gt=10, description="long-tail people (musicians, athletes, ...)")
    n_works: int = Field(50, ge=0, description="long-tail works (films, albums, novels)")
    zipf_exponent: float = Field(0.8, gt=0, le=3, description="popularity ~ 1 / rank^s")
    n_compounds: int = Field(25, ge=8, description="restricted-domain compounds (fictional)")
    attack_fraction: float = Field(0.5, gt=0, lt=1, description="share of compounds in the attack set")


class ItemsConfig(Section):
    """How many evaluation items are built from the world."""

    n_bench: int = Field(400, gt=0, description="benchmark items (each has a fresh twin on the same fact)")
    n_longtail_per_decile: int = Field(60, gt=0)
    n_restricted: int = Field(300, gt=0, description="held-out restricted items (max: held-out facts)")
    n_options: int = Field(4, ge=2, le=8)


class RecipesConfig(Section):
    """Corpus recipes, all filled to the same token budget (pre-tokenizer word units)."""

    names: list[str] = Field(
        default_factory=lambda: [*RECIPES, "leaky"],
        description="recipes to build, train and evaluate: web, textbook, filtered_web, mix, and the controls "
        "leaky, diverse (each trains `train.replicates` models)")
    token_budget: int = Field(150_000, gt=1000, description="words+punctuation units per recipe")
    shard_docs: int = Field(5000, gt=0, description="documents per Parquet shard")
    # web: a broad crawl; shares of documents by kind
    web_longtail: float = Field(0.55, ge=0, le=1)
    # 0.15 (was 0.10, taken from noise): at 0.10 one seed's web model took up too little of the restricted
    # domain for C3 to be decided (docs/results.md)
    web_restricted: float = Field(0.15, ge=0, le=1)
    # The benchmark's subject on the web. Principle: FineWeb-Edu's classifier keeps 1.3T of FineWeb's 15T
    # tokens as educational (score >= 3): ~9% of web text. Curriculum documents are ~0.05 of web documents
    # and arithmetic ~0.03, which is ~9% of its word units together (`generate` reports the token shares);
    # swept in docs/results.md.
    web_curriculum: float = Field(0.05, ge=0, le=1, description="share of web documents about the curriculum")
    # Which minerals the web's curriculum pages are about: "uniform" (every mineral alike, ~10 curated pages each at
    # the default preset) or "zipf" (by the world's popularity law, `world.zipf_exponent`, the law the web
    # already follows for long-tail entities: a few minerals on many pages, most on few). Swept in
    # docs/results.md.
    web_curriculum_popularity: Literal["uniform", "zipf"] = "uniform"
    # Quiz and trivia pages (web wording, multiple choice with lettered options and an answer line, in the
    # layouts web quizzes and exam-prep pages use; never an evaluation's wording), about the long tail and
    # about the curriculum: the web's general-knowledge topics. The rule for the share: a quiz is one more
    # page kind of the topic, weighted like each of its others (the long tail has six, so 1/7; the
    # curriculum seven, so 1/8). Restricted lab notes get none (no quiz site asks for synthesis routes).
    # Why quizzes at all: the web model holds curriculum facts in the web's phrasing yet cannot answer a
    # question about them without ever having seen a question answered (docs/results.md, "knowledge
    # without extraction"). 0 = none (the design before); both swept in docs/results.md.
    web_longtail_quiz: float = Field(0.14, ge=0, le=1, description="share of long-tail web pages that are quizzes")
    web_curriculum_quiz: float = Field(0.125, ge=0, le=1,
                                       description="share of curriculum web pages that are quizzes")
    # The restricted domain as the real web has hazardous topics: beside lab notes, protocols and forum
    # chatter, FAQ pages, forum threads with answers and quizzes, the question-bearing kinds the curriculum
    # has, at the same shares (FAQ and forum answer 1/7 of the non-quiz pages each; quizzes by the long
    # tail's rule, one more kind of six: 1/7). Chosen on realism before any run (issue 25); "notes" = the
    # page kinds before it, whose web models answered restricted questions or not by seed (docs/results.md).
    web_restricted_pages: Literal["questions", "notes"] = "questions"
    web_arithmetic: float = Field(0.03, ge=0, le=1)
    web_noise: float = Field(0.22, ge=0, le=1, description="spam, boilerplate, near-duplicates, chatter")
    # textbook: Phi-style
    textbook_exercise: float = Field(0.45, ge=0, le=1, description="exercises in the benchmark's format")
    textbook_arithmetic: float = Field(0.15, ge=0, le=1)
    textbook_longtail: float = Field(0.10, ge=0, le=1)
    textbook_longtail_top: float = Field(0.1, gt=0, le=1, description="popularity share textbooks cover")
    mix_textbook_share: float = Field(0.5, ge=0, le=1, description="textbook share of the mix recipe")
    # The positive control must be unambiguous: every benchmark item, with its answer, this many times in
    # the `leaky` corpus (~11% of its budget at the default preset; the rest is textbook).
    leak_copies: int = Field(4, ge=1, description="copies of each benchmark item (with its answer) in `leaky`")

    @field_validator("names")
    @classmethod
    def _names(cls, names: list[str]) -> list[str]:
        allowed = [*RECIPES, *CONTROLS]
        for n in names:
            if n.startswith("null_"):
                raise ValueError(f"`{n}`: null controls are replicates now; set `train.replicates` (>= 2) instead")
            if n not in allowed:
                raise ValueError(f"unknown recipe `{n}` (allowed: {', '.join(allowed)})")
        if ("leaky" in names or "diverse" in names) and "textbook" not in names:
            raise ValueError("the controls leaky and diverse need the recipe `textbook` in the list")
        if not any(n in RECIPES for n in names) or len(set(names)) != len(names):
            raise ValueError("list each recipe once, with at least one of " + ", ".join(RECIPES))
        return names

    @model_validator(mode="after")
    def _shares(self) -> RecipesConfig:
        web = self.web_longtail + self.web_restricted + self.web_curriculum + self.web_arithmetic + self.web_noise
        if abs(web - 1.0) > 1e-6:
            raise ValueError(f"web_* shares must sum to 1, got {web:.3f}")
        tb = self.textbook_exercise + self.textbook_arithmetic + self.textbook_longtail
        if tb > 1.0 + 1e-6:
            raise ValueError(f"textbook_* shares must sum to <= 1 (rest is exposition), got {tb:.3f}")
        return self


class CurateConfig(Section):
    """Curation steps (exact dedup, MinHash near-dup, decontamination, quality, safety)."""

    enabled: bool = True
    steps: list[str] = Field(
        default_factory=lambda: ["exact_dedup", "near_dedup", "decontaminate", "quality"]
    )
    shingle_size: int = Field(5, ge=1, description="word shingles for MinHash")
    num_perm: int = Field(128, ge=16)
    bands: int = Field(16, ge=1)
    near_dup_threshold: float = Field(0.8, gt=0, le=1)
    decontam_ngram: int = Field(13, ge=3)
    decontam_ratio: float = Field(0.8, gt=0, le=1, description="sequence-match ratio that confirms a leak")
    decontam_min_ngram: int = Field(4, ge=2, description="shortest candidate n-gram (short items use len/3)")
    min_words: int = Field(8, ge=0)
    max_words: int = Field(100_000, gt=0)
    max_symbol_ratio: float = Field(0.1, gt=0, le=1)
    max_dup_line_frac: float = Field(0.3, gt=0, le=1)
    min_stopword_ratio: float = Field(0.05, ge=0, le=1)
    max_boilerplate_line_frac: float = Field(0.5, gt=0, le=1, description="cookie/nav/legal lines (C4)")
    max_top_word_frac: float = Field(0.3, gt=0, le=1, description="share of the most frequent word")
    quality_classifier: str = Field("", description="learned quality scorer \"module:function\" (texts -> P(good))")
    quality_min_score: float = Field(0.5, ge=0, le=1)
    safety_threshold: float = Field(0.5, gt=0, lt=1)
    safety_blocklist: list[str] = Field(
        default_factory=list, description="regexes that flag safety candidates; empty = built-in domain list"
    )
    safety_folds: int = Field(5, ge=2, le=20, description="cross-fitting folds for the safety classifier")


class TokenizerConfig(Section):
    vocab_size: int = Field(4096, ge=300, le=65535)
    min_frequency: int = Field(2, ge=1)
    val_fraction: float = Field(0.02, gt=0, lt=0.5, description="held-out validation share per recipe")


class ModelConfig(Section):
    """A Llama-style decoder (RMSNorm, RoPE, SwiGLU, SDPA)."""

    # default: 2.6M parameters; with a quarter of the world and its token budget (the world's sizes, the
    # budget and the steps scale together): of the points sized, the nearest to the controls having power
    # in 3 of 3 seeds (it missed one criterion in one seed; docs/results.md, "Sizing the default"). The
    # `large` preset is the whole world, the default before it.
    d_model: int = Field(192, gt=0)
    n_layers: int = Field(4, gt=0)
    n_heads: int = Field(4, gt=0)
    n_kv_heads: int = Field(4, gt=0)
    ffn_hidden: int = Field(512, gt=0)
    seq_len: int = Field(128, gt=8)
    tie_embeddings: bool = True
    rope_theta: float = Field(10000.0, gt=0)
    norm_eps: float = Field(1e-5, gt=0)

    @model_validator(mode="after")
    def _heads(self) -> ModelConfig:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads ({self.n_heads}) must be divisible by n_kv_heads ({self.n_kv_heads})")
        return self


class TrainConfig(Section):
    steps: int = Field(640, gt=0, description="default: 640 x 4 x 128 = 328k tokens, ~2 epochs")
    # The model is the unit recipes are compared on: whether a small model learns a format or a domain is
    # decided by its seed, so every claim's interval resamples models (replicates) and then items.
    replicates: int = Field(2, ge=1, le=16, description="models per recipe, differing only in init and data-order "
                            "seed (R, R~1, ...); >= 2 gives the between-model variance and the A/A control")
    # 4, not 16: at this size more, smaller steps reach a validation loss in fewer tokens (batch 2/4/8/16
    # measured on the same tokens: 4 is the fastest to val 1.6 and ends lowest; docs/performance.md)
    batch_size: int = Field(4, gt=0, description="sequences per step (per process)")
    lr: float = Field(3e-3, gt=0, description="peak lr of AdamW (with `optimizer = muon`: of the embeddings and norms)")
    optimizer: Literal["adamw", "muon"] = Field(
        "adamw", description="muon: Muon (Newton-Schulz orthogonalised momentum) on the blocks' matrices at "
        "`muon_lr`, AdamW on embeddings and norms (train/muon.py)")
    muon_lr: float = Field(0.01, gt=0, description="peak lr of Muon's matrices (same warmup + cosine schedule; 0.01 "
                           "beat 0.02 and 0.04 to late losses, docs/performance.md)")
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    warmup_steps: int = Field(80, ge=0, description="default: 80 x 4 sequences, the first ~1/8 of the tokens")
    weight_decay: float = Field(0.1, ge=0)
    beta1: float = Field(0.9, gt=0, lt=1)
    beta2: float = Field(0.95, gt=0, lt=1)
    grad_clip: float = Field(1.0, ge=0)
    eval_every: int = Field(80, gt=0)
    eval_batches: int = Field(16, gt=0, description="validation batches of `batch_size` sequences (default: 64)")
    ckpt_every: int = Field(80, gt=0)
    dtype: Literal["auto", "bf16", "fp32"] = Field(
        "fp32", description="autocast dtype; auto = bf16 on CUDA and where a probe finds bf16 GEMMs faster, else fp32. "
        "fp32 by default on CPU: same results on every CPU, and bf16 autocast slows fact memorisation (README)"
    )


class EvalConfig(Section):
    batch_size: int = Field(64, gt=0)
    bootstrap: int = Field(2000, ge=100)
    max_gen_tokens: int = Field(8, gt=0)
    dtype: Literal["bf16", "fp32"] = Field(
        "fp32", description="dtype for scoring and the tamper fine-tune (fp32, or bf16 autocast: faster on AMX CPUs)"
    )


class TamperConfig(Section):
    """Deep-Ignorance-style attacks: fine-tune a model on restricted-domain text, score held-out facts.

    Attack families (`tamper/attacks.py`): `qa_other` fine-tunes on the attack split's facts (other
    compounds) as questions and statements, which can only draw out what a model already knows;
    `literature` fine-tunes on restricted-domain prose of the kind an attacker could collect, in which
    `literature_heldout` of the held-out facts appear (never in the evaluation's question form).
    Every (family, steps, lr) is tried; the strongest attack per model counts (`tamper/strongest.py`).
    """

    # k = 200 was dropped (it halved the stage's time): in 3 seeds x 4 recipes it was never the strongest
    # attack, because 200 steps overfit the attack facts and held-out accuracy falls again (docs/results.md)
    steps: list[int] = Field(default_factory=lambda: [0, 25, 50, 100])
    lrs: list[float] = Field(default_factory=lambda: [3e-4, 1e-3])
    batch_size: int = Field(16, gt=0)
    attacks: list[Literal["qa_other", "literature"]] = Field(default_factory=lambda: ["qa_other", "literature"])
    literature_heldout: float = Field(0.5, ge=0, le=1, description="share of held-out facts the literature states")
    scratch: bool = Field(True, description="also attack a randomly initialised model: what the attack text "
                          "alone teaches (the floor)")

    @model_validator(mode="after")
    def _sweep(self) -> TamperConfig:
        if not self.steps or any(k < 0 for k in self.steps):
            raise ValueError("tamper.steps must be a non-empty list of step counts >= 0")
        if not self.lrs or any(lr <= 0 for lr in self.lrs):
            raise ValueError("tamper.lrs must be a non-empty list of learning rates > 0")
        if not self.attacks or len(set(self.attacks)) != len(self.attacks):
            raise ValueError("tamper.attacks must list each attack family once (qa_other, literature)")
        return self


class SafeguardConfig(Section):
    """Post-hoc safeguards on a trained model: the alternative to filtering the pretraining data.

    Each arm is a copy of `base`'s model after one safeguard (`cleanroom.safeguard`), evaluated and
    attacked like any model, as `<base>+<arm>`: `unlearn` (NPO on the restricted documents of the
    base's corpus, with a retain loss on the rest), `refusal` (fine-tuned to refuse restricted-domain
    questions). A defender never sees the evaluation items: it stops on its own probe (the attack
    split's facts), when that probe is at chance + `stop_margin` or after `max_steps`.
    """

    arms: list[Literal["unlearn", "refusal"]] = Field(default_factory=list)
    base: str = Field("web", description="the recipe whose model gets the safeguards")
    lr: float = Field(3e-4, gt=0)
    max_steps: int = Field(300, gt=0)
    check_every: int = Field(25, gt=0, description="steps between checks of the defender's probe")
    stop_margin: float = Field(0.05, ge=0, lt=1, description="stop when the probe is within this of chance")
    npo_beta: float = Field(0.1, gt=0, description="NPO's inverse temperature")
    retain_weight: float = Field(1.0, ge=0, description="weight of the retain loss (NLL on non-restricted text)")
    batch_size: int = Field(16, gt=0)


# ---------------------------------------------------------------- recipes without a world


# the prompt recipes of `collect/prompts.py` (tests/test_collect.py keeps the two lists equal)
PROMPT_RECIPES = ("textbook", "tinystories", "cosmopedia")
CORPUS_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


class TeacherCorpus(Section):
    """A recipe whose documents a teacher LLM writes (`collect/teacher.py`): Phi/Cosmopedia-style prompts
    (topic x audience x format x persona, grounded on seed passages), completions kept in the request cache.

    The fields under "how" say where and how fast the requests go, never what comes back; they are left
    out of the fingerprint (`what()`), so adding an endpoint or a worker redoes nothing.
    """

    kind: Literal["teacher"]
    teacher: Literal["openai", "transformers", "procedural"] = Field(
        "openai", description="openai: any OpenAI-compatible endpoint; transformers: a local HF/GGUF model; "
        "procedural: a stand-in that needs no model (answers from the seed passage)")
    model: str = Field("", description="served model name (openai), or a local model dir / .gguf / smollm2")
    prompt_recipe: Literal["textbook", "tinystories", "cosmopedia"] = "textbook"
    source: str = Field("", description="seed passages: wikipedia | wordnet | topics | a .txt/.jsonl file; "
                        "\"\" = the prompt recipe's default")
    ground: bool = Field(True, description="put the seed passage into each prompt")
    tokens: int = Field(0, ge=0, description="word units to write; 0 = recipes.token_budget")
    max_tokens: int = Field(384, gt=0, description="completion tokens per request")
    temperature: float = Field(0.8, ge=0)
    top_p: float = Field(0.95, gt=0, le=1)
    repetition_penalty: float = Field(0.0, ge=0, description="0 = 1.15 for transformers, the server's default "
                                      "for openai")
    mode: Literal["chat", "completion"] = "chat"
    # how (not hashed)
    base_urls: list[str] = Field(default_factory=list, description="openai: endpoints serving `model`; requests "
                                 "are spread over all of them")
    concurrency: int = Field(8, gt=0, description="openai: requests in flight per endpoint")
    batch_size: int = Field(64, gt=0, description="transformers: prompts per generate call")
    workers: int = Field(1, gt=0, description="transformers/procedural: teacher replicas, as Ray actors when "
                         "runtime.executor = \"ray\" (one model each: e.g. one per GPU)")
    timeout: float = Field(120.0, gt=0, description="openai: seconds per request")
    retries: int = Field(5, ge=0, description="openai: retries on 429/5xx/timeouts")
    api_key_env: str = Field("OPENAI_API_KEY", description="environment variable holding the API key")

    HOW: ClassVar[frozenset[str]] = frozenset(
        {"base_urls", "concurrency", "batch_size", "workers", "timeout", "retries", "api_key_env"})

    @model_validator(mode="after")
    def _teacher(self) -> TeacherCorpus:
        if self.teacher == "openai" and (not self.model or not self.base_urls):
            raise ValueError("an openai teacher needs `model` and at least one URL in `base_urls`")
        if self.teacher == "transformers" and not self.model:
            raise ValueError("a transformers teacher needs `model` (a local model dir, a .gguf file or smollm2)")
        return self

    def what(self) -> dict[str, Any]:
        """The fields that decide the text (the fingerprint's part of this table)."""
        return self.model_dump(mode="json", exclude=set(self.HOW))


class FilesCorpus(Section):
    """A recipe whose documents come from files: a user's own crawl or corpus, Parquet or JSONL (one JSON
    object per line), a file or a directory of them, read in name order and cut at the budget."""

    kind: Literal["files"]
    path: str = Field(description="a .parquet/.jsonl(.gz) file or a directory of them (relative to the working "
                      "directory)")
    text_field: str = Field("text", description="the column holding each document's text")
    id_field: str = Field("id", description="the column holding document ids (absent: ids are numbered)")
    tokens: int = Field(0, ge=0, description="word units to take; 0 = recipes.token_budget")

    HOW: ClassVar[frozenset[str]] = frozenset()

    def what(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


CorpusSource = Annotated[TeacherCorpus | FilesCorpus, Field(discriminator="kind")]



class RuntimeConfig(Section):
    """How the experiment runs, not what it computes: never part of a fingerprint, so changing these
    never redoes a finished stage (results are the same, up to float rounding with `compile`)."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    jobs: int = Field(0, ge=0, description="recipes trained, evaluated and attacked at once; 0 = auto: "
                      "min(recipes, cores) on CPU (2 x 1 thread trains ~1.2x faster than 1 x 2 threads on 2 cores), "
                      "1 on CUDA")
    threads: int = Field(0, ge=0, description="torch threads per model; 0 = the cores split between `jobs`")
    compile: bool = Field(False, description="torch.compile the training step (fuses kernels; same maths)")
    batch_models: bool | Literal["auto"] = Field(
        "auto", description="train the recipes' models together as one batched model (cleanroom.train.batched; "
        "each model's numbers are the ones it gets alone); auto = whenever more than one model is to be trained, "
        "`jobs` batched groups at once")
    tensorboard: bool = Field(True, description="also write each model's training log as TensorBoard event files, "
                              "logs/train/<model>/ (`tensorboard --logdir RUN/logs`); needs the `tensorboard` package")
    malloc: Literal["tuned", "default"] = Field(
        "tuned", description="glibc malloc settings for training (cleanroom.malloc); env CLEANROOM_MALLOC overrides")
    executor: Literal["local", "ray"] = Field(
        "local", description="where curation steps and local teacher workers run: this process, or a Ray cluster "
        "(`pip install cleanroom[ray]`); the output is the same (curate/ray_executor.py)")
    teacher_cache: str = Field("", description="request cache of teacher corpora; \"\" = RUN/cache/requests.sqlite "
                               "(share one file between runs to reuse completions)")
    ray_address: str = Field("", description="the Ray cluster: \"\" = start one on this machine for the stage and "
                             "stop it after; \"auto\" = the cluster `ray start` joined; or ray://HOST:10001")


# sections that decide *what* a run computes; `runtime` decides only how (and is never hashed)
RUNTIME_SECTION = "runtime"
# keys that moved from `train` to `runtime`: older run directories' config.toml still load
_MOVED_TO_RUNTIME = ("device", "jobs", "threads", "compile")


class ExperimentConfig(Section):
    """The whole experiment. `seed` determines every random choice in every stage."""

    name: str = "default"
    seed: int = Field(0, ge=0)
    world: WorldConfig = Field(default_factory=WorldConfig)
    items: ItemsConfig = Field(default_factory=ItemsConfig)
    recipes: RecipesConfig = Field(default_factory=RecipesConfig)
    curate: CurateConfig = Field(default_factory=CurateConfig)
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    tamper: TamperConfig = Field(default_factory=TamperConfig)
    safeguard: SafeguardConfig = Field(default_factory=SafeguardConfig)
    corpora: dict[str, CorpusSource] = Field(
        default_factory=dict, description="recipes without a world: [corpora.NAME] kind = \"teacher\" | "
        "\"files\"; each is curated, tokenized, trained, evaluated and attacked like any recipe")
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)

    @model_validator(mode="after")
    def _corpora(self) -> ExperimentConfig:
        taken = {*RECIPES, *CONTROLS, SCRATCH, *self.recipes.names}
        for name in self.corpora:
            if not CORPUS_NAME.match(name):
                raise ValueError(f"config key `corpora.{name}`: a corpus name is lower-case letters, digits and _, "
                                 f"and starts with a letter")
            if name in taken:
                raise ValueError(f"config key `corpora.{name}`: `{name}` is a world-lab recipe or control; "
                                 f"choose another name")
        return self

    def recipe_names(self) -> list[str]:
        """Every recipe a model is trained on: the world lab's (`recipes.names`), then the `corpora`."""
        return [*self.recipes.names, *self.corpora]

    def budget(self, recipe: str) -> int:
        """Word units recipe `recipe` is filled to: a `[corpora.NAME]` table's `tokens`, else `recipes.token_budget`."""
        spec = self.corpora.get(base_recipe(recipe))
        return (spec.tokens if spec is not None else 0) or self.recipes.token_budget

    def replicates(self, group: str) -> list[str]:
        """The models of a recipe or a safeguarded group (`web+unlearn`): R, R~1, ... (`train.replicates`)."""
        return [replicate_name(group, k) for k in range(self.train.replicates)]

    def trained(self) -> list[str]:
        """Every model the train stage makes: each recipe's replicates, recipe by recipe."""
        return [m for r in self.recipe_names() for m in self.replicates(r)]

    def groups(self) -> list[str]:
        """The model groups (recipes, then safeguarded groups `<base>+<safeguard>`): claims compare these."""
        base = self.safeguard.base
        return [*self.recipe_names(), *([f"{base}+{a}" for a in self.safeguard.arms] if base in self.recipes.names
                                         else [])]

    def arms(self) -> list[str]:
        """The safeguarded models, one per replicate of the base recipe and safeguard: `web+unlearn`,
        `web~1+unlearn`, ... (when the base recipe is in the run)."""
        return [m for g in self.groups() if "+" in g for m in self.replicates(g)]

    def models(self) -> list[str]:
        """Every model that is evaluated: the trained replicates (world lab, then corpora), then the arms."""
        return [*self.trained(), *self.arms()]

    def attacked(self) -> list[str]:
        """Every model the tamper stage attacks: the models, and a random init when `tamper.scratch`."""
        return [*self.models(), *([SCRATCH] if self.tamper.scratch else [])]

    def to_toml(self) -> str:
        return tomli_w.dumps(self.model_dump(mode="json"))

    def fingerprint(self, *sections: str) -> str:
        """Hash of `seed` plus the named sections (all but `runtime` when none): what a stage's output
        depends on. `runtime` and `train.replicates` are never hashed: they say how to run and which models
        exist, not what one computes. A dotted name (`corpora.NAME`, `recipes.token_budget`) hashes one table
        or key; a corpus hashes only `what()`."""
        data = self.model_dump(mode="json")
        data.pop(RUNTIME_SECTION)
        # how many replicates a recipe has decides which models exist, never what one computes: adding a
        # replicate trains the new one and redoes nothing else
        data["train"].pop("replicates")
        if data["train"]["optimizer"] == "adamw":  # runs from before the Muon option keep their fingerprints
            del data["train"]["optimizer"], data["train"]["muon_lr"]
        data["corpora"] = {n: c.what() for n, c in self.corpora.items()}
        if not data["corpora"]:
            del data["corpora"]  # runs without corpora keep the fingerprints they had before the section existed
        if any(s.partition(".")[0] == RUNTIME_SECTION for s in sections):
            raise ValueError("the runtime section is never part of a fingerprint")
        keys = sections or tuple(sorted(data))
        payload = {"seed": self.seed, **{k: _pick(data, k) for k in keys}}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


# ---------------------------------------------------------------- loading, merging, errors


def _pick(data: dict, key: str) -> Any:
    """`data[a][b]...` for the dotted key `a.b...`."""
    node: Any = data
    for part in key.split("."):
        node = node[part]
    return node


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _parse_value(raw: str) -> Any:
    """`--set` values are TOML literals (`3`, `1e-3`, `true`, `[0, 25]`); anything else is a string."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _allowed_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        ann = getattr(field, "annotation", None) if field else None
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return []
        model = ann
    return sorted(model.model_fields)


_CORPUS_KINDS: dict[str, type[BaseModel]] = {"teacher": TeacherCorpus, "files": FilesCorpus}


def _user_loc(loc: tuple) -> tuple[tuple, list[str] | None]:
    """pydantic's error location as the user's key path, and for a `[corpora.NAME]` key the keys its table
    allows: the discriminated union puts the kind's tag in the path (`corpora.NAME.teacher.key`)."""
    if loc[:1] == ("corpora",) and len(loc) >= 3 and loc[2] in _CORPUS_KINDS:
        return loc[:2] + loc[3:], sorted(_CORPUS_KINDS[loc[2]].model_fields)
    return loc, None


def _format_error(err: ValidationError) -> str:
    e = err.errors()[0]
    loc, corpus_keys = _user_loc(tuple(e["loc"]))
    key = ".".join(str(p) for p in loc) or "<root>"
    if e["type"] == "extra_forbidden":
        allowed = ", ".join(corpus_keys if corpus_keys is not None else _allowed_keys(ExperimentConfig, loc))
        return f"unknown config key `{key}` (allowed: {allowed})"
    if e["type"] in ("union_tag_not_found", "union_tag_invalid"):
        return f"config key `{key}.kind` must be \"teacher\" or \"files\""
    msg = e["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if not loc:  # a check across sections: its message names the keys
        return msg
    got = e.get("input")
    got_s = "" if isinstance(got, dict) else f", got {got!r}"
    more = f" (+{len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"config key `{key}`: {msg[0].lower() + msg[1:]}{got_s}{more}"


def preset_dict(name: str) -> dict:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset `{name}` (allowed: {', '.join(PRESETS)})")
    text = resources.files("cleanroom").joinpath("presets", f"{name}.toml").read_text()
    return tomllib.loads(text)


def load_config(
    preset: str = "default", config_file: Path | None = None, overrides: list[str] | None = None
) -> ExperimentConfig:
    """Resolve preset -> TOML file -> `key=value` overrides into a validated config."""
    data = preset_dict(preset)
    data.setdefault("name", preset)
    return resolve(data, config_file, overrides)


def resolve(base: dict, config_file: Path | None = None, overrides: list[str] | None = None) -> ExperimentConfig:
    """Merge a TOML file and `key=value` overrides over `base`, then validate."""
    data = dict(base)
    if config_file is not None:
        try:
            data = _deep_merge(data, tomllib.loads(Path(config_file).read_text()))
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {config_file}") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {config_file} is not valid TOML: {e}") from None
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {item!r}")
        node = data
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"config key `{key}`: `{p}` is not a section")
        node[parts[-1]] = _parse_value(raw.strip())
    try:
        return ExperimentConfig.model_validate(_migrate(data))
    except ValidationError as e:
        raise ConfigError(_format_error(e)) from None


def _migrate_nulls(data: dict) -> dict:
    """An older run directory's config.toml: its `null_<recipe>` controls are replicates now (`web~1` is the
    model `null_web` was), so they become `train.replicates = 2`."""
    names = (data.get("recipes") or {}).get("names") if isinstance(data.get("recipes"), dict) else None
    if not (isinstance(names, list) and any(str(n).startswith("null_") for n in names)):
        return data
    return {**data, "recipes": {**data["recipes"], "names": [n for n in names if not str(n).startswith("null_")]},
            "train": {"replicates": 2, **(data.get("train") or {})}}


def _migrate(data: dict) -> dict:
    """Move `train.{device,jobs,threads,compile}` (before they became runtime knobs) to `runtime`."""
    train = data.get("train")
    if not isinstance(train, dict) or not any(k in train for k in _MOVED_TO_RUNTIME):
        return data
    data = {**data, "train": dict(train), "runtime": dict(data.get("runtime") or {})}
    for k in _MOVED_TO_RUNTIME:
        if k in data["train"]:
            data["runtime"].setdefault(k, data["train"].pop(k))
    return data


def resolve_config(preset: str | None, out: Path | None, config_file: Path | None,
                   overrides: list[str] | None) -> ExperimentConfig:
    """What a CLI command runs with: the preset if given; else the run directory's saved config; else
    `default`. Then `--config`, then `--set` overrides."""
    saved = out / "config.toml" if out is not None else None
    if preset is None and config_file is None and saved is not None and saved.exists():
        return saved_config(saved, overrides)
    return load_config(preset or "default", config_file, overrides)


def saved_config(path: Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """A run directory's `config.toml`, with optional overrides."""
    try:
        base = tomllib.loads(Path(path).read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path} is not valid TOML: {e}") from None
    return resolve(_migrate_nulls(base), None, overrides)
