"""Every architecture on one synthetic cohort (the default run's): held-out CV AUROC beside the oracle
AUROC, the test AUROC, the attack's success and the shares flipped by ≤ 1, 2, 3 edits and entry errors.

synth and prepare run once (the default 4,000 admissions); then, per architecture, the whole chain
(`python -m pipeline run model.arch=ARCH`, tune-model within that architecture) in its own run directory
reading the same raw tables, so every model sees the same samples, split and targets' records.

    python benchmarks/architectures.py --out /tmp/bench-archs [--archs lstm gru …] [-- key=value …]

With `--robust none errors adversarial`, each architecture is trained in each robust mode too ([model]
robust, docs/methods.md §2.3), in run directories ARCH-MODE: the standard and the robust models side by side.
`--` ends the lists of archs and modes before the key=value settings. "train s" is the time of the stages
that train (tune-model, cv, train), from their markers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # analysis/ beside pipeline/
from analysis.compare_models import markdown, row  # noqa: E402
from pipeline.config import ARCHS, ROBUST  # noqa: E402
from pipeline.metrics import auroc  # noqa: E402


def pipeline(*args: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pipeline", *args], check=True)
    return time.perf_counter() - start


def training_seconds(run: Path) -> float:
    """tune-model, cv and train: the stages whose time robust training changes."""
    return sum(json.loads((run / ".stages" / f"{stage}.json").read_text())["seconds"]
               for stage in ("tune-model", "cv", "train"))


def oracle_auroc(run: Path, raw: Path) -> float:
    """The generator's true risk against the drawn labels, on the samples the CV folds held out."""
    truth = pd.read_csv(raw / "TRUE_RISK.csv.gz").set_index("HADM_ID")
    ds = xr.open_zarr(run / "dataset.zarr", consolidated=False)
    split = json.loads((run / "split.json").read_text())
    held = np.sort(np.concatenate([np.array(f) for f in split["fold"]]))
    risk = truth.loc[ds.hadm_id.values[held]]
    return auroc(risk["RISK"].to_numpy(), risk["HOSPITAL_EXPIRE_FLAG"].to_numpy())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("/tmp/bench-archs"))
    ap.add_argument("--archs", nargs="+", default=list(ARCHS), choices=ARCHS)
    ap.add_argument("--robust", nargs="+", default=["none"], choices=ROBUST, help="robust training modes")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("overrides", nargs="*", help="extra key=value settings for every run")
    args = ap.parse_args()

    common = ["--seed", str(args.seed), "--workers", str(args.workers)]
    source = args.out / "cohort"
    if not (source / "raw" / "TRUE_RISK.csv.gz").exists():
        pipeline("synth", "--run-dir", str(source), *common)
    rows, times = [], {}
    for arch, mode in ((a, m) for a in args.archs for m in args.robust):
        name = arch if args.robust == ["none"] else f"{arch}-{mode}"
        run = args.out / name
        times[name] = pipeline("run", "--run-dir", str(run), *common, f"prepare.mimic_dir={source / 'raw'}",
                               f"model.arch={arch}", f"model.robust={mode}", *args.overrides)
        rows.append({**row(run, 3), "oracle_auroc": oracle_auroc(run, source / "raw"), "seconds": times[name],
                     "train_seconds": training_seconds(run)})
    table = pd.DataFrame(rows)
    print(f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}, "
          f"seed {args.seed}, workers {args.workers}, overrides {args.overrides or 'none'}")
    print(markdown(table))
    print("| run | oracle AUROC (the folds' samples) | CV − oracle | train s | chain s |\n|---|---:|---:|---:|---:|")
    for r in table.itertuples():
        print(f"| {r.run} | {r.oracle_auroc:.3f} | {r.cv_auroc - r.oracle_auroc:+.3f} | {r.train_seconds:.0f} "
              f"| {r.seconds:.0f} |")
    table.to_csv(args.out / "architectures.csv", index=False)


if __name__ == "__main__":
    main()
