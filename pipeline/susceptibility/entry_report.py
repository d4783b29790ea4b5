"""The entry-error results (errors.zarr) for `analyze`: each flip verified, the k-error tables, the
heat map of where the errors were made and the simplest flips spelled out (docs/methods.md §9)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import xarray as xr

from pipeline.attack.core import margin
from pipeline.data.entry_errors import apply, mean_after
from pipeline.data.record import derive_record, feature_stats
from pipeline.features import BY_NAME, FEATURES
from pipeline.infra import cf, layout
from pipeline.infra.rundir import RunDir
from pipeline.susceptibility.examples_text import amount
from pipeline.susceptibility.scores import DIRECTIONS, label
from pipeline.susceptibility.shares import pct

SHOWN = 5  # simplest flips spelled out in the report


def load(run_dir: RunDir) -> xr.Dataset | None:
    path = run_dir / layout.ERRORS
    return xr.open_zarr(path, consolidated=False).load() if path.exists() else None


def direction(store: xr.Dataset) -> np.ndarray:
    """'0to1' for a target that survived (the flip predicts death), '1to0' for one that died."""
    return np.where(store.y.values == 0, DIRECTIONS[0], DIRECTIONS[1])


def names(store: xr.Dataset, variable: str) -> np.ndarray:
    """The store's coded `variable` (feature, kind) as names, read with the store's own codes: a store
    written when the code listed its choices in another order is read right."""
    return cf.decode(store[variable]).values


def verify(store: xr.Dataset, data: xr.Dataset, model: torch.nn.Module) -> np.ndarray:
    """Per target: its errors, re-applied one by one to the record of dataset.zarr and re-derived with the
    transform `prepare` uses (the run's statistics), flip the model's prediction. False where not flipped."""
    stats, ok = feature_stats(data), np.zeros(store.sizes["sample"], bool)
    value, count = data["value"].values, data["count"].values
    column = {str(name): k for k, name in enumerate(data.feature.values)}  # the dataset's own feature order
    feature = names(store, "feature")
    for i in np.flatnonzero(store.flipped.values):
        v, n = value[store.dataset_index.values[i]].copy(), count[store.dataset_index.values[i]].copy()
        for j in range(int(store.n_errors.values[i])):
            h, f = int(store.hour.values[i, j]), column[feature[i, j]]
            after = mean_after(BY_NAME[feature[i, j]], float(v[h, f]), float(store.erroneous.values[i, j]),
                               max(int(n[h, f]), 1))
            if after is not None:
                v, n = apply(v, n, h, f, after)
        x = torch.from_numpy(derive_record(v[None], stats))
        with torch.no_grad():
            ok[i] = float(margin(model(x), torch.tensor([int(store.y.values[i])]))[0]) > 0
    return ok


def errors_table(store: xr.Dataset) -> pd.DataFrame:
    """One row per error of a flip: target, hadm_id, direction, k, and the error in clinical units."""
    rows = []
    feature, kind = names(store, "feature"), names(store, "kind")
    for i in np.flatnonzero(store.flipped.values):
        k = int(store.n_errors.values[i])
        for j in range(k):
            rows.append({"sample": i, "hadm_id": int(store.hadm_id.values[i]), "direction": direction(store)[i],
                         "k": k, "order": j + 1, "feature": feature[i, j], "unit": BY_NAME[feature[i, j]].unit,
                         "hour": int(store.hour.values[i, j]), "kind": kind[i, j],
                         "recorded": float(store.recorded.values[i, j]),
                         "erroneous": float(store.erroneous.values[i, j]), "dropped": bool(store.dropped.values[i, j]),
                         "margin": float(store.margin.values[i, j])})
    return pd.DataFrame(rows, columns=["sample", "hadm_id", "direction", "k", "order", "feature", "unit", "hour",
                                       "kind", "recorded", "erroneous", "dropped", "margin"])


def k_table(store: xr.Dataset, verified: np.ndarray) -> pd.DataFrame:
    """Per direction: targets, and the share flipped by ≤ 1, ≤ 2, … errors; flips verified."""
    max_errors = store.sizes["error"]
    rows = []
    for d in DIRECTIONS:
        mine = direction(store) == d
        flipped, k = store.flipped.values & mine, store.n_errors.values
        row = {"direction": d, "targets": int(mine.sum()), "flipped": int(flipped.sum()),
               "verified": int((verified & mine).sum())}
        for j in range(1, max_errors + 1):
            row[f"share_le_{j}"] = float((flipped & (k <= j)).sum() / mine.sum()) if mine.any() else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def by_kind(errors: pd.DataFrame, store: xr.Dataset) -> pd.DataFrame:
    """Per error kind: errors in flips, and targets flipped by a single error of that kind."""
    single = errors[errors.k == 1]
    return pd.DataFrame([{"kind": kind, "errors_in_flips": int((errors.kind == kind).sum()),
                          "flipped_by_one": int((single.kind == kind).sum())} for kind in store.attrs["kinds"]])


def by_feature(errors: pd.DataFrame) -> pd.DataFrame:
    """Per feature: errors in flips and flipped targets whose errors include it, most often first."""
    table = pd.DataFrame({"feature": [f.name for f in FEATURES], "unit": [f.unit for f in FEATURES]})
    grouped = errors.groupby("feature")
    table["errors_in_flips"] = table.feature.map(grouped.size()).fillna(0).astype(int)
    table["flipped_targets"] = table.feature.map(grouped["sample"].nunique()).fillna(0).astype(int)
    return table.sort_values("errors_in_flips", ascending=False, kind="stable").reset_index(drop=True)


def heat(errors: pd.DataFrame, store: xr.Dataset, n_time: int) -> tuple[xr.DataArray, xr.DataArray]:
    """Share of flipped targets with an error at (feature, hour), per direction; and the flips behind it."""
    share = np.zeros((len(DIRECTIONS), 1, n_time, len(FEATURES)))
    flips = np.zeros((len(DIRECTIONS), 1), int)
    names = [f.name for f in FEATURES]
    for a, d in enumerate(DIRECTIONS):
        flips[a, 0] = int((store.flipped.values & (direction(store) == d)).sum())
        mine = errors[errors.direction == d]
        for row in mine.itertuples():
            share[a, 0, row.hour, names.index(row.feature)] += 1
        share[a] /= max(flips[a, 0], 1)
    coords = {"direction": list(DIRECTIONS), "kind": ["flipping"], "time": np.arange(n_time), "feature": names}
    return (xr.DataArray(share, dims=("direction", "kind", "time", "feature"), coords=coords),
            xr.DataArray(flips, dims=("direction", "kind"), coords={k: coords[k] for k in ("direction", "kind")}))


def spelled(errors: pd.DataFrame) -> list[str]:
    """The simplest flips in words, fewest errors first (then the largest margin)."""
    lines = []
    last = errors.groupby("sample").agg(k=("k", "first"), margin=("margin", "last")).sort_values(
        ["k", "margin"], ascending=[True, False], kind="stable")
    for sample in last.index[:SHOWN]:
        rows = errors[errors["sample"] == sample].sort_values("order")
        first = rows.iloc[0]
        outcome = "predicted to die" if first.direction == DIRECTIONS[0] else "predicted to survive"
        what = "; ".join(_error_text(r) for r in rows.itertuples())
        lines.append(f"- hadm_id {first.hadm_id} ({label(first.direction)}, {len(rows)} error"
                     f"{'s' if len(rows) > 1 else ''}): {what} → {outcome}")
    return lines


def _error_text(r) -> str:
    if r.kind == "delete":
        return f"{r.feature} at hour {r.hour} ({amount(r.recorded, r.unit)}) lost"
    dropped = ", dropped by the plausibility filter" if r.dropped else ""
    return f"{r.feature} at hour {r.hour} entered as {amount(r.erroneous, r.unit)} instead of " \
           f"{amount(r.recorded, r.unit)} ({r.kind}{dropped})"


def section(k: pd.DataFrame, kinds: pd.DataFrame, features: pd.DataFrame, errors: pd.DataFrame,
            store: xr.Dataset, table) -> list[str]:
    """report.md's section; `table` renders a DataFrame as Markdown. (The k-error shares also stand beside
    the k-edit shares in the section on the fewest edits, report.fewest_section.)"""
    max_errors = store.sizes["error"]
    lines = ["## Plausible data-entry errors", "",
             f"For every correctly classified target ({store.attrs.get('targets')} set) the fewest errors of the "
             f"kinds {', '.join(store.attrs['kinds'])} (at most {max_errors}, beam {store.attrs.get('beam')}) that "
             "flip the prediction, each checked through the model with the record re-derived as `prepare` "
             "derives it (docs/methods.md §9; every error: `tables/errors.csv`).", ""]
    for row in k.itertuples():
        shares = ", ".join(f"{pct(getattr(row, f'share_le_{j}'), row.targets)} by ≤ {j}"
                           for j in range(1, max_errors + 1))
        lines.append(f"- {label(row.direction)}: of {row.targets} targets, {shares}; {row.verified} of "
                     f"{row.flipped} flips verified by re-deriving the erroneous record.")
    lines += ["", "By kind of error:", "", table(kinds.rename(columns={"errors_in_flips": "errors in flips",
                                                                       "flipped_by_one": "flipped by one"})), "",
              "By feature (whose errors flip most often):", "",
              table(features[features.errors_in_flips > 0].rename(columns={
                  "errors_in_flips": "errors in flips", "flipped_targets": "flipped targets"})), ""]
    if len(errors):
        lines += [f"The {min(SHOWN, errors['sample'].nunique())} simplest flips:", "", *spelled(errors), ""]
    return lines
