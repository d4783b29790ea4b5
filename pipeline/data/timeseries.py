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

from pipeline.config import PrepareConfig
from pipeline.data.record import derive

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


def build_record(per_cell: pd.DataFrame, n_samples: int, n_time: int, n_features: int,
                 stats: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The record and the model's input, all (sample, time, feature), built block by block.

    value: the mean of each cell's events in clinical units (float64, NaN where nothing was recorded);
    count: the number of events (int32); mask: the cell was recorded; x: the model's input, derived from
    the record by :func:`pipeline.data.record.derive` (interpolation, median fill, winsorizing, scaling).
    """
    cells = per_cell.index.to_numpy()
    sums, counts = per_cell["sum"].to_numpy(), per_cell["count"].to_numpy()
    shape = (n_samples, n_time, n_features)
    out = {"value": np.full(shape, np.nan), "count": np.zeros(shape, np.int32),
           "mask": np.zeros(shape, bool), "x": np.empty(shape, np.float32)}
    per_sample = n_time * n_features
    for start in range(0, n_samples, BLOCK):
        stop = min(start + BLOCK, n_samples)
        a, b = np.searchsorted(cells, [start * per_sample, stop * per_sample])
        value = np.full((stop - start) * per_sample, np.nan)
        count = np.zeros((stop - start) * per_sample, np.int32)
        value[cells[a:b] - start * per_sample] = sums[a:b] / counts[a:b]
        count[cells[a:b] - start * per_sample] = counts[a:b]
        value, count = value.reshape(stop - start, n_time, n_features), count.reshape(stop - start, n_time, n_features)
        mask = count > 0
        out["value"][start:stop], out["count"][start:stop], out["mask"][start:stop] = value, count, mask
        out["x"][start:stop] = derive(value, mask, stats)
    return out
