"""The analyze stage's time, its figures saved as `pipeline.figures.save` saves them (laid out once, by
constrained layout) against the former way, ``bbox_inches="tight"`` besides (each figure drawn twice).

    python benchmarks/analyze_figures.py RUN_DIR [--repeats 3]

RUN_DIR is a finished run (e.g. the chain of tests/test_damage.py, or benchmarks/make_run.sh). The two ways
alternate, `analyze --force` in this process each time, so that both see the same machine. Latest figures:
benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import platform
import time

import matplotlib
from matplotlib.figure import Figure

from pipeline import figures
from pipeline.cli import main
from pipeline.susceptibility import figures as analysis_figures

SAVERS = (figures, analysis_figures)  # the modules that call save() (the latter imports it by name)


@contextlib.contextmanager
def former_way():
    """save() as it was: bbox_inches="tight"."""
    save = figures.save

    def tight(fig: Figure, path) -> None:
        with figures.atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
        figures.plt.close(fig)

    for module in SAVERS:
        module.save = tight
    try:
        yield
    finally:
        for module in SAVERS:
            module.save = save


def analyze_seconds(run_dir: str) -> float:
    start = time.perf_counter()
    assert main(["analyze", "--run-dir", run_dir, "--force", "--executor", "debug"]) == 0
    return time.perf_counter() - start


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    logging.disable(logging.INFO)
    analyze_seconds(args.run_dir)  # imports and caches warm
    times = {"former (tight bbox)": [], "now (laid out once)": []}
    for _ in range(args.repeats):
        with former_way():
            times["former (tight bbox)"].append(analyze_seconds(args.run_dir))
        times["now (laid out once)"].append(analyze_seconds(args.run_dir))
    print(f"{platform.processor() or platform.machine()}, matplotlib {matplotlib.__version__}, "
          f"{args.repeats} alternating repeats")
    print("| figures saved | analyze s (median) |\n|---|---:|")
    for name, seconds in times.items():
        print(f"| {name} | {sorted(seconds)[len(seconds) // 2]:.2f} |")
    former, now = (sorted(s)[len(s) // 2] for s in times.values())
    print(f"ratio now / former: {now / former:.2f}")
