"""One target's adversarial perturbation in clinical units: a heatmap over hours × features and the
largest changes as a table (value before → after, ranked by the change in scaled units). In a record-space
run the table lists the edited recorded values (with the hours of the input each reaches) and the figure
boxes them.

    python analysis/patient_heatmap.py RUN_DIR [--target N | --hadm-id ID] [--kind best|first|l1_best] [--out FILE.png]

Needs only xarray, zarr and matplotlib: it reads RUN_DIR/attack.zarr and RUN_DIR/dataset.zarr.
Colour = the change relative to the largest change of that feature (so that features in different
units share one scale); each row's label gives that largest change in the feature's unit.
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
from matplotlib.patches import Rectangle  # noqa: E402


def open_run(run_dir: Path) -> tuple[xr.Dataset, xr.Dataset]:
    for name in ("attack.zarr", "dataset.zarr"):
        if not (run_dir / name).exists():
            sys.exit(f"error: {run_dir / name} not found (run the pipeline's `attack` stage first)")
    return xr.open_zarr(run_dir / "attack.zarr"), xr.open_zarr(run_dir / "dataset.zarr")


def pick_target(attack: xr.Dataset, target: int | None, hadm_id: int | None, data: xr.Dataset) -> int:
    if hadm_id is not None:
        hadm = data.hadm_id.values[attack.dataset_index.values]
        hits = np.flatnonzero(hadm == hadm_id)
        if not hits.size:
            sys.exit(f"error: --hadm-id {hadm_id} is not among the {attack.sizes['sample']} attacked targets")
        return int(hits[0])
    if target is None:  # the first target with a successful example
        found = np.flatnonzero(attack.found.sel(kind="best").values)
        return int(found[0]) if found.size else 0
    if not 0 <= target < attack.sizes["sample"]:
        sys.exit(f"error: --target {target}: the store holds targets 0…{attack.sizes['sample'] - 1}")
    return target


def changes(attack: xr.Dataset, data: xr.Dataset, target: int, kind: str) -> xr.Dataset:
    """Before, after and change of every cell in clinical units (scaled value × (p95 − p5) + p5)."""
    span = data.p95 - data.p5
    x = data.x.isel(sample=int(attack.dataset_index.values[target])).reset_coords(drop=True)
    p = attack.perturbation.isel(sample=target).sel(kind=kind).reset_coords(drop=True)
    before = data.p5 + x * span
    return xr.Dataset({"before": before, "after": data.p5 + (x + p).clip(0, 1) * span,
                       "delta": p * span, "scaled": p}).compute()


def edits(attack: xr.Dataset, data: xr.Dataset, target: int, kind: str) -> pd.DataFrame | None:
    """Record-space runs: one row per edited recorded value — its hour, the value recorded before → after in
    clinical units, the edit in scaled units and the hours of the model's input it reaches (interpolated
    towards it, or carried from it, up to the neighbouring recorded values). None for a tensor-space run."""
    if "edit" not in attack:
        return None
    index = int(attack.dataset_index.values[target])
    edit = attack["edit"].isel(sample=target).sel(kind=kind).transpose("time", "feature").values
    clinical = attack["edit_clinical"].isel(sample=target).sel(kind=kind).transpose("time", "feature").values
    recorded = data["mask"].isel(sample=index).transpose("time", "feature").values
    value = data["value"].isel(sample=index).transpose("time", "feature").values
    rows = []
    for hour, f in zip(*np.nonzero(edit), strict=True):
        others = np.flatnonzero(recorded[:, f])
        before, after = others[others < hour], others[others > hour]
        rows.append({"feature": str(data.feature.values[f]), "hour": int(hour), "before": value[hour, f],
                     "after": value[hour, f] + clinical[hour, f], "edit": clinical[hour, f],
                     "scaled": edit[hour, f], "unit": str(data.unit.values[f]),
                     "reaches": f"{before[-1] + 1 if before.size else 0}–"
                                f"{after[0] - 1 if after.size else recorded.shape[0] - 1}"})
    return pd.DataFrame(rows, columns=["feature", "hour", "before", "after", "edit", "scaled", "unit", "reaches"])


def figure(c: xr.Dataset, edited: pd.DataFrame | None, data: xr.Dataset, title: str, out: Path) -> plt.Figure:
    """The heatmap of the change relative to each feature's largest; the edited recorded values boxed.
    Returns the (closed) figure."""
    delta = c.delta.transpose("feature", "time").values
    largest = np.abs(delta).max(axis=1)
    relative = np.divide(delta, largest[:, None], out=np.zeros_like(delta), where=largest[:, None] > 0)
    fig, ax = plt.subplots(figsize=(11, 6.5), constrained_layout=True)
    image = ax.imshow(relative, aspect="auto", cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
    labels = [f"{f} (max ±{m:.3g} {u})" if m > 0 else f"{f} (unchanged)"
              for f, m, u in zip(data.feature.values, largest, data.unit.values, strict=True)]
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set_xticks(range(0, delta.shape[1], 6))
    ax.set_xlabel("hour after ICU admission")
    if edited is not None and len(edited):
        row = {str(f): j for j, f in enumerate(data.feature.values)}
        for n, e in enumerate(edited.itertuples()):  # the edit itself, apart from the input cells it reaches
            ax.add_patch(Rectangle((e.hour - 0.5, row[e.feature] - 0.5), 1, 1, fill=False, edgecolor="black", lw=2,
                                   label="edited recorded value" if n == 0 else None))
        ax.legend(loc="upper left", fontsize=8, framealpha=0.9)
        title += f"; {len(edited)} recorded value(s) edited, reaching {int((delta != 0).sum())} input cells"
    else:
        title += f"; {int((delta != 0).sum())} cells changed"
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="change / largest change of the feature (red: raised, blue: lowered)")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return fig


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--target", type=int, help="index along attack.zarr's `sample` (default: first success)")
    ap.add_argument("--hadm-id", type=int, help="pick the target by hospital admission id instead")
    ap.add_argument("--kind", choices=("best", "first", "l1_best"), default="best",
                    help="l1_best: the L1 attack's own sparsest example (record-space runs)")
    ap.add_argument("--top", type=int, default=10, help="largest changes listed")
    ap.add_argument("--out", type=Path, help="PNG path (default: RUN_DIR/figures/patient-<target>-<kind>.png)")
    args = ap.parse_args(argv)
    attack, data = open_run(args.run_dir)
    if args.kind not in attack.kind.values:
        sys.exit(f"error: --kind {args.kind}: {args.run_dir / 'attack.zarr'} holds {', '.join(attack.kind.values)}")
    t = pick_target(attack, args.target, args.hadm_id, data)
    c = changes(attack, data, t, args.kind)
    found = bool(attack.found.isel(sample=t).sel(kind=args.kind))
    pred = int(attack.pred.values[t])
    hadm = int(data.hadm_id.values[int(attack.dataset_index.values[t])])
    outcome = f"prediction {pred} → {1 - pred}" if found else "no successful example"
    edited = edits(attack, data, t, args.kind)
    out = args.out or args.run_dir / "figures" / f"patient-{t}-{args.kind}.png"
    figure(c, edited, data, f"target {t} (hadm_id {hadm}), {args.kind} example: {outcome}", out)

    if edited is not None:  # record space: the edits themselves, not every input cell they reach
        table = edited.reindex(edited.scaled.abs().sort_values(ascending=False).index)
    else:
        table = c.to_dataframe()[["before", "after", "delta", "scaled"]].reset_index()
        table["unit"] = table.feature.map(dict(zip(data.feature.values, data.unit.values, strict=True)))
        # largest first in scaled units (1 = the feature's p5…p95 range): comparable across features
        table = table[table.scaled != 0].reindex(table.scaled.abs().sort_values(ascending=False).index).dropna()
    print(f"target {t}, hadm_id {hadm}, {args.kind} example, {outcome}")
    with pd.option_context("display.float_format", "{:.4g}".format, "display.width", 120):
        print(table.head(args.top).rename(columns={"time": "hour"}).to_string(index=False))
    if len(table) > args.top:
        print(f"… and {len(table) - args.top} more (--top {len(table)} lists them all)")
    print(f"figure: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
