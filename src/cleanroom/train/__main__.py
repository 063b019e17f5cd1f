"""`torchrun --nproc_per_node=N -m cleanroom.train --out DIR [--recipe R] [--preset P] [--set k=v]`.

Rank 0 brings the prerequisites (world, generate, curate, tokenize) up to date while the others
wait; then every rank runs the `train` stage for the chosen recipes in lockstep (DDP: gloo on CPU,
NCCL on CUDA).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch.distributed as dist

from cleanroom.config import resolve_config
from cleanroom.errors import CleanroomError
from cleanroom.malloc import tune_malloc
from cleanroom.pipeline import Pipeline
from cleanroom.store import RunStore
from cleanroom.train.trainer import dist_info, init_distributed
from cleanroom.ui import console


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="torchrun ... -m cleanroom.train", description=__doc__.split("\n\n")[1])
    p.add_argument("--out", type=Path, required=True, help="run directory")
    p.add_argument("--preset", default=None)
    p.add_argument("--recipe", action="append", default=None, help="only this recipe (repeatable)")
    p.add_argument("--set", dest="sets", action="append", default=None, help="override, e.g. train.steps=100")
    p.add_argument("--force", action="store_true", help="retrain even if up to date")
    args = p.parse_args(argv)
    try:
        cfg = resolve_config(args.preset, args.out, None, args.sets)
        tune_malloc(cfg.runtime.malloc)  # before the process group's threads allocate
        init_distributed()
        rank, _, _ = dist_info()
        console.quiet = rank != 0
        store = RunStore(args.out)
        if rank == 0:
            Pipeline(cfg, store, recipes=args.recipe).ensure("tokenize")
        if dist.is_initialized():
            dist.barrier()
        pipe = Pipeline(cfg, store, force={"train"} if args.force else set(), recipes=args.recipe)
        pipe.ensure("train")
    except CleanroomError as e:
        console.quiet = False
        console.print(f"[bold red]error:[/] {e}")
        raise SystemExit(e.exit_code) from None
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
