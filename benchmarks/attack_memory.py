"""The attack stage's peak memory: does it follow the batch, not the number of targets?

    python benchmarks/attack_memory.py RUN_DIR [--same-as STORE] [--interval 0.2] [-- KEY=VALUE ...]

Runs `python -m pipeline attack --run-dir RUN_DIR --force` (RUN_DIR a complete run up to tune-attack; its
attack.zarr is made again, so use a copy) and samples, every --interval seconds, the resident memory of
the process tree it starts (the driver and the local executor's worker processes, read from /proc). It
prints one row: the targets, the wall and CPU time (user + system, all its processes), the peak RSS of
the largest single process (the kernel's own maximum over the waited-for children, what `/usr/bin/time -v`
reports) and the peak of the tree's total RSS (sampled; a shared page counts in every process mapping
it). Arguments after `--` go to the command (e.g. `attack.batch_size=64`). --same-as: also compare the new
attack.zarr with another (e.g. the copied run's original) variable by variable, NaN-aware; exit 1 when
any differs. Linux only (/proc).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import xarray as xr

PAGE = os.sysconf("SC_PAGE_SIZE")


def tree_rss(root: int) -> dict[int, int]:
    """Bytes resident per process of the tree under `root` (itself included), from /proc."""
    parent, rss = {}, {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:  # ended between the listing and the read
            continue
        pid = int(entry.name)
        parent[pid], rss[pid] = int(fields[1]), int(fields[21]) * PAGE
    mine, frontier = {root}, [root]
    while frontier:
        frontier = [p for p, pp in parent.items() if pp in frontier and p not in mine]
        mine.update(frontier)
    return {p: rss[p] for p in mine if p in rss}


def measure(command: list[str], interval: float) -> dict:
    """Run `command`, sampling its tree; its exit status, wall time and peaks (bytes)."""
    peaks = {"tree": 0, "process": 0}
    start = time.perf_counter()
    proc = subprocess.Popen(command)
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            rss = tree_rss(proc.pid)
            peaks["tree"] = max(peaks["tree"], sum(rss.values()))
            peaks["process"] = max(peaks["process"], max(rss.values(), default=0))
            stop.wait(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    rc = proc.wait()
    stop.set()
    sampler.join()
    wall = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"rc": rc, "wall": wall, "cpu": usage.ru_utime + usage.ru_stime,
            "process": max(usage.ru_maxrss * 1024, peaks["process"]),  # ru_maxrss: KiB on Linux
            "tree": peaks["tree"]}


def differing(store: xr.Dataset, reference: xr.Dataset) -> list[str]:
    """The variables (data and coordinates) of `store` that are not those of `reference`, NaN-aware."""
    names = sorted(set(store.variables) | set(reference.variables))
    return [name for name in names if name not in store.variables or name not in reference.variables
            or not store[name].load().equals(reference[name].load())]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a complete run (its attack.zarr is made again: use a copy)")
    parser.add_argument("--same-as", type=Path, help="an attack.zarr the new one must equal, variable by variable")
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between samples of the tree")
    parser.add_argument("extra", nargs="*", help="after --: more arguments of the attack command")
    args = parser.parse_args()
    if not (args.run_dir / "dataset.zarr").is_dir():
        parser.error(f"{args.run_dir}: not a run directory (no dataset.zarr)")
    command = [sys.executable, "-m", "pipeline", "attack", "--run-dir", str(args.run_dir), "--force", *args.extra]
    out = measure(command, args.interval)
    if out["rc"]:
        sys.exit(f"the attack stage failed (exit {out['rc']})")
    store = xr.open_zarr(args.run_dir / "attack.zarr", consolidated=False)
    gb = 1e9
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print("| targets | batch_size | wall s | CPU s | largest process peak RSS GB | tree total peak RSS GB |")
    print("|---:|---:|---:|---:|---:|---:|")
    print(f"| {store.sizes['sample']} | {store.attrs['batch_size']} | {out['wall']:.0f} | {out['cpu']:.0f} "
          f"| {out['process'] / gb:.2f} | {out['tree'] / gb:.2f} |")
    if args.same_as:
        diff = differing(store, xr.open_zarr(args.same_as, consolidated=False))
        print(f"same as {args.same_as}: {'yes, every variable' if not diff else 'NO: ' + ', '.join(diff)}")
        sys.exit(1 if diff else 0)


if __name__ == "__main__":
    main()
