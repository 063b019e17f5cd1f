"""Near-duplicate removal throughput: our `NearDedup` step (rensa MinHash + numpy banding + Jaccard
check) versus datasketch `MinHashLSH`, on the same corpus, the same word shingles, the same number of
permutations and the same threshold, in the same process. Prints JSON with `speedup`.

Both sides start from the same pre-split word lists (tokenisation is not timed), build their own
shingles and signatures, and make the same keep-the-first decision: a document is removed when the
index of documents kept so far holds a near-duplicate of it. Recall is measured on planted
near-duplicates (a few word edits of an earlier document), false removals on everything else.

    .venv/bin/python bench/dedup_throughput.py            # 10k documents, best of 3
    .venv/bin/python bench/dedup_throughput.py --quick    # 1k documents, one timing (CI)
"""

from __future__ import annotations

import importlib.metadata
import platform
import time

import numpy as np
from benchlib import emit, parser
from synthetic_corpus import planted_corpus

from cleanroom.curate.base import Document, require
from cleanroom.curate.dedup import NearDedup


def ours(docs: list[Document], shingle: int, num_perm: int, bands: int, threshold: float) -> set[str]:
    step = NearDedup(shingle_size=shingle, num_perm=num_perm, bands=bands, threshold=threshold, seed=1)
    for _ in step.run(docs):
        pass
    return {r.doc_id for r in step.removed}


def datasketch_lsh(docs: list[Document], shingle: int, num_perm: int, threshold: float) -> set[str]:
    datasketch = require("datasketch")
    sets = []
    for d in docs:
        w = d.words
        k = min(shingle, len(w))
        sets.append([" ".join(w[i:i + k]).encode() for i in range(len(w) - k + 1)] if w else [])
    hashes = datasketch.MinHash.bulk(sets, num_perm=num_perm)  # datasketch's fastest (batched) path
    lsh = datasketch.MinHashLSH(threshold=threshold, num_perm=num_perm)
    removed = set()
    for d, m in zip(docs, hashes, strict=True):
        if lsh.query(m):
            removed.add(d.id)
        else:
            lsh.insert(d.id, m)
    return removed


def timed(fn, repeats: int) -> tuple[float, set[str]]:
    best, out = float("inf"), set()
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main(argv: list[str] | None = None) -> dict:
    ap = parser(__doc__)
    ap.add_argument("--docs", type=int, default=10_000, help="corpus size (10%% are planted near-duplicates)")
    ap.add_argument("--shingle", type=int, default=5)
    ap.add_argument("--num-perm", type=int, default=128)
    ap.add_argument("--bands", type=int, default=16)
    ap.add_argument("--threshold", type=float, default=0.8)
    ap.add_argument("--max-edits", type=int, default=2, help="word edits per planted near-duplicate (1..N)")
    ap.add_argument("--repeats", type=int, default=3, help="best of N timings per side")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.quick:
        args.docs, args.repeats = 1000, 1

    n_near = args.docs // 10
    corpus = planted_corpus(n_base=args.docs - n_near, n_exact=0, n_near=n_near, seed=args.seed,
                            min_words=100, max_words=250, max_edits=args.max_edits)
    for d in corpus.docs:  # tokenise once, outside the timings, for both sides
        _ = d.words
    n_clean = len(corpus.docs) - len(corpus.near)

    def fresh() -> list[Document]:  # a new Document list per run (steps keep no state on documents)
        return [Document(id=d.id, text=d.text, _words=d.words, _tokens=d.tokens) for d in corpus.docs]

    results = {}
    for name, fn in [
        ("ours", lambda: ours(fresh(), args.shingle, args.num_perm, args.bands, args.threshold)),
        ("datasketch", lambda: datasketch_lsh(fresh(), args.shingle, args.num_perm, args.threshold)),
    ]:
        seconds, removed = timed(fn, args.repeats)
        results[name] = {
            "seconds": round(seconds, 4),
            "docs_per_s": round(len(corpus.docs) / seconds, 1),
            "recall": round(len(removed & corpus.near) / len(corpus.near), 4),
            "false_removals": len(removed - corpus.near),
            "false_removal_rate": round(len(removed - corpus.near) / n_clean, 5),
        }
    speedup = results["datasketch"]["seconds"] / results["ours"]["seconds"]
    import datasketch

    ds = datasketch.MinHashLSH(threshold=args.threshold, num_perm=args.num_perm)
    out = {
        "benchmark": "near-duplicate removal (keep first), same corpus/shingles/permutations/threshold",
        "corpus": {"docs": len(corpus.docs), "planted_near_duplicates": len(corpus.near),
                   "words_per_doc": "100-250", "edits_per_near_duplicate": f"1-{args.max_edits}"},
        "params": {"shingle_words": args.shingle, "num_perm": args.num_perm, "threshold": args.threshold,
                   "ours_bands_x_rows": [args.bands, args.num_perm // args.bands],
                   "datasketch_bands_x_rows": [ds.b, ds.r]},
        "ours": results["ours"],
        "datasketch": results["datasketch"],
        "speedup": round(speedup, 2),
        "target": 3.0,
        "meets_target": bool(speedup >= 3.0 and results["ours"]["recall"] >= results["datasketch"]["recall"]),
        "environment": {"python": platform.python_version(), "rensa": importlib.metadata.version("rensa"),
                        "datasketch": datasketch.__version__, "numpy": np.__version__,
                        "repeats": args.repeats, "timing": "best of repeats, wall clock, same process"},
    }
    return emit(out)


if __name__ == "__main__":
    main()
