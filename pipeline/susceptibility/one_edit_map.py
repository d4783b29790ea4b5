"""The one-edit map (docs/methods.md §10): per direction, hour and feature, the share of targets whose
prediction the value recorded there can flip alone, and how large the smallest such edit is.

Read from attack.zarr's `one_edit` (sample, time, feature): the smallest flipping edit of each recorded
value alone, in clinical units, NaN where that value alone cannot flip the target.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import xarray as xr

from pipeline.susceptibility.scores import DIRECTION, DIRECTIONS, direction_of

ATTRS = {
    "one_edit_share": {"long_name": "share of the direction's targets whose prediction the value recorded at "
                                    "this hour can flip by itself", "units": "1"},
    "one_edit_median": {"long_name": "median over those targets of the smallest flipping edit |new − old|, in "
                                     "the feature's clinical unit (coordinate `unit`; NaN: no target)"},
    "one_edit_median_scaled": {"long_name": "one_edit_median / (p95 − p5) of the feature (NaN: no target)",
                               "units": "1"},
    "one_edit_targets": {"long_name": "targets of the direction", "units": "1"},
    "one_edit_flippable": {"long_name": "share of the direction's targets that some single edited value flips",
                           "units": "1"},
}


def nan_median(a: np.ndarray, axis: int) -> np.ndarray:
    """The median of the non-NaN values along `axis`; NaN where there are none (without numpy's warning)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(a, axis=axis)


def one_edit_scores(attack: xr.Dataset, data: xr.Dataset) -> xr.Dataset:
    """The map, dims (direction, time, feature), and per direction the targets and the share that one edit
    flips."""
    size = np.abs(attack["one_edit"].values.astype(np.float64))  # (sample, time, feature), NaN: cannot
    direction = direction_of(attack.pred).values
    span = (data.p95 - data.p5).values
    share, median, targets, flippable = [], [], [], []
    for d in DIRECTIONS:
        mine = size[direction == d]
        can = ~np.isnan(mine)
        n = len(mine)
        targets.append(n)
        flippable.append(can.any(axis=(1, 2)).mean() if n else np.nan)
        share.append(can.sum(axis=0) / n if n else np.full(size.shape[1:], np.nan))
        median.append(nan_median(mine, axis=0) if n else np.full(size.shape[1:], np.nan))
    dims = ("direction", "time", "feature")
    ds = xr.Dataset(
        {"one_edit_share": (dims, np.array(share)), "one_edit_median": (dims, np.array(median)),
         "one_edit_median_scaled": (dims, np.array(median) / span),
         "one_edit_targets": ("direction", np.array(targets)),
         "one_edit_flippable": ("direction", np.array(flippable))},
        coords={"direction": ("direction", np.array(DIRECTIONS, dtype=object), DIRECTION),
                "time": attack.time.values, "feature": attack.feature.values})
    for name, attrs in ATTRS.items():
        ds[name].attrs = dict(attrs)
    return ds


def feature_table(attack: xr.Dataset, data: xr.Dataset, direction: str) -> pd.DataFrame:
    """Per feature, for the targets of `direction`: how many a single edit of that feature (at any hour)
    flips, the median of their smallest such edit in clinical units, and the hour where one edit flips the
    most targets — most flipped first."""
    mine = (direction_of(attack.pred).values == direction)
    size = np.abs(attack["one_edit"].values[mine].astype(np.float64))  # (targets, time, feature)
    can = ~np.isnan(size)
    n = int(mine.sum())
    smallest = np.where(can.any(axis=1), np.nanmin(np.where(can, size, np.inf), axis=1), np.nan)  # over hours
    by_hour = can.sum(axis=0)  # (time, feature)
    rows = []
    for j, name in enumerate(attack.feature.values):
        flipped = ~np.isnan(smallest[:, j])
        rows.append({"feature": str(name), "unit": str(data["unit"].values[j]), "targets": n,
                     "flipped_by_one_edit": int(flipped.sum()),
                     "share": float(flipped.mean()) if n else np.nan,
                     "median_smallest_edit": float(np.median(smallest[flipped, j])) if flipped.any() else np.nan,
                     "busiest_hour": int(np.argmax(by_hour[:, j])) if by_hour[:, j].any() else -1})
    return pd.DataFrame(rows).sort_values("flipped_by_one_edit", ascending=False, kind="stable") \
        .reset_index(drop=True)
