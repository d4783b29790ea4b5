"""From filtered events to the model's input tensor: span rule, hourly bins, imputation, scaling.

Events come as Dask dataframes over the filtered Parquet files (columns sample, feature, t, value;
t = hours since ICU intime). The dense part works on (sample, time, feature) numpy arrays, in
blocks of samples so that memory stays bounded.
"""

from __future__ import annotations

import dask.dataframe as dd
import numpy as np
import pandas as pd

from .config import PrepareConfig

BLOCK = 4096  # samples per block in the dense steps


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


def window_events(events: dd.DataFrame, keep: np.ndarray, cfg: PrepareConfig) -> pd.DataFrame:
    """Events of kept samples with 0 ≤ t < window, with their bin (0 ≤ t − bin < 1); renumbered samples."""
    new_index = np.cumsum(keep) - 1  # old sample → position among kept samples
    inside = events[(events.t >= 0) & (events.t < cfg.window_hours)]
    inside = inside[inside["sample"].isin(np.flatnonzero(keep).tolist())]
    df = inside.compute()
    return pd.DataFrame({
        "sample": new_index[df["sample"].to_numpy()],
        "bin": np.floor(df["t"].to_numpy()).astype(np.int16),
        "feature": df["feature"].to_numpy(np.int16),
        "value": df["value"].to_numpy(np.float64),
    })


def bin_means(windowed: pd.DataFrame, n_samples: int, n_time: int, n_features: int) -> np.ndarray:
    """Mean of the events in each (sample, bin, feature) cell; NaN where there was none."""
    cell = (windowed["sample"].to_numpy(np.int64) * n_time + windowed["bin"].to_numpy()) * n_features \
        + windowed["feature"].to_numpy()
    size = n_samples * n_time * n_features
    sums = np.bincount(cell, weights=windowed["value"].to_numpy(), minlength=size)
    counts = np.bincount(cell, minlength=size)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return means.reshape(n_samples, n_time, n_features)


def feature_stats(windowed: pd.DataFrame, n_features: int, cfg: PrepareConfig) -> dict[str, np.ndarray]:
    """p_lo, median, p_hi per feature over all kept event values inside the kept samples' windows."""
    qs = [cfg.lower_percentile, 50.0, cfg.upper_percentile]
    stats = np.full((3, n_features), np.nan)
    for k, values in windowed.groupby("feature")["value"]:
        stats[:, k] = np.percentile(values.to_numpy(), qs)  # numpy's default: linear interpolation
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


def impute_and_scale(means: np.ndarray, stats: dict[str, np.ndarray]) -> np.ndarray:
    """Interpolate, fill never-observed features with the median, winsorize to [p5, p95], scale to [0, 1].

    A feature with p95 == p5 (a constant) scales to 0. Returns float32.
    """
    lo, med, hi = stats["p5"], stats["median"], stats["p95"]
    width = np.where(hi > lo, hi - lo, 1.0)
    x = np.empty(means.shape, dtype=np.float32)
    for start in range(0, len(means), BLOCK):
        block = interpolate(means[start:start + BLOCK])
        block = np.where(np.isnan(block), med, block)
        block = np.clip(block, lo, hi)
        x[start:start + BLOCK] = np.clip((block - lo) / width, 0.0, 1.0)
    return x
