"""Benchmark of the prepare stage against the floor of just reading its input with pyarrow.

For each size (synthetic admissions) it generates MIMIC-format tables with `synth`, then measures in
separate child processes, side by side:
  (a) floor:   pyarrow streams every CSV.gz file that `prepare` reads (all columns, default types)
  (b) prepare: `python -m pipeline prepare` on the same folder — wall time and peak RSS
and prints a Markdown table (ratio b/a; targets: ≤ 1.5, peak RSS ≤ 4 GB and flat across sizes).

    python benchmarks/prepare.py --sizes 8000 16000 8000:0.83 --out /tmp/bench-prepare

A size is ADMISSIONS[:NOISE_FRACTION]: more admissions grow the cohort and the output, a larger
noise fraction grows CHARTEVENTS with other items while the cohort stays the same.
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

ROOT = Path(__file__).resolve().parent.parent
TABLES = ("PATIENTS", "ADMISSIONS", "ICUSTAYS", "LABEVENTS", "CHARTEVENTS", "D_ITEMS", "D_LABITEMS")

FLOOR = """
import sys, pyarrow.csv as pacsv
rows = 0
for path in sys.argv[1:]:
    for batch in pacsv.open_csv(path):  # pyarrow's defaults
        rows += batch.num_rows
print(rows)
"""


def run_measured(cmd: list[str], **kwargs) -> tuple[float, float, str]:
    """Run `cmd`; return wall seconds, peak RSS in GB (of that child alone) and its stdout."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, **kwargs)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}")
    return wall, usage.ru_maxrss / 1024 / 1024, out


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=["8000", "16000", "8000:0.83"])
    ap.add_argument("--out", type=Path, default=Path("/tmp/bench-prepare"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()

    rows = []
    for size in args.sizes:
        n, _, noise = size.partition(":")
        n, noise = int(n), float(noise or 0.65)
        run = args.out / f"adm-{n}-noise-{noise}"
        raw = run / "raw"
        if not (raw / "CHARTEVENTS.csv.gz").exists():
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "pipeline", "synth", "--run-dir", str(run), "--seed", str(args.seed),
                            f"synth.admissions={n}", f"synth.noise_fraction={noise}"], check=True,
                           stderr=subprocess.DEVNULL)
            print(f"synth {n} admissions: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        chart_rows = json.loads((raw / "synth.json").read_text())["rows"]["CHARTEVENTS"]
        files = [str(next(raw.glob(f"{t}.csv*"))) for t in TABLES]
        size_mb = sum(Path(f).stat().st_size for f in files) / 1e6
        floor_s, floor_gb, _ = run_measured([sys.executable, "-c", FLOOR, *files])
        prep_s, prep_gb, _ = run_measured([sys.executable, "-m", "pipeline", "prepare", "--run-dir", str(run),
                                           "--force", "--workers", str(args.workers)], cwd=ROOT)
        samples = int(json.loads(subprocess.run(
            [sys.executable, "-c", f"import xarray as xr; print(xr.open_zarr('{run}/dataset.zarr').sizes['sample'])"],
            capture_output=True, text=True, check=True).stdout))
        rows.append((n, noise, samples, chart_rows, size_mb, floor_s, prep_s, prep_s / floor_s, prep_gb, floor_gb))
        print(f"{n}: floor {floor_s:.1f} s, prepare {prep_s:.1f} s, ratio {prep_s / floor_s:.2f}, "
              f"peak RSS {prep_gb:.2f} GB", file=sys.stderr)

    print(f"\nMachine: {cpu_name()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"workers={args.workers}; {time.strftime('%Y-%m-%d')}\n")
    print("| admissions | noise | samples | CHARTEVENTS rows | CSV.gz MB | (a) pyarrow read s | (b) prepare s | "
          "b/a | prepare peak RSS GB | read peak RSS GB |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n, noise, samples, chart_rows, size_mb, floor_s, prep_s, ratio, prep_gb, floor_gb in rows:
        print(f"| {n:,} | {noise} | {samples:,} | {chart_rows:,} | {size_mb:,.0f} | {floor_s:.1f} | {prep_s:.1f} | "
              f"{ratio:.2f} | {prep_gb:.2f} | {floor_gb:.2f} |")


if __name__ == "__main__":
    main()
