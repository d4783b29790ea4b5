"""Compare two runs' feature susceptibility S_j (or sensitivity_j): a table of both rankings with the
rank correlation per direction, and a figure of both scores per feature, side by side.

    python analysis/compare_runs.py RUN_A RUN_B [--kind best|first|l1_best] [--score s_j|sensitivity_j] [--out FILE.png]

Needs only xarray, zarr and matplotlib: it reads RUN_*/susceptibility.zarr (the `analyze` stage's).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import xarray as xr  # noqa: E402

# direction values as stored (easy to type) → as shown; stores written before the change used the arrows
LABELS = {"0to1": "0→1", "1to0": "1→0"}
STORED = {shown: stored for stored, shown in LABELS.items()}


def open_scores(run_dir: Path) -> xr.Dataset:
    path = run_dir / "susceptibility.zarr"
    if not path.exists():
        sys.exit(f"error: {path} not found (run the pipeline's `analyze` stage first)")
    ds = xr.open_zarr(path)
    old = [str(d) for d in ds.direction.values]
    if any(d in STORED for d in old):  # an older run: "0→1" → "0to1", so that it compares with a newer one
        ds = ds.assign_coords(direction=("direction", [STORED.get(d, d) for d in old], ds.direction.attrs))
    return ds


def compare(a: xr.Dataset, b: xr.Dataset, kind: str, score: str) -> dict[str, pd.DataFrame]:
    """Per direction: feature, score and rank in A and B (rank 1 = most susceptible)."""
    tables = {}
    for d in a.direction.values:
        table = pd.DataFrame({"A": a[score].sel(direction=d, kind=kind).to_series(),
                              "B": b[score].sel(direction=d, kind=kind).to_series()})
        table["rank A"] = table.A.rank(ascending=False, method="min").astype("Int64")
        table["rank B"] = table.B.rank(ascending=False, method="min").astype("Int64")
        tables[str(d)] = table.sort_values("rank A")
    return tables


def figure(tables: dict[str, pd.DataFrame], names: tuple[str, str], kind: str, score: str, out: Path) -> plt.Figure:
    """Per direction, one row per feature (most susceptible in A on top): A's and B's score as bars side by
    side; the title gives the rank correlation. Returns the (closed) figure."""
    features = max(len(t) for t in tables.values())
    fig, axes = plt.subplots(1, len(tables), figsize=(5.5 * len(tables), 1.2 + 0.28 * features), squeeze=False,
                             constrained_layout=True)
    for ax, (d, table) in zip(axes[0], tables.items(), strict=True):
        rows = np.arange(len(table))[::-1]  # rank 1 at the top
        ax.barh(rows + 0.2, table.A.fillna(0), 0.4, label=f"A: {names[0]}")
        ax.barh(rows - 0.2, table.B.fillna(0), 0.4, label=f"B: {names[1]}")
        ax.set_yticks(rows, [f"{f} ({a}|{b})" for f, a, b in zip(table.index, table["rank A"].astype(str),
                                                                   table["rank B"].astype(str), strict=True)],
                      fontsize=8)
        ax.set_ylim(-0.6, len(table) - 0.4)
        if table[["A", "B"]].isna().all().any():
            ax.text(0.5, 0.5, "no successful example in one of the runs", transform=ax.transAxes, ha="center")
        ax.set_xlabel(f"{score} of the {kind} examples")
        ax.set_title(f"direction {LABELS.get(d, d)}: Spearman ρ = {spearman(table):.2f}\n"
                     "(feature (rank in A|rank in B))", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return fig


def spearman(table: pd.DataFrame) -> float:
    return table.A.rank().corr(table.B.rank())  # Pearson of the (average) ranks


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_a", type=Path)
    ap.add_argument("run_b", type=Path)
    ap.add_argument("--kind", choices=("best", "first", "l1_best"), default="best",
                    help="l1_best: the L1 attack's own sparsest example (record-space runs)")
    ap.add_argument("--score", choices=("s_j", "sensitivity_j"), default="s_j")
    ap.add_argument("--out", type=Path, default=Path("compare_runs.png"))
    args = ap.parse_args(argv)
    tables = compare(open_scores(args.run_a), open_scores(args.run_b), args.kind, args.score)
    print(f"A = {args.run_a}\nB = {args.run_b}\n{args.score} of the {args.kind} examples\n")
    for d, table in tables.items():
        print(f"direction {LABELS.get(d, d)}: Spearman rank correlation {spearman(table):.3f}")
        print(table.to_string(float_format="{:.3f}".format))
        print()
    figure(tables, (args.run_a.name, args.run_b.name), args.kind, args.score, args.out)
    print(f"figure: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
