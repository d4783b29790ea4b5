"""How close cross-validation gets to the best possible AUROC on synthetic data.

synth (N admissions) → prepare → cv with the given model settings, then compares the CV mean
held-out AUROC with the generator's oracle AUROC (its true risk against the drawn labels), computed
on the same samples the folds held out (the cohort minus the test set) and on all admissions.

    python benchmarks/cv_accuracy.py --admissions 5000 --epochs 20 --out /tmp/bench-cv
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

from pipeline.metrics import auroc


def stage(*args: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pipeline", *args], check=True)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--admissions", type=int, default=5000)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("/tmp/bench-cv"))
    ap.add_argument("overrides", nargs="*", help="extra key=value settings, e.g. model.hidden=64")
    args = ap.parse_args()

    run = args.out
    common = ["--run-dir", str(run), "--seed", str(args.seed), "--workers", str(args.workers)]
    times = {"synth": stage("synth", *common, "--admissions", str(args.admissions)),
             "prepare": stage("prepare", *common),
             "cv": stage("cv", *common, f"cv.epochs={args.epochs}", *args.overrides)}

    truth = pd.read_csv(run / "raw" / "TRUE_RISK.csv.gz")
    ds = xr.open_zarr(run / "dataset.zarr", consolidated=False)
    split = json.loads((run / "split.json").read_text())
    held = np.sort(np.concatenate([np.array(f) for f in split["fold"]]))
    risk = truth.set_index("HADM_ID").loc[ds.hadm_id.values[held]]
    oracle_cohort = auroc(risk["RISK"].to_numpy(), risk["HOSPITAL_EXPIRE_FLAG"].to_numpy())
    oracle_all = json.loads((run / "raw" / "synth.json").read_text())["oracle_auroc"]
    summary = json.loads((run / "cv" / "summary.json").read_text())
    manifest = json.loads((run / "manifest.json").read_text())
    settings = manifest["stages"]["cv"]["config"]
    cv_auroc, cv_sd = summary["mean"]["auroc"], summary["sd"]["auroc"]

    print(f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}")
    print(f"admissions {args.admissions}, samples {ds.sizes['sample']} ({int(ds.y.sum())} positive), "
          f"{len(held)} in the folds; model {json.dumps(manifest['config']['model'])}; "
          f"folds {settings['cv']['folds']}, epochs {settings['cv']['epochs']}, workers {args.workers}")
    print("| CV mean held-out AUROC | oracle AUROC (same samples) | oracle AUROC (all admissions) | gap | "
          "best epoch | synth s | prepare s | cv s |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| {cv_auroc:.3f} ± {cv_sd:.3f} | {oracle_cohort:.3f} | {oracle_all:.3f} | {oracle_cohort - cv_auroc:.3f} | "
          f"{summary['best_epoch']} | {times['synth']:.0f} | {times['prepare']:.0f} | {times['cv']:.0f} |")


if __name__ == "__main__":
    main()
