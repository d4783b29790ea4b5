"""Benchmark: prepare from a MEDS dataset against prepare from the CSV tables of the same cohort.

`synth` writes one synthetic cohort both ways (synth.meds = true: raw/*.csv.gz and raw/meds/, the MEDS
copy made by pipeline/data/meds_export.py). Then, in separate child processes and side by side, (a)
`prepare` from the CSV tables and (b) `prepare` from the MEDS root (prepare.source = meds), each into
its own run directory: wall time and peak RSS of that process alone, and the ratio b/a. Both must give
the same cohort (the sample counts are printed; tests/test_meds.py checks bit-for-bit equality on the
real demo).

    python benchmarks/prepare_meds.py --admissions 8000 16000
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prepare import ROOT, cpu_name, run_measured  # noqa: E402  (benchmarks/prepare.py)


def samples(run: Path) -> int:
    code = f"import xarray as xr; print(xr.open_zarr('{run}/dataset.zarr').sizes['sample'])"
    return int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--admissions", nargs="+", type=int, default=[8000])
    ap.add_argument("--out", type=Path, default=Path("/tmp/bench-prepare-meds"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()

    rows = []
    for n in args.admissions:
        base = args.out / f"adm-{n}"
        raw = base / "synth" / "raw"
        if not (raw / "meds").is_dir():
            synth_s, _, _ = run_measured([sys.executable, "-m", "pipeline", "synth", "--run-dir", str(base / "synth"),
                                          "--seed", str(args.seed), f"synth.admissions={n}", "synth.meds=true"],
                                         cwd=ROOT)
            print(f"synth {n} admissions, CSV and MEDS: {synth_s:.1f} s", file=sys.stderr)
        events = sum(json.loads((raw / "synth.json").read_text())["rows"][t] for t in ("CHARTEVENTS", "LABEVENTS"))
        csv_mb = sum(p.stat().st_size for p in raw.glob("*.csv.gz")) / 1e6
        meds_mb = sum(p.stat().st_size for p in (raw / "meds").rglob("*.parquet")) / 1e6
        common = ["--force", "--workers", str(args.workers), "--seed", str(args.seed)]
        csv_s, csv_gb, _ = run_measured([sys.executable, "-m", "pipeline", "prepare", "--run-dir", str(base / "csv"),
                                         "--mimic-dir", str(raw), *common], cwd=ROOT)
        meds_s, meds_gb, _ = run_measured([sys.executable, "-m", "pipeline", "prepare", "--run-dir",
                                           str(base / "meds"), "prepare.source=meds",
                                           f"prepare.meds_dir={raw / 'meds'}", *common], cwd=ROOT)
        rows.append((n, samples(base / "csv"), samples(base / "meds"), events, csv_mb, meds_mb, csv_s, meds_s,
                     csv_gb, meds_gb))
        print(f"{n}: CSV {csv_s:.1f} s {csv_gb:.2f} GB, MEDS {meds_s:.1f} s {meds_gb:.2f} GB", file=sys.stderr)

    print(f"\nMachine: {cpu_name()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"workers={args.workers}; {time.strftime('%Y-%m-%d')}\n")
    print("| admissions | samples CSV / MEDS | event rows | CSV.gz MB | MEDS Parquet MB | (a) CSV s | (b) MEDS s | b/a "
          "| (a) peak RSS GB | (b) peak RSS GB |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n, s_csv, s_meds, events, csv_mb, meds_mb, csv_s, meds_s, csv_gb, meds_gb in rows:
        print(f"| {n:,} | {s_csv:,} / {s_meds:,} | {events:,} | {csv_mb:,.0f} | {meds_mb:,.0f} | {csv_s:.1f} | "
              f"{meds_s:.1f} | {meds_s / csv_s:.2f} | {csv_gb:.2f} | {meds_gb:.2f} |")


if __name__ == "__main__":
    main()
