"""`cleanroom` command line: one sub-command per stage, `run` for the whole experiment, `report`.

Every stage command runs its missing prerequisites first and skips what is already up to date, so
`cleanroom eval --preset smoke --out DIR` on an empty DIR does everything it needs.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import click
import typer
from typer.core import TyperGroup

from cleanroom.config import load_config, resolve_config, saved_config
from cleanroom.errors import CleanroomError
from cleanroom.malloc import tune_malloc
from cleanroom.ui import console, say

if TYPE_CHECKING:
    from cleanroom.store import RunStore

# Libraries' own tqdm bars (transformers' GGUF de-quantization, datasets) would interleave with ours;
# tqdm reads this when it is first imported, which happens after this module loads.
os.environ.setdefault("TQDM_DISABLE", "1")


class _Group(TyperGroup):
    """The one place a `CleanroomError` or an `OSError` becomes a one-line message (exit code 2, no
    traceback; the stage first when it came from one), and Ctrl-C or SIGTERM a line saying that finished
    work is kept (exit code 130)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (CleanroomError, OSError) as e:
            if isinstance(e, OSError):
                from cleanroom.store import os_error

                e = os_error(e, None)
            where = f"stage `{e.stage}`: " if e.stage else ""
            console.print(f"[bold red]error:[/] {where}{e}", soft_wrap=True)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            console.print("[bold red]interrupted[/] — finished work is kept; rerun the same command to resume",
                          soft_wrap=True)
            raise typer.Exit(130) from None


app = typer.Typer(
    cls=_Group,
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    help="Train language models on data you fully control, and measure what that control buys and costs.",
)
config_app = typer.Typer(add_completion=False, no_args_is_help=True, help="Inspect configuration.")
app.add_typer(config_app, name="config")

PresetOpt = Annotated[
    str | None,
    typer.Option("--preset", "-p",
                 help="smoke | default | large | validate | gpu (default: the run's saved config, else default)"),
]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="run directory")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", "-s", help="override, e.g. --set train.steps=100")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="TOML file merged over the preset")]
ForceOpt = Annotated[bool, typer.Option("--force", help="redo this stage even if it is up to date")]
ExecutorOpt = Annotated[str | None, typer.Option(
    "--executor", help="local | ray: where curation (and local teacher workers) run; same output "
    "(sets runtime.executor)")]
RayAddressOpt = Annotated[str | None, typer.Option(
    "--ray-address", help="Ray cluster: auto | ray://HOST:10001 (default: a private one on this machine)")]


def _runtime_sets(sets: list[str] | None, executor: str | None, ray_address: str | None) -> list[str]:
    """`--executor` / `--ray-address` as `runtime.*` overrides (runtime is never hashed: no rerun)."""
    out = list(sets or [])
    if executor is not None:
        if executor not in ("local", "ray"):
            raise CleanroomError(f"--executor must be local or ray, got `{executor}`")
        out.append(f"runtime.executor={executor}")
    if ray_address is not None:
        out.append(f"runtime.ray_address={ray_address}")
    return out


@contextlib.contextmanager
def _writing(out: Path) -> Iterator[None]:
    """Hold run directory `out`'s writer lock (`store.writer_lock`) for a command that writes to it."""
    from cleanroom.store import writer_lock

    with writer_lock(out, shlex.join(["cleanroom", *sys.argv[1:]])):
        yield


def _run_stages(stages: list[str], preset, out, config, sets, force: bool, recipes: list[str] | None = None,
                overall: bool = False):
    from cleanroom.pipeline import Pipeline
    from cleanroom.store import RunStore
    from cleanroom.ui import progress

    cfg = resolve_config(preset, out, config, sets)
    tune_malloc(cfg.runtime.malloc)  # before any stage thread allocates (see cleanroom.malloc)
    store = RunStore(out)
    with _writing(out):
        pipe = Pipeline(cfg, store, force=set(stages) if force else set(), recipes=recipes)
        if not overall:
            for s in stages:
                pipe.ensure(s)
            return pipe
        keys = [k for s in stages for k in pipe.keys(s)]
        with progress("experiment", total=len(keys)) as task:
            pipe.on_done = lambda key: task.advance(1, info=f"done: {key}")
            for s in stages:
                pipe.ensure(s)
        return pipe


def _stage_command(name: str, help_text: str, per_recipe: bool = False):
    if per_recipe:

        def cmd(preset: PresetOpt = None, out: OutOpt = Path("runs/default"), config: ConfigOpt = None,
                set_: SetOpt = None, force: ForceOpt = False,
                recipe: Annotated[list[str] | None, typer.Option("--recipe", "-r", help="only this recipe")] = None):
            _run_stages([name], preset, out, config, set_, force, recipe)
    else:

        def cmd(preset: PresetOpt = None, out: OutOpt = Path("runs/default"), config: ConfigOpt = None,
                set_: SetOpt = None, force: ForceOpt = False):
            pipe = _run_stages([name], preset, out, config, set_, force)
            if name == "generate" and pipe is not None:
                _print_generate_table(pipe.store)

    cmd.__doc__ = help_text
    app.command(name)(cmd)


_stage_command("world", "Generate the world (entities, facts, popularity, restricted domain, eval items).")


@app.command("generate")
def generate_cmd(
    preset: PresetOpt = None, out: OutOpt = Path("runs/default"), config: ConfigOpt = None, set_: SetOpt = None,
    force: ForceOpt = False,
    teacher: Annotated[str, typer.Option(help="procedural (world lab) | openai | transformers")] = "procedural",
    model: Annotated[str | None, typer.Option(help="served model name, or local model dir / .gguf / smollm2")] = None,
    base_url: Annotated[list[str] | None, typer.Option(
        help="OpenAI-compatible endpoint URL; repeat it to spread requests over several servers")] = None,
    recipe: Annotated[str, typer.Option(help="real teachers: textbook | tinystories | cosmopedia")] = "textbook",
    tokens: Annotated[int, typer.Option(help="real teachers: corpus budget in word units")] = 20_000,
    source: Annotated[str | None, typer.Option(help="seed source: wikipedia | wordnet | topics | FILE")] = None,
    seed: Annotated[int, typer.Option(help="prompt sampling seed")] = 0,
    ground: Annotated[bool, typer.Option(help="put the seed passage into each prompt")] = True,
    concurrency: Annotated[int, typer.Option(help="openai: requests in flight")] = 8,
    batch_size: Annotated[int, typer.Option(help="transformers: prompts per generate call")] = 64,
    max_tokens: Annotated[int, typer.Option(help="completion tokens per request")] = 384,
    temperature: Annotated[float, typer.Option()] = 0.8,
    top_p: Annotated[float, typer.Option()] = 0.95,
    timeout: Annotated[float, typer.Option(help="openai: seconds per request")] = 120.0,
    retries: Annotated[int, typer.Option(help="openai: retries on 429/5xx/timeouts")] = 5,
    mode: Annotated[str, typer.Option(help="openai: chat | completion")] = "chat",
    api_key_env: Annotated[str, typer.Option(help="environment variable holding the API key")] = "OPENAI_API_KEY",
    cache: Annotated[str | None, typer.Option(help="request cache (default OUT/cache/requests.sqlite)")] = None,
    repetition_penalty: Annotated[float | None, typer.Option(help="1.15 for transformers if unset")] = None,
):
    """Write corpora: the world lab's recipes (default), or a real teacher's corpus (--teacher openai|transformers)."""
    if teacher == "procedural":
        pipe = _run_stages(["generate"], preset, out, config, set_, force)
        if pipe is not None:
            _print_generate_table(pipe.store)
        return
    from cleanroom.collect.teacher import run_teacher_generate
    from cleanroom.errors import ModelError

    try:
        with _writing(out):
            run_teacher_generate(out, teacher=teacher, model=model, base_url=base_url, recipe=recipe, tokens=tokens,
                                 source=source, seed=seed, ground=ground, concurrency=concurrency,
                                 batch_size=batch_size, max_tokens=max_tokens, temperature=temperature, top_p=top_p,
                                 timeout=timeout, retries=retries, mode=mode, api_key_env=api_key_env, cache=cache,
                                 repetition_penalty=repetition_penalty)
    except ModelError as e:
        raise ModelError(f"{e} — finished requests are cached; rerun the same command to resume") from None


def _print_generate_table(store: RunStore) -> None:
    """The per-recipe table `cleanroom generate` prints, from the generate stage's manifest (no recomputation)."""
    from rich.table import Table

    m = store.manifest("generate")
    if m is None:
        return
    t = Table(title=f"corpora at a budget of {m.stats['token_budget']:,} word units")
    for col in ("recipe", "docs", "tokens", "distinct-3", "long-tail covered", "restricted docs"):
        t.add_column(col, justify="left" if col == "recipe" else "right")
    for recipe, s in m.stats["recipes"].items():
        t.add_row(recipe, f"{s['docs']:,}", f"{s['tokens']:,}", f"{s['distinct_3']:.3f}",
                  f"{s['longtail_covered']:,}", f"{s['domains'].get('restricted', 0):,}")
    console.print(t)
    pf = m.stats.get("placeholder_filter")
    if pf:
        console.print(f"  placeholder keyword filter on web: recall {pf['recall']:.2f}, "
                      f"false-positive rate {pf['fpr']:.3f} (the curate stage brings the real filter)")


_stage_command("collect", "Write each [corpora.NAME] recipe: documents from a teacher LLM or from files "
               "(no world behind them).", per_recipe=True)


@app.command("serve")
def serve_cmd(
    model_dir: Annotated[str, typer.Argument(help="HF model dir (e.g. RUN/models/textbook), .gguf file, or smollm2")],
    host: Annotated[str, typer.Option(help="bind address (127.0.0.1 = this machine only)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port (0 = any free port)")] = 8000,
    name: Annotated[str | None, typer.Option(help="model id clients send (default: the directory name)")] = None,
    max_tokens_limit: Annotated[int, typer.Option(help="largest max_tokens a request may ask for")] = 1024,
    batch_size: Annotated[int, typer.Option(help="concurrent requests batched into one generate call")] = 32,
):
    """Serve a model over an OpenAI-compatible API (/v1/models, /v1/completions, /v1/chat/completions)."""
    from cleanroom.serve import serve_forever

    try:
        serve_forever(model_dir, host, port, name=name, max_tokens_limit=max_tokens_limit, batch_size=batch_size)
    except OSError as e:
        raise CleanroomError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None


def parse_formulation(text: str) -> tuple[str, ...]:
    """`--formulation` (MMLU/GPQA): letter | cloze | both."""
    forms = {"letter": ("letter",), "cloze": ("cloze",), "both": ("letter", "cloze")}
    if text not in forms:
        raise CleanroomError(f"--formulation must be letter, cloze or both, got `{text}`")
    return forms[text]


def parse_limit(text: str | None, default: int | None) -> tuple[int | None, dict[str, int | None]]:
    """`--limit`: `N` for every task, `task=N` for one (`200,gsm8k=50`); 0 = all items."""
    n, per = default, {}
    for part in (p.strip() for p in (text or "").split(",") if p.strip()):
        name, _, value = part.rpartition("=")
        try:
            k = int(value)
        except ValueError:
            raise CleanroomError(f"--limit takes N or task=N, comma-separated (e.g. 200,gsm8k=50), got `{part}`"
                                 ) from None
        if k < 0:
            raise CleanroomError(f"--limit must be >= 0, got `{part}`")
        if name:
            per[name.strip()] = k or None
        else:
            n = k or None
    return n, per


@app.command("audit")
def audit_cmd(
    dirs: Annotated[list[Path] | None, typer.Argument(help="with --compare: audit directories (A first)")] = None,
    model: Annotated[str | None, typer.Option(help="local model dir / .gguf / smollm2, or the served model name")]
    = None,
    base_url: Annotated[str | None, typer.Option(help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1")]
    = None,
    tasks: Annotated[str, typer.Option(help="comma-separated: mmlu, gsm8k, gpqa, longtail (real-world knowledge)")]
    = "mmlu,gsm8k",
    limit: Annotated[str | None, typer.Option(help="original items per task (default 200 on CPU, all on a GPU; "
                                                   "0 = all); per task: `200,gsm8k=50`")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="audit directory (default runs/audit-<model>)")]
    = None,
    formulation: Annotated[str, typer.Option(help="MMLU: letter | cloze | both")] = "both",
    shots: Annotated[int, typer.Option(help="few-shot examples (MMLU, GSM8K)")] = 0,
    protocol: Annotated[str, typer.Option(help="auto | loglikelihood | chat (chat/reasoning models: chat)")]
    = "auto",
    seed: Annotated[int, typer.Option(help="twin sampling seed")] = 0,
    max_tokens: Annotated[int, typer.Option(help="chat protocol: max tokens per answer")] = 1024,
    gen_tokens: Annotated[int, typer.Option(help="completion protocol (GSM8K): max new tokens")] = 256,
    concurrency: Annotated[int, typer.Option(help="endpoint: requests in flight")] = 8,
    timeout: Annotated[float, typer.Option(help="endpoint: seconds per request")] = 300.0,
    retries: Annotated[int, typer.Option(help="endpoint: retries on 429/5xx/timeouts")] = 5,
    api_key_env: Annotated[str, typer.Option(help="environment variable holding the API key")] = "OPENAI_API_KEY",
    dtype: Annotated[str, typer.Option(help="local model dtype: float32 | bfloat16")] = "float32",
    batch_size: Annotated[int, typer.Option(help="local model: prompts per forward pass")] = 32,
    threads: Annotated[int, typer.Option(help="local model: torch threads (0 = auto: 1 on a busy machine)")] = 0,
    compare: Annotated[bool, typer.Option("--compare", help="compare finished audits: DIR_A DIR_B ...")] = False,
    plant: Annotated[float | None, typer.Option(
        help="control: fine-tune a copy on this seeded fraction of the items (the leak), audit both parts")] = None,
    plant_epochs: Annotated[str, typer.Option(help="--plant: exposures (epochs), comma-separated")] = "1,2,4",
    plant_lr: Annotated[float, typer.Option(help="--plant: learning rate (LoRA)")] = 1e-3,
    plant_method: Annotated[str, typer.Option(help="--plant: lora | full")] = "lora",
):
    """Audit a model: benchmark accuracy vs paired fresh twins (MMLU, GSM8K, GPQA) and real-world long-tail
    knowledge by popularity (longtail), with CIs and a report card."""
    if compare:
        if not dirs or len(dirs) < 2:
            raise CleanroomError("--compare needs two or more audit directories: "
                                 "cleanroom audit --compare DIR_A DIR_B")
        from cleanroom.audit.report import compare_audits, write_compare

        results = compare_audits(list(dirs))
        target = out or dirs[0]
        write_compare(target, results)
        for c in results:
            say(f"  {c['task']}/{c['variant']}/{c['family']}: {c['a']} - {c['b']} "
                f"{c['effect']:+.3f} [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}] -> {c['verdict']}")
        say(f"[bold]comparison:[/] {target / 'compare.md'}")
        return
    if dirs:
        raise CleanroomError(f"unexpected argument {dirs[0]} (audit directories go with --compare)")
    if not model:
        raise CleanroomError("--model is required (a local model dir, .gguf, smollm2, "
                             "or the endpoint's model name)")
    import torch

    from cleanroom.audit.items import TaskOptions
    from cleanroom.audit.run import AuditConfig, run_audit

    gpu = torch.cuda.is_available()
    n, task_limits = parse_limit(limit, None if gpu else 200)
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in Path(model).name)
    cfg = AuditConfig(
        model=model, tasks=[t.strip() for t in tasks.split(",") if t.strip()],
        out=out or Path("runs") / f"audit-{safe}", base_url=base_url, protocol=protocol,
        options=TaskOptions(limit=n, seed=seed, shots=shots, formulations=parse_formulation(formulation),
                            max_gen_tokens=gen_tokens, task_limits=task_limits),
        chat_max_tokens=max_tokens, concurrency=concurrency, timeout=timeout, retries=retries,
        api_key_env=api_key_env, dtype=dtype, batch_size=batch_size, device="cuda" if gpu else "cpu",
        threads=threads)
    with _writing(cfg.out):
        if plant is not None:
            from cleanroom.audit.plant import PlantConfig, run_plant

            try:
                exposures = tuple(int(x) for x in plant_epochs.split(",") if x.strip())
            except ValueError:
                raise CleanroomError(f"--plant-epochs must be comma-separated integers, got `{plant_epochs}`") from None
            result = run_plant(cfg, PlantConfig(fraction=plant, epochs=exposures, lr=plant_lr, method=plant_method,
                                                seed=seed))
            for v in result["verdicts"]:
                say(f"  {v['task']}/{v['variant']}/{v['family']}: benchmark shows leak {v['benchmark_shows_leak']}, "
                    f"family detects {v['detects_leak']}, null inconclusive {v['null_inconclusive']}")
            say(f"[bold]planted-leak report:[/] {cfg.out / 'plant.md'}")
            return
        summary = run_audit(cfg)
    for r in summary.results:
        gap = "" if r.gap is None else f" gap {r.gap:+.3f} [{r.gap_ci_low:+.3f}, {r.gap_ci_high:+.3f}] {r.gap_verdict}"
        say(f"  {r.task}/{r.variant}/{r.family}: acc {r.acc:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}] n={r.n}{gap}")
    req = summary.requests
    say(f"  requests: {req['cached']} from cache, {req['computed']} computed, {req['model_calls']} model calls")
    say(f"[bold]report:[/] {cfg.out / 'report.html'}")


@app.command("finetune")
def finetune_cmd(
    model: Annotated[str, typer.Option(help="local model dir / .gguf / smollm2 (nothing is downloaded)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="the fine-tuned model directory (audit reads it)")],
    data: Annotated[list[Path] | None, typer.Option(help="Parquet/JSONL with `text` or `prompt`+`completion`")]
    = None,
    benchmark: Annotated[str | None, typer.Option(
        help="train on audit items in their own prompt format instead: comma-separated mmlu, gsm8k, gpqa")] = None,
    like: Annotated[int, typer.Option(
        help="--benchmark: instead of the audit's items, N per task that look like them and are not audited at "
             "--limit (MMLU: other questions of the audited subjects; GSM8K: GSM-Symbolic instances of templates "
             "whose items are not audited): teaching to the test")] = 0,
    limit: Annotated[str, typer.Option(help="--benchmark: original items per task (the audit's sample, as its "
                                            "--limit: `100`, `200,gsm8k=50`)")] = "100",
    formulation: Annotated[str, typer.Option(help="--benchmark MMLU/GPQA: letter | cloze | both")] = "letter",
    method: Annotated[str, typer.Option(help="lora | full")] = "lora",
    epochs: Annotated[int, typer.Option(help="passes over the data")] = 1,
    lr: Annotated[float, typer.Option(help="peak learning rate")] = 2e-4,
    batch_size: Annotated[int, typer.Option(help="sequences per step")] = 8,
    max_len: Annotated[int, typer.Option(help="tokens per sequence (the prompt's start is cut)")] = 384,
    seed: Annotated[int, typer.Option(help="data order and LoRA init")] = 0,
    threads: Annotated[int, typer.Option(help="torch threads (0 = torch's default)")] = 0,
):
    """Fine-tune a real model (LoRA or full) on texts or benchmark items; resumable; exports a model dir."""
    import torch

    from cleanroom.finetune import FinetuneConfig, finetune, load_records

    if (data is None) == (benchmark is None):
        raise CleanroomError("pass exactly one of --data FILE... or --benchmark TASKS")
    if data is not None:
        records = load_records(data)
    else:
        from cleanroom.audit.items import TaskOptions
        from cleanroom.audit.render import training_records
        from cleanroom.audit.run import TASKS

        names = [t.strip() for t in benchmark.split(",") if t.strip()]
        for name in names:
            if name not in TASKS:
                raise CleanroomError(f"unknown task `{name}` (choose from {', '.join(TASKS)})")
        n, task_limits = parse_limit(limit, None)
        opts = TaskOptions(limit=n, seed=seed, formulations=parse_formulation(formulation),
                           task_limits=task_limits)
        if like:
            from cleanroom.audit.render import benchmark_like_records

            records = benchmark_like_records(names, opts, like)
        else:
            records = [r for name in names for r in training_records(
                [it for it in TASKS[name]().items(opts.for_task(name)) if it.family == "original"])]
    try:
        cfg = FinetuneConfig(model=model, method=method, epochs=epochs, lr=lr, batch_size=batch_size,
                             max_len=max_len, seed=seed, threads=threads,
                             device="cuda" if torch.cuda.is_available() else "cpu")
    except ValueError as e:
        raise CleanroomError(f"bad fine-tuning option: {str(e).splitlines()[-1].strip()}") from None
    from cleanroom.ui import progress as bar_ctx

    steps = -(-len(records) // batch_size) * epochs
    with bar_ctx("finetune", total=steps) as bar:
        info = finetune(cfg, records, out, progress=lambda step, total, loss: bar.advance(1, info=f"loss {loss:.3f}"))
    say(f"  {info['records']} records x {cfg.epochs} epochs, final loss {info['losses'][-1]:.3f}")
    say(f"[bold]model:[/] {out}  (cleanroom audit --model {out})")


@app.command("curate")
def curate_cmd(
    preset: PresetOpt = None, out: OutOpt = Path("runs/default"), config: ConfigOpt = None, set_: SetOpt = None,
    force: ForceOpt = False,
    input_: Annotated[Path | None, typer.Option(
        "--input", "-i", help="standalone: any Parquet corpus (file or directory) with a `text` column")] = None,
    output: Annotated[Path | None, typer.Option(
        "--output", help="standalone: where kept rows go (a .parquet file, or a directory of shards)")] = None,
    eval_items: Annotated[Path | None, typer.Option(
        "--eval-items", help="standalone: Parquet of items (`prompt` + `target`, or `text`) to decontaminate against")
    ] = None,
    executor: ExecutorOpt = None, ray_address: RayAddressOpt = None,
):
    """Dedup, decontaminate, quality- and safety-filter every recipe, with lineage.

    With --input/--output, run the configured steps on any Parquet corpus instead of a run's recipes.
    """
    set_ = _runtime_sets(set_, executor, ray_address)
    if input_ is None:
        if output is not None or eval_items is not None:
            raise CleanroomError("--output and --eval-items go with --input (standalone mode)")
        _run_stages(["curate"], preset, out, config, set_, force)
        return
    if output is None:
        raise CleanroomError("--input needs --output (where the kept documents go)")
    from cleanroom.curate.stage import curate_parquet

    curate_parquet(load_config(preset or "default", config, set_), input_, output, eval_items)


_stage_command("tokenize", "Train the run's BPE tokenizer and tokenize every recipe.")
_stage_command("train", "Train one model per recipe and export it to Hugging Face format.", per_recipe=True)
_stage_command("safeguard", "Apply post-hoc safeguards (unlearning, refusal) to a trained model.", per_recipe=True)
_stage_command("eval", "Score every model on every task (bench, twin, format_shift, longtail, restricted).",
               per_recipe=True)
_stage_command("tamper", "Fine-tuning attacks on restricted-domain text; held-out accuracy vs steps.",
               per_recipe=True)


@app.command("run")
def run_cmd(preset: PresetOpt = None, out: OutOpt = Path("runs/default"), config: ConfigOpt = None,
            set_: SetOpt = None, force: ForceOpt = False, executor: ExecutorOpt = None,
            ray_address: RayAddressOpt = None,
            dry_run: Annotated[bool, typer.Option(
                "--dry-run", help="check memory, shapes, FLOPs and time of training on a GPU; train nothing")] = False,
            gpu_memory: Annotated[str | None, typer.Option(help="dry run: memory of one GPU, e.g. 80GB")] = None,
            gpus: Annotated[int, typer.Option(help="dry run: GPUs (torchrun --nproc_per_node)")] = 1,
            mfu: Annotated[float, typer.Option(help="dry run: assumed model-FLOPs utilisation")] = 0.35,
            peak_tflops: Annotated[float | None, typer.Option(
                help="dry run: the GPU's dense peak (default H100 SXM: 989 bf16, 67 fp32)")] = None):
    """Run the whole experiment: world, generate, curate, tokenize, train, safeguard, eval, tamper, report."""
    from cleanroom.stages import ORDER

    set_ = _runtime_sets(set_, executor, ray_address)
    if dry_run:
        dry_run_report(resolve_config(preset, out, config, set_), gpu_memory, gpus, mfu, peak_tflops)
        return
    pipe = _run_stages(ORDER, preset, out, config, set_, force, overall=True)
    if pipe is None:
        return
    if pipe.missing:
        say(f"[yellow]not built yet:[/] {', '.join(pipe.missing)} — the run covered the stages that exist.")
    print_stage_usage(pipe)
    if (out / "summary.json").exists():
        from cleanroom.report.summary import Summary

        summary = Summary.model_validate_json((out / "summary.json").read_text())
        say("[bold]verdicts[/] (95% CIs over items and replicate models):")
        print_verdicts(summary)
        say(f"[bold]report:[/] {out / 'report.html'}")
    else:
        say(f"[bold]run directory:[/] {out}")


@app.command("sweep")
def sweep_cmd(seeds: Annotated[list[int] | None, typer.Option("--seeds", help="seeds (default: --seeds 0 1 2)")] = None,
              # an option takes one value, so in `--seeds 0 1 2` the 1 and 2 arrive here
              more_seeds: Annotated[list[int] | None, typer.Argument(hidden=True, metavar="SEED")] = None,
              preset: PresetOpt = None, out: Annotated[Path, typer.Option("--out", "-o", help="sweep directory")]
              = Path("runs/sweep"), set_: SetOpt = None,
              no_run: Annotated[bool, typer.Option("--no-run", help="pool finished runs only; run nothing")] = False,
              start_from: Annotated[Path | None, typer.Option(
                  help="a sweep whose finished seed-<s> runs new runs start from a copy of (e.g. for --preset "
                       "validate: the default sweep), so only what they add is computed")] = None):
    """Run or reuse one run per seed (OUT/seed-<s>), pool each claim over the seeds, and write OUT/summary.json,
    report.md and report.html with the controls' record over every run."""
    from cleanroom.report.sweep import print_sweep, sweep
    from cleanroom.stages import ORDER

    def run(run_dir: Path, sets: list[str]) -> None:
        _run_stages(ORDER, preset, run_dir, None, sets, False, overall=True)

    result = sweep(out, (seeds or [0, 1, 2]) + (more_seeds or []), None if no_run else run, set_ or [], start_from)
    print_sweep(result, out)


def print_stage_usage(pipe) -> None:
    """Per stage: wall time and the share of the cores it kept busy (an idle core shows here)."""
    from rich.table import Table

    from cleanroom.report.summary import stage_usage

    usage = stage_usage(pipe.store, pipe.cfg)
    if not usage:
        return
    ran = {k.partition("/")[0] for k in pipe.ran}
    cores = max(u.cores for u in usage.values()) or None
    table = Table(title=f"stages: wall time and core share{f' ({cores} cores)' if cores else ''}")
    for col in ("stage", "seconds", "CPU seconds", "core share", ""):
        table.add_column(col, justify="left" if col in ("stage", "") else "right")
    for name, u in usage.items():
        table.add_row(name, f"{u.seconds:.1f}", "–" if u.cpu_seconds is None else f"{u.cpu_seconds:.1f}",
                      "–" if u.core_share is None else f"{u.core_share:.0%}", "" if name in ran else "earlier run")
    total = sum(u.seconds for u in usage.values())
    table.add_row("total", f"{total:.1f}", "", "", "")
    console.print(table)


def dry_run_report(cfg, gpu_memory: str | None, gpus: int, mfu: float, peak_tflops: float | None) -> None:
    """Print the training plan (`train/plan.py`); a one-line error if it cannot run or does not fit."""
    from rich.table import Table

    from cleanroom.train.plan import describe, parse_memory, plan, refuse_if_unfit

    p = plan(cfg, gpus, parse_memory(gpu_memory) if gpu_memory else None, mfu, peak_tflops)
    table = Table(title=f"dry run: preset {cfg.name}, training on {gpus} GPU(s); nothing is trained",
                  show_header=False)
    for k, v in describe(cfg, p):
        table.add_row(k, v)
    console.print(table)
    refuse_if_unfit(p)


@app.command("report")
def report_cmd(run_dir: Annotated[Path, typer.Argument(help="a finished run directory")]):
    """Regenerate summary.json, report.md and report.html from stored results (no recomputation)."""
    from cleanroom.report.stage import run_report
    from cleanroom.report.summary import Summary
    from cleanroom.store import RunStore

    if not (run_dir / "config.toml").exists():
        raise CleanroomError(f"{run_dir} is not a cleanroom run directory (no config.toml)")
    store = RunStore(run_dir)
    t0 = time.perf_counter()
    result = run_report(saved_config(run_dir / "config.toml"), store)
    if (old := store.manifest("report")) is not None:
        # same stage and inputs, rewritten files: record them, or the next `cleanroom run` would
        # find checksums that no longer match and call the run corrupted
        store.finish("report", old.fingerprint, old.inputs, result.outputs, result.stats,
                     time.perf_counter() - t0)
    summary = Summary.model_validate_json(store.path("summary.json").read_text())
    print_verdicts(summary)
    say(f"[bold]report:[/] {run_dir / 'report.html'}")


def print_verdicts(summary) -> None:
    """One line per claim (verdict, effect and CI), then one per control of the instrument."""
    style = {"supported": "green", "not supported": "red", "inconclusive": "yellow"}
    for key, c in summary.claims.items():
        numbers = ("no data" if c.effect is None else f"effect {c.effect:+.3f}, no interval" if c.ci_low is None
                   or c.ci_high is None else f"effect {c.effect:+.3f}, 95% CI [{c.ci_low:+.3f}, {c.ci_high:+.3f}]")
        say(f"  [bold]{key}[/] {c.claim}: [{style[c.verdict]}]{c.verdict}[/] ({numbers})")
    if summary.worldless:
        say(f"  [dim]no verdict involves {', '.join(summary.worldless)} (no world behind the text; the report says "
            f"what it measured for them)[/]")
    if summary.controls:
        say("[bold]controls[/] (does the instrument work?):")
    for name, c in summary.controls.all().items():
        state = ("[green]passed[/]" if c.passed else "[red]FAILED[/]") if c.passed is not None else "[dim]experiment[/]"
        say(f"  [bold]{name}[/]: {state} — {c.detail}")


@config_app.command("show")
def config_show(preset: PresetOpt = None, config: ConfigOpt = None, set_: SetOpt = None,
                out: Annotated[Path | None, typer.Option("--out", "-o", help="show a run's saved config")] = None):
    """Print the resolved configuration as TOML."""
    sys.stdout.write(resolve_config(preset, out, config, set_).to_toml())


def _terminated(signum: int, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM stops a command the way Ctrl-C does: finished work kept, exit code 130


def main() -> None:
    signal.signal(signal.SIGTERM, _terminated)
    app()


if __name__ == "__main__":
    main()
