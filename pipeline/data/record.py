"""What the record says and the model's input it becomes: the one transform `prepare` and the attack share.

The record of a sample is, per hourly cell, the mean of its events in clinical units (`value`, NaN where
nothing was recorded; docs/dataset.md). The model's input x is derived from it:

1. linear interpolation along time between recorded hours, the nearest recorded value carried to the
   window's edges;
2. the feature's median where the sample never recorded the feature;
3. winsorizing to [p5, p95] and scaling (v − p5) / (p95 − p5) to [0, 1].

For a fixed mask, steps 1–2 take each cell from at most two recorded cells of its series with fixed
weights (a :class:`Plan`), so the transform is a gather, a lerp, a clip and an affine map: the numpy form
builds dataset.zarr, the torch form (the same operations in float64) carries the attack's gradient
from the model's input back to the record (an edit of one recorded lab moves every hour interpolated or
carried from it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

STATS = ("p5", "median", "p95")  # a feature's statistics the transform uses (variables of dataset.zarr)


def feature_stats(ds) -> dict[str, np.ndarray]:
    """{p5, median, p95}: each (feature,) float64, from dataset.zarr opened with xarray."""
    return {k: ds[k].values.astype(np.float64) for k in STATS}


@dataclass
class Plan:
    """Where each cell of x takes its value from, given which cells were recorded (sample, time, feature).

    derived = v[prev] + (v[next] − v[prev]) · weight, for the cells of a series with any record (`has`);
    a recorded cell is its own prev and next (weight 0); before the first and after the last record
    both point at that record.
    """

    prev: np.ndarray  # int64 (sample, time, feature): a recorded time of the same series
    next: np.ndarray  # int64 (sample, time, feature)
    weight: np.ndarray  # float64 (sample, time, feature) in [0, 1]
    has: np.ndarray  # bool (sample, 1, feature): the series holds at least one record


def plan(mask: np.ndarray) -> Plan:
    """The interpolation plan of `mask` (sample, time, feature): True where the cell was recorded."""
    n_time = mask.shape[1]
    t = np.arange(n_time).reshape(1, -1, 1)
    prev = np.maximum.accumulate(np.where(mask, t, -1), axis=1)
    nxt = np.flip(np.minimum.accumulate(np.flip(np.where(mask, t, n_time), axis=1), axis=1), axis=1)
    has_prev, has_next = prev >= 0, nxt < n_time
    both = has_prev & has_next
    gap = np.where(both & (nxt > prev), nxt - prev, 1)
    weight = np.where(both, (t - prev) / gap, 0.0)
    prev_at = np.where(has_prev, prev, nxt)  # before the first record: the first record
    next_at = np.where(has_next, nxt, prev)  # after the last: the last
    has = mask.any(axis=1, keepdims=True)
    return Plan(np.clip(prev_at, 0, n_time - 1), np.clip(next_at, 0, n_time - 1), weight, has)


def derive(value: np.ndarray, mask: np.ndarray, stats: dict[str, np.ndarray]) -> np.ndarray:
    """x (float32, in [0, 1]) from the record: `value` (sample, time, feature) in clinical units (read
    where `mask` is True), and the feature statistics p5, median, p95 (clinical units)."""
    lo, med, hi = stats["p5"], stats["median"], stats["p95"]
    p = plan(mask)
    v = np.where(mask, value, 0.0)
    v_prev = np.take_along_axis(v, p.prev, axis=1)
    v_next = np.take_along_axis(v, p.next, axis=1)
    derived = np.where(p.has, v_prev + (v_next - v_prev) * p.weight, med)
    return np.clip((np.clip(derived, lo, hi) - lo) / width(stats), 0.0, 1.0).astype(np.float32)


def derive_record(value: np.ndarray, stats: dict[str, np.ndarray]) -> np.ndarray:
    """:func:`derive` of a record whose unrecorded cells are NaN (the mask is where it is not)."""
    return derive(value, ~np.isnan(value), stats)


def width(stats: dict[str, np.ndarray]) -> np.ndarray:
    """p95 − p5 per feature, the scale of x; 1 for a constant feature (which then scales to 0)."""
    return np.where(stats["p95"] > stats["p5"], stats["p95"] - stats["p5"], 1.0)


class Transform(torch.nn.Module):
    """x = derive(record) for a batch of samples in torch, differentiable in the recorded values:
    ``transform(v)`` with v (n, time, feature) float64 in clinical units (read where the mask is True).

    The same operations in the same order and precision as :func:`derive`, so an edited record gives
    the model the very input that `prepare` would derive from it, bit for bit.
    """

    def __init__(self, mask: np.ndarray, stats: dict[str, np.ndarray], device: torch.device | str = "cpu"):
        super().__init__()
        p = plan(mask)
        as_tensor = lambda a, dtype: torch.as_tensor(np.array(a), dtype=dtype, device=device)  # noqa: E731
        self.prev, self.next = as_tensor(p.prev, torch.long), as_tensor(p.next, torch.long)
        self.weight = as_tensor(p.weight, torch.float64)
        self.has = as_tensor(p.has, torch.bool)
        self.lo, self.median, self.hi = (as_tensor(stats[k], torch.float64) for k in STATS)
        self.width = as_tensor(width(stats), torch.float64)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        v_prev = torch.take_along_dim(v, self.prev, dim=1)
        v_next = torch.take_along_dim(v, self.next, dim=1)
        derived = torch.where(self.has, v_prev + (v_next - v_prev) * self.weight, self.median)
        clipped = torch.minimum(torch.maximum(derived, self.lo), self.hi)
        return ((clipped - self.lo) / self.width).clamp(0.0, 1.0).float()
