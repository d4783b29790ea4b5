"""From filtered events to the model's input tensor: span rule, hourly bins, imputation, scaling.

Events come as Dask dataframes over the filtered Parquet files (columns sample, feature, t, value;
t = hours since ICU intime), reduced partition by partition to per-cell sums and counts. The dense
part works on (sample, time, feature) numpy arrays in blocks of samples, so that memory stays
bounded by the output.
"""

from __future__ import annotations

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd

from .config import PrepareConfig

BLOCK = 1024  # samples per block in the dense steps


def attach_samples(events: dd.DataFrame, stays: pd.DataFrame, key: str) -> dd.DataFrame:
    """Tie events to samples through `key` (hadm_id or icustay_id); t = hours since the stay's intime."""
    index = stays[[key, "sample", "intime"]].rename(columns={key: "key"})
    index["intime"] = index["intime"].astype("datetime64[s]")
    joined = events.merge(index, on="key", how="inner")  # `index` is small: broadcast to every partition
    t = (joined["charttime"] - joined["intime"]).dt.total_seconds() / 3600.0
    return joined.assign(t=t)[["sample", "feature", "t", "value"]]


def span_ok(events: dd.DataFrame, n_samples: int, cfg: PrepareConfig) -> np.ndarray:
    """Span rule: a sample's kept events (any feature, any time) start by t ≤ 1 h and end at t ≥ 47 h.

    A series cut short by death or discharge would leak the label. Returns a bool per sample.
    """
    span = events.groupby("sample")["t"].agg(["min", "max"]).compute()
    first = np.full(n_samples, np.inf)
    last = np.full(n_samples, -np.inf)
    first[span.index.to_numpy()] = span["min"].to_numpy()
    last[span.index.to_numpy()] = span["max"].to_numpy()
    return (first <= cfg.span_start_max_hours) & (last >= cfg.span_end_min_hours)


def window_cells(events: dd.DataFrame, keep: np.ndarray, cfg: PrepareConfig,
                 n_features: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Reduce the events of kept samples inside the window, partition by partition.

    Returns (1) per observed cell — index ``cell = (sample · time + bin) · feature + feature``, with
    samples renumbered among the kept ones, bin b holding b ≤ t < b + 1 — the sum and count of its
    events, sorted by cell; (2) the windowed events' (feature, value) pairs, for the percentiles.
    Memory grows with the number of observed cells and windowed values, not with the input tables.
    """
    new_index = np.where(keep, np.cumsum(keep) - 1, -1)  # old sample → position among kept samples
    n_time = cfg.window_hours

    def cells(part: pd.DataFrame) -> pd.DataFrame:
        sample = new_index[part["sample"].to_numpy()]
        t = part["t"].to_numpy()
        inside = (t >= 0) & (t < n_time) & (sample >= 0)
        cell = (sample[inside] * n_time + np.floor(t[inside]).astype(np.int64)) * n_features \
            + part["feature"].to_numpy()[inside]
        return pd.DataFrame({"cell": cell.astype(np.int64), "feature": part["feature"].to_numpy()[inside],
                             "value": part["value"].to_numpy()[inside]})

    meta = pd.DataFrame({"cell": np.array([], np.int64), "feature": np.array([], np.int8),
                         "value": np.array([], np.float64)})
    windowed = events.map_partitions(cells, meta=meta)
    per_cell, values = dask.compute(windowed.groupby("cell")["value"].agg(["sum", "count"]),
                                    windowed[["feature", "value"]])
    return per_cell.sort_index(), values


def feature_stats(values: pd.DataFrame, n_features: int, cfg: PrepareConfig) -> dict[str, np.ndarray]:
    """p_lo, median, p_hi per feature over all kept event values inside the kept samples' windows."""
    qs = [cfg.lower_percentile, 50.0, cfg.upper_percentile]
    stats = np.full((3, n_features), np.nan)
    for k, group in values.groupby("feature")["value"]:
        stats[:, k] = np.percentile(group.to_numpy(), qs)  # numpy's default: linear interpolation
    return {"p5": stats[0], "median": stats[1], "p95": stats[2]}


def interpolate(values: np.ndarray) -> np.ndarray:
    """Linear interpolation along time between observed bins; nearest observed value at the edges.

    values: (sample, time, feature) with NaN where unobserved. A series with no observation stays NaN.
    """
    n_time = values.shape[1]
    observed = ~np.isnan(values)
    t = np.arange(n_time).reshape(1, -1, 1)
    prev = np.maximum.accumulate(np.where(observed, t, -1), axis=1)
    nxt = np.flip(np.minimum.accumulate(np.flip(np.where(observed, t, n_time), axis=1), axis=1), axis=1)
    v_prev = np.take_along_axis(values, np.clip(prev, 0, n_time - 1), axis=1)
    v_next = np.take_along_axis(values, np.clip(nxt, 0, n_time - 1), axis=1)
    has_prev, has_next = prev >= 0, nxt < n_time
    both = has_prev & has_next
    gap = np.where(both & (nxt > prev), nxt - prev, 1)
    weight = np.where(both, (t - prev) / gap, 0.0)
    between = v_prev + (v_next - v_prev) * weight
    return np.where(both, between, np.where(has_prev, v_prev, v_next))


def build_tensor(per_cell: pd.DataFrame, n_samples: int, n_time: int, n_features: int,
                 stats: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """x (float32 in [0, 1]) and mask (bool), both (sample, time, feature), built block by block.

    A cell's value is the mean of its events; then interpolation, the feature's median where a sample
    never observed it, winsorizing to [p5, p95] and scaling (v − p5)/(p95 − p5). A constant feature
    (p95 == p5) scales to 0.
    """
    lo, med, hi = stats["p5"], stats["median"], stats["p95"]
    width = np.where(hi > lo, hi - lo, 1.0)
    cells = per_cell.index.to_numpy()
    means = (per_cell["sum"] / per_cell["count"]).to_numpy()
    x = np.empty((n_samples, n_time, n_features), dtype=np.float32)
    mask = np.zeros((n_samples, n_time, n_features), dtype=bool)
    per_sample = n_time * n_features
    for start in range(0, n_samples, BLOCK):
        stop = min(start + BLOCK, n_samples)
        a, b = np.searchsorted(cells, [start * per_sample, stop * per_sample])
        block = np.full((stop - start) * per_sample, np.nan)
        block[cells[a:b] - start * per_sample] = means[a:b]
        block = block.reshape(stop - start, n_time, n_features)
        mask[start:stop] = ~np.isnan(block)
        block = interpolate(block)
        block = np.where(np.isnan(block), med, block)
        block = np.clip(block, lo, hi)
        x[start:stop] = np.clip((block - lo) / width, 0.0, 1.0)
    return x, mask
