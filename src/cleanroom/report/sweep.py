"""`cleanroom sweep`: one run per seed, each claim pooled over the seeds, and the instrument's record over them.

A run's interval carries its items and its replicate models; pooling over seeds (`stats.pool_runs`: a
random-effects meta-analysis, Student-t with k - 1 degrees of freedom) also carries what changes with the
seed: the world, the corpora, the init and data order. With three seeds t = 4.30, so a pooled verdict is
"supported" only for an effect that is large against its seed-to-seed spread.

A sweep directory holds `seed-<s>/` (a run directory each, run by `cleanroom run`'s code), `summary.json`
(`SweepSummary`), `report.md` and `report.html`.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

from pydantic import Field

from cleanroom.errors import CleanroomError
from cleanroom.report.render import Section, _signed, html_page, markdown
from cleanroom.report.summary import Claim, Comparison, Control, Num, Strict, Summary, Verdict
from cleanroom.stats import pool_runs, verdict
from cleanroom.store import replace_dir, write_text
from cleanroom.ui import say

RunFn = Callable[[Path, list[str]], None]  # (run directory, --set overrides) -> the run, finished


class Pooled(Strict):
    """Estimates of one statistic pooled over seeds (`stats.pool_runs`), with the lab's verdict; `seeds`
    are those that had an effect (fewer than two: no interval, inconclusive)."""

    label: str
    verdict: Verdict
    effect: Num
    ci_low: Num
    ci_high: Num
    seeds: list[int]


class NullRecord(Strict):
    """One recipe's A/A test in one run: which of the claims' statistics it decided (each a false positive)."""

    models: list[str]
    decided: list[str]
    total: int


class Spread(Strict):
    """A claim's statistic in one run: its between-model SD (pooled over every recipe with replicates) beside
    the item SE of the claim's contrast, and the SD each recipe's A/A test was judged against (the other
    recipes' alone)."""

    replicates: int | None
    between_model_sd: Num
    item_se: Num
    leave_one_out: dict[str, Num] = Field(default_factory=dict)


class SeedRun(Strict):
    """One seed's run as the sweep reads it from its `summary.json`."""

    seed: int
    run: str
    claims: dict[str, Claim]
    null: dict[str, NullRecord]
    leaky: Control | None
    leaky_detected: bool | None
    diverse: Control | None
    spread: dict[str, Spread]
    minutes: float


class SweepSummary(Strict):
    """`DIR/summary.json` of a sweep: the claims pooled over seeds, every seed's run, and the controls' record
    over all of them (A/A statistics decided of those tested; runs whose leaky control was detected)."""

    preset: str
    seeds: list[int]
    claims: dict[str, Pooled]
    runs: list[SeedRun]
    null_pooled: dict[str, dict[str, Pooled]]
    null_decided: int
    null_total: int
    leaky_detected: int
    leaky_runs: int


# ------------------------------------------------------------------------------------------ running


def run_dir(out: Path, seed: int) -> Path:
    return out / f"seed-{seed}"


def sweep(out: Path, seeds: Sequence[int], run: RunFn | None, sets: Sequence[str] = (),
          start_from: Path | None = None) -> SweepSummary:
    """Run or reuse `out/seed-<s>` for every seed (`run` None: finished runs only), then pool and write
    `out/summary.json`, `report.md` and `report.html`. A new run starts from a copy of `start_from/seed-<s>`
    when that is a finished run (a `validate` sweep on top of a default one trains only what it adds)."""
    seeds = list(seeds)
    if not seeds or len(set(seeds)) != len(seeds):
        raise CleanroomError(f"--seeds needs distinct seeds, got {' '.join(map(str, seeds)) or 'none'}")
    if any(s.replace(" ", "").startswith("seed=") for s in sets):
        raise CleanroomError("--set seed=... conflicts with --seeds: each run's seed comes from --seeds")
    if run is None:
        missing = [run_dir(out, s) for s in seeds if not (run_dir(out, s) / "summary.json").exists()]
        if missing:
            raise CleanroomError(f"--no-run: no finished run at {', '.join(map(str, missing))} (no summary.json); "
                                 f"run the sweep without --no-run first")
    else:
        for seed in seeds:
            target = run_dir(out, seed)
            if start_from is not None and not target.exists():
                _copy_finished(run_dir(start_from, seed), target)
            say(f"[bold]seed {seed}[/]: {target}")
            run(target, [*sets, f"seed={seed}"])
    result = build_sweep(seeds, [_load(run_dir(out, s), s) for s in seeds])
    write_sweep(out, result)
    return result


def _copy_finished(source: Path, target: Path) -> None:
    """`source` copied to `target` if it is a finished run (copied aside, then renamed into place)."""
    if not (source / "summary.json").exists():
        say(f"[yellow]no finished run at {source}:[/] {target} starts empty")
        return
    tmp = target.with_name(f".{target.name}.copy")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp, symlinks=True)
    replace_dir(tmp, target)
    say(f"{target} starts from a copy of {source}")


def _load(d: Path, seed: int) -> Summary:
    path = d / "summary.json"
    if not path.exists():
        raise CleanroomError(f"the run at {d} finished without a summary.json (see its stages above)")
    s = Summary.model_validate_json(path.read_text())
    if s.seed != seed:
        raise CleanroomError(f"{d} is a run of seed {s.seed}, not {seed}: a sweep keeps seed s in seed-<s>")
    return s


# ------------------------------------------------------------------------------------------ pooling


def pool(label: str, estimates: Sequence[tuple[int, Claim | Comparison]]) -> Pooled:
    """The seeds' estimates (seed, claim or comparison) pooled by `stats.pool_runs`, with the lab's verdict;
    seeds without an effect are left out."""
    nan = float("nan")
    kept = [(seed, e) for seed, e in estimates if e.effect is not None]
    mean, lo, hi = pool_runs([e.effect for _, e in kept], [nan if e.ci_low is None else e.ci_low for _, e in kept],
                             [nan if e.ci_high is None else e.ci_high for _, e in kept])
    return Pooled(label=label, verdict=verdict(lo, hi), effect=mean, ci_low=lo, ci_high=hi,
                  seeds=[seed for seed, _ in kept])


def seed_run(seed: int, s: Summary) -> SeedRun:
    """What the sweep keeps of one run: its claims, its controls' record and each statistic's spread."""
    null = {r: NullRecord(models=c.recipes, decided=[x.statistic for x in c.comparisons if x.verdict != "inconclusive"],
                          total=len(c.comparisons)) for r, c in s.controls.null.items()}
    spread = {}
    for key, claim in s.claims.items():
        loo = {r: x.between_model_sd for r, c in s.controls.null.items() for x in c.comparisons
               if x.statistic == f"{key} statistic"}
        spread[key] = Spread(replicates=claim.replicates, between_model_sd=claim.between_model_sd,
                             item_se=claim.item_se, leave_one_out=loo)
    leaky = s.controls.leaky
    return SeedRun(seed=seed, run=f"seed-{seed}", claims=s.claims, null=null, leaky=leaky,
                   leaky_detected=leaky.comparisons[0].verdict == "supported" if leaky and leaky.comparisons else None,
                   diverse=s.controls.diverse, spread=spread, minutes=round(sum(s.timings.values()) / 60, 2))


def build_sweep(seeds: list[int], summaries: list[Summary]) -> SweepSummary:
    presets = {s.preset for s in summaries}
    if len(presets) > 1:
        which = ", ".join(f"seed {x}: {s.preset}" for x, s in zip(seeds, summaries, strict=True))
        raise CleanroomError(f"the runs mix presets ({which}): a sweep pools runs of one preset")
    runs = [seed_run(seed, s) for seed, s in zip(seeds, summaries, strict=True)]
    keys = list(dict.fromkeys(k for r in runs for k in r.claims))
    claims = {k: pool(next(r.claims[k].claim for r in runs if k in r.claims),
                      [(r.seed, r.claims[k]) for r in runs if k in r.claims]) for k in keys}
    found: dict[tuple[str, str], list[tuple[int, Comparison]]] = {}
    for seed, s in zip(seeds, summaries, strict=True):
        for recipe, c in s.controls.null.items():
            for x in c.comparisons:
                found.setdefault((recipe, x.statistic), []).append((seed, x))
    null_pooled: dict[str, dict[str, Pooled]] = {}
    for (recipe, stat), estimates in found.items():
        null_pooled.setdefault(recipe, {})[stat] = pool(stat, estimates)
    return SweepSummary(
        preset=summaries[0].preset, seeds=seeds, claims=claims, runs=runs, null_pooled=null_pooled,
        null_decided=sum(len(n.decided) for r in runs for n in r.null.values()),
        null_total=sum(n.total for r in runs for n in r.null.values()),
        leaky_detected=sum(bool(r.leaky_detected) for r in runs),
        leaky_runs=sum(r.leaky_detected is not None for r in runs))


# ------------------------------------------------------------------------------------------ the report


def _cell(e: Claim | Comparison | Pooled) -> str:
    if e.effect is None:
        return f"{e.verdict} (no data)"
    if e.ci_low is None or e.ci_high is None:
        return f"{e.verdict} ({e.effect:+.3f}, no interval)"
    return f"{e.verdict} ({_signed(e.effect, e.ci_low, e.ci_high)})"


def _sd(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f}"


def title(s: SweepSummary) -> str:
    return f"cleanroom seed sweep — preset {s.preset}, seeds {', '.join(map(str, s.seeds))}"


def build_sections(s: SweepSummary) -> list[Section]:
    names = {k: p.label for k, p in s.claims.items()}
    verdicts = Section("Verdicts, seeds pooled")
    for k, p in s.claims.items():
        per_seed = ", ".join(r.claims[k].verdict for r in s.runs if k in r.claims)
        verdicts.paragraphs.append(f"**{k} — {p.label}: {p.verdict.upper()}.** Pooled over seeds "
                                   f"{', '.join(map(str, p.seeds)) or 'none'}: {_cell(p)}; per seed: {per_seed}.")
    verdicts.paragraphs.append(
        "Each run's interval carries its items and its replicate models; the pooled one also carries what changes "
        "with the seed (the world, the corpora, the init and data order): a random-effects meta-analysis of the "
        "seeds' effects and intervals (DerSimonian-Laird between-seed variance, modified Knapp-Hartung, Student-t "
        "with seeds - 1 degrees of freedom). *Supported*: the interval lies above zero; *not supported*: below; "
        "*inconclusive*: it contains zero.")
    rows = [[str(r.seed), r.run] + [_cell(r.claims[k]) if k in r.claims else "–" for k in s.claims]
            + [f"{r.minutes:.1f}"] for r in s.runs]
    rows.append(["seeds pooled", ""] + [_cell(p) for p in s.claims.values()] + [""])
    verdicts.tables.append((["seed", "run"] + [f"{k} {n}" for k, n in names.items()] + ["stage minutes"], rows))

    controls = Section("Does the instrument work?", [
        f"**A/A tests** (every claim's statistic between replicates of one recipe, which differ only in their "
        f"seed; a decided statistic is a false positive, nominally 5% of them): {s.null_decided} of {s.null_total} "
        f"decided over {len(s.runs)} runs (first table; the second pools each over the seeds, as the claims are: "
        f"each must be inconclusive).",
        f"**leaky** (textbook plus the benchmark items with their answers; its own bench - twin drop must be "
        f"detected): detected in {s.leaky_detected} of {s.leaky_runs} runs."])
    recipes = list(dict.fromkeys(r for run in s.runs for r in run.null))
    rows = []
    for run in s.runs:
        row = [str(run.seed)]
        for r in recipes:
            n = run.null.get(r)
            row.append("–" if n is None else f"{len(n.decided)} of {n.total}"
                       + (f": {', '.join(n.decided)}" if n.decided else ""))
        leaky = run.leaky.comparisons if run.leaky else []
        row.append("–" if not leaky else ("detected" if run.leaky_detected else "NOT detected")
                   + f" ({_signed(leaky[0].effect, leaky[0].ci_low, leaky[0].ci_high)})")
        row.append(_cell(leaky[1]) if len(leaky) > 1 else "–")
        diverse = run.diverse.comparisons if run.diverse else []
        row.append(_cell(diverse[1]) if len(diverse) > 1 else "–")
        rows.append(row)
    controls.tables.append((["seed"] + [f"A/A {r}: decided" for r in recipes]
                            + ["leaky: its bench - twin drop", "leaky - textbook: contamination's share",
                               "diverse: twin gap textbook - diverse"], rows))
    stats = list(dict.fromkeys(stat for pooled in s.null_pooled.values() for stat in pooled))
    controls.tables.append((["A/A recipe"] + stats, [[r] + [_cell(pooled[x]) if x in pooled else "–" for x in stats]
                                                     for r, pooled in s.null_pooled.items()]))

    spread = Section("Between-model spread", [
        "How much models that differ only in their seed differ in each claim's statistic: the between-model SD "
        "(pooled over every recipe with replicates) beside the item SE of the claim's contrast, and the SD each "
        "recipe's A/A test was judged against (the other recipes' alone; lowest and highest). An SD that is large "
        "against the item SE is variance only replicate models measure. Over seeds: the root mean square."])
    rows = []
    for k in s.claims:
        sds, ses = [], []
        for run in s.runs:
            sp = run.spread.get(k)
            if sp is None:
                continue
            loo = [v for v in sp.leave_one_out.values() if v is not None]
            rows.append([k, str(run.seed), "–" if sp.replicates is None else str(sp.replicates),
                         _sd(sp.between_model_sd), _sd(sp.item_se),
                         f"{min(loo):.3f} – {max(loo):.3f}" if loo else "–"])
            sds += [sp.between_model_sd] if sp.between_model_sd is not None else []
            ses += [sp.item_se] if sp.item_se is not None else []
        rows.append([k, "over seeds", "", _sd(_rms(sds)), _sd(_rms(ses)), ""])
    spread.tables.append((["statistic", "seed", "models per recipe", "between-model SD", "item SE",
                           "A/A tests: SD without their recipe"], rows))
    return [verdicts, controls, spread]


def _rms(xs: list[float]) -> float | None:
    return (sum(x * x for x in xs) / len(xs)) ** 0.5 if xs else None


def write_sweep(out: Path, s: SweepSummary) -> None:
    """`out/summary.json`, `report.md` and `report.html` (the run report's renderer, no figures)."""
    sections = build_sections(s)
    write_text(out / "summary.json", s.model_dump_json(indent=2) + "\n")
    write_text(out / "report.md", markdown(title(s), sections))
    write_text(out / "report.html", html_page(title(s), sections, {f"**{k} — {p.label}": p.verdict
                                                                    for k, p in s.claims.items()}))


def print_sweep(s: SweepSummary, out: Path) -> None:
    """The pooled verdicts, one line per claim with its seeds' verdicts, then the controls' record."""
    style = {"supported": "green", "not supported": "red", "inconclusive": "yellow"}
    say(f"[bold]verdicts[/], seeds {' '.join(map(str, s.seeds))} pooled (random effects, t over seeds):")
    for k, p in s.claims.items():
        numbers = ("no data" if p.effect is None else f"effect {p.effect:+.3f}" if p.ci_low is None
                   else f"effect {p.effect:+.3f}, 95% CI [{p.ci_low:+.3f}, {p.ci_high:+.3f}]")
        per_seed = ", ".join(r.claims[k].verdict for r in s.runs if k in r.claims)
        say(f"  [bold]{k}[/] {p.label}: [{style[p.verdict]}]{p.verdict}[/] ({numbers}); per seed: {per_seed}")
    decided = "; ".join(f"seed {r.seed} {recipe}: {', '.join(n.decided)}"
                        for r in s.runs for recipe, n in r.null.items() if n.decided)
    say(f"[bold]controls[/]: A/A tests decided {s.null_decided} of {s.null_total} statistics"
        + (f" ({decided})" if decided else "")
        + (f"; leaky detected in {s.leaky_detected} of {s.leaky_runs} runs" if s.leaky_runs else ""))
    say(f"[bold]report:[/] {out / 'report.html'}")
