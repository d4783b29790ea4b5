"""Greedy against beam search for the fewest entry errors that flip a prediction, on one model and one
target set: flips at k = 1, 2, 3 and records passed through the model per target (docs/methods.md §9).

    python benchmarks/entry_errors.py RUN_DIR [--targets 100] [--beams 1 4 8] [--device cpu]

Targets: the first N correctly classified samples of the run's test set (the stage's own choice,
`select_targets`); every error kind; at most 3 errors.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from pipeline.attack.core import Margins
from pipeline.attack.fewest_errors import fewest_errors
from pipeline.attack.targets import select_targets
from pipeline.config import ERROR_KINDS
from pipeline.data.record import feature_stats
from pipeline.infra.rundir import RunDir
from pipeline.model import load_model


def search(run: RunDir, n: int, beam: int, max_errors: int, device: torch.device) -> dict:
    targets = select_targets(run, "test").head(n)
    ds = run.dataset()
    stats, value, count = feature_stats(ds), ds["value"].values, ds["count"].values
    margins = Margins(load_model(run.path, device), 4096)
    started, ks = time.time(), []
    for index, y in zip(targets.dataset_index, targets.y, strict=True):
        found = fewest_errors(margins, value[index], count[index], int(y), stats, list(ERROR_KINDS), max_errors, beam)
        ks.append(len(found.errors) if found.flipped else 0)
    seconds = time.time() - started
    return {"beam": beam, "targets": len(ks), **{f"flipped_le_{k}": sum(0 < j <= k for j in ks)
                                                 for k in range(1, max_errors + 1)},
            "passes_per_target": margins.passes / len(ks), "seconds_per_target": seconds / len(ks)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--targets", type=int, default=100)
    ap.add_argument("--beams", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--max-errors", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = [search(RunDir(args.run_dir), args.targets, b, args.max_errors, torch.device(args.device))
            for b in args.beams]
    machine = f"{platform.node()} {platform.processor() or platform.machine()}, torch {torch.__version__}, " \
              f"{args.device}"
    print(f"# {args.run_dir}, {machine}")
    print("| beam | targets | flipped ≤ 1 | ≤ 2 | ≤ 3 | records per target | s per target |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['beam']} | {r['targets']} | {r['flipped_le_1']} | {r['flipped_le_2']} | "
              f"{r.get('flipped_le_3', '')} | {r['passes_per_target']:.0f} | {r['seconds_per_target']:.2f} |")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
