"""Range and delta checks on the record, as a laboratory or a charting system screens a result before
anyone acts on it (docs/methods.md §11).

A recorded value of a feature (clinical units) is flagged by
- the **range check** when it lies outside [low, high] of its feature;
- the **delta check** when its change from the previous recorded value of the same feature in the stay,
  or the next recorded value's change from it, lies outside [delta_low, delta_high] — optionally only
  for neighbours at most `within` hours away.

By default the limits are quantiles of the training records (:func:`derive`): the range the [0.1 %,
99.9 %] quantiles of the recorded values, the delta the [0.5 %, 99.5 %] quantiles of the change between
consecutive recorded cells of one stay. Everything works on the record as dataset.zarr keeps it: `value`
(sample, time, feature) float64, NaN where nothing was recorded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RANGE_QUANTILES = (0.001, 0.999)
DELTA_QUANTILES = (0.005, 0.995)


@dataclass(frozen=True)
class Limits:
    """Per feature (float64 arrays of one value per feature), in the feature's clinical unit."""

    low: np.ndarray
    high: np.ndarray
    delta_low: np.ndarray  # the smallest change allowed (negative: a fall)
    delta_high: np.ndarray
    within: float | None = None  # hours: a neighbour further away is not compared (None: any in the window)
    # a change of more than this percent of the earlier value is flagged too (inf: no such limit); a
    # laboratory's table may set it (creatinine ±60%), the derived limits do not
    delta_percent: np.ndarray | None = None

    @property
    def percent(self) -> np.ndarray:
        return np.full(len(self.low), np.inf) if self.delta_percent is None else self.delta_percent

    def of(self, feature: int) -> Limits:
        """The limits of one feature (to check one column of a record: a feature's checks see its series only)."""
        one = slice(feature, feature + 1)
        return Limits(self.low[one], self.high[one], self.delta_low[one], self.delta_high[one], self.within,
                      self.percent[one])


def neighbours(recorded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per cell (sample, time, feature): the time of the previous recorded cell of its series strictly
    before it (−1: none) and of the next strictly after it (n_time: none)."""
    n_time = recorded.shape[1]
    t = np.arange(n_time).reshape(1, -1, 1)
    upto = np.maximum.accumulate(np.where(recorded, t, -1), axis=1)
    prev = np.concatenate([np.full_like(upto[:, :1], -1), upto[:, :-1]], axis=1)
    after = np.flip(np.minimum.accumulate(np.flip(np.where(recorded, t, n_time), axis=1), axis=1), axis=1)
    nxt = np.concatenate([after[:, 1:], np.full_like(after[:, :1], n_time)], axis=1)
    return prev, nxt


def changes(value: np.ndarray) -> list[np.ndarray]:
    """Per feature, the change from each recorded cell to the next recorded cell of the same stay."""
    recorded = ~np.isnan(value)
    _, nxt = neighbours(recorded)
    has_next = recorded & (nxt < value.shape[1])
    following = np.take_along_axis(value, np.minimum(nxt, value.shape[1] - 1), axis=1)
    step = np.where(has_next, following - value, np.nan)
    return [s[~np.isnan(s)] for s in np.moveaxis(step, 2, 0).reshape(value.shape[2], -1)]


def derive(value: np.ndarray, range_quantiles: tuple[float, float] = RANGE_QUANTILES,
           delta_quantiles: tuple[float, float] = DELTA_QUANTILES, within: float | None = None) -> Limits:
    """Limits from the records `value` (the training samples'): the quantiles of the recorded values and
    of the changes between consecutive recorded cells, per feature. A feature never recorded (or never
    twice in a stay) gets no limit there (±inf)."""
    per_feature = np.moveaxis(value, 2, 0).reshape(value.shape[2], -1)
    low, high = (np.array([np.quantile(v[~np.isnan(v)], q) if (~np.isnan(v)).any() else np.inf * (2 * i - 1)
                           for v in per_feature]) for i, q in enumerate(range_quantiles))
    steps = changes(value)
    delta_low, delta_high = (np.array([np.quantile(s, q) if s.size else np.inf * (2 * i - 1) for s in steps])
                             for i, q in enumerate(delta_quantiles))
    # a few changes all one way must not give a limit that flags an unchanged value
    delta_low, delta_high = np.minimum(delta_low, 0.0), np.maximum(delta_high, 0.0)
    return Limits(low, high, delta_low, delta_high, within)


def compared(value: np.ndarray, limits: Limits) -> tuple[np.ndarray, ...]:
    """Per cell (sample, time, feature): the previous and the next recorded value of its series, and whether
    the delta check compares it with each (there is one, within the time window)."""
    prev, nxt = neighbours(~np.isnan(value))
    n_time = value.shape[1]
    t = np.arange(n_time).reshape(1, -1, 1)
    before = np.take_along_axis(value, np.maximum(prev, 0), axis=1)
    after = np.take_along_axis(value, np.minimum(nxt, n_time - 1), axis=1)
    near_prev, near_next = prev >= 0, nxt < n_time
    if limits.within is not None:
        near_prev &= t - prev <= limits.within
        near_next &= nxt - t <= limits.within
    return before, after, near_prev, near_next


def flags(value: np.ndarray, limits: Limits) -> dict[str, np.ndarray]:
    """Which recorded cells (sample, time, feature) each check flags: {"range": bool, "delta": bool};
    False where nothing was recorded."""
    recorded = ~np.isnan(value)
    outside = recorded & ((value < limits.low) | (value > limits.high))
    before, after, near_prev, near_next = compared(value, limits)
    share = limits.percent / 100
    relative = np.isfinite(share)

    def beyond(change: np.ndarray, earlier: np.ndarray) -> np.ndarray:
        too_far = relative & (np.abs(change) > np.where(relative, share, 0.0) * np.abs(earlier))
        return (change < limits.delta_low) | (change > limits.delta_high) | too_far

    jump = recorded & ((near_prev & beyond(value - before, before)) | (near_next & beyond(after - value, value)))
    return {"range": outside, "delta": jump}


def false_alarm_rate(value: np.ndarray, limits: Limits) -> dict[str, float]:
    """Per check (and any), the share of the recorded values of clean records that it flags."""
    recorded = ~np.isnan(value)
    n = max(int(recorded.sum()), 1)
    found = flags(value, limits)
    found["any"] = found["range"] | found["delta"]
    return {k: float(v.sum() / n) for k, v in found.items()}


def bounds(value: np.ndarray, limits: Limits) -> tuple[np.ndarray, np.ndarray]:
    """Per recorded cell (sample, time, feature): the values [lo, hi] it could take that no check flags, the
    rest of the record as it stands — its feature's range intersected with the delta limits around the
    previous and the next recorded value of its series (each one's own delta pair with it included: the
    same change). NaN where nothing was recorded."""
    recorded = ~np.isnan(value)
    before, after, near_prev, near_next = compared(value, limits)
    lo = np.broadcast_to(limits.low, value.shape).copy()
    hi = np.broadcast_to(limits.high, value.shape).copy()
    lo = np.maximum(lo, np.where(near_prev, before + limits.delta_low, -np.inf))
    hi = np.minimum(hi, np.where(near_prev, before + limits.delta_high, np.inf))
    lo = np.maximum(lo, np.where(near_next, after - limits.delta_high, -np.inf))
    hi = np.minimum(hi, np.where(near_next, after - limits.delta_low, np.inf))
    share = limits.percent / 100  # |v − prev| ≤ share·|prev| and |next − v| ≤ share·|v| (values above 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        lo = np.maximum(lo, np.where(near_prev & np.isfinite(share), before * (1 - share), -np.inf))
        hi = np.minimum(hi, np.where(near_prev & np.isfinite(share), before * (1 + share), np.inf))
        lo = np.maximum(lo, np.where(near_next & np.isfinite(share), after / (1 + share), -np.inf))
        hi = np.minimum(hi, np.where(near_next & np.isfinite(share) & (share < 1), after / (1 - share), np.inf))
    return np.where(recorded, lo, np.nan), np.where(recorded, hi, np.nan)


def caught(original: np.ndarray, edited: np.ndarray, limits: Limits) -> dict[str, np.ndarray]:
    """Per sample (bool), whether each check (and any) raises an alarm on the edited record `edited` that
    the clean record `original` would not have: an edited value it flags, or a genuine value it flags only
    because of an edit (its neighbour changed, or was lost)."""
    changed = (original != edited) & ~(np.isnan(original) & np.isnan(edited))
    before, after = flags(original, limits), flags(edited, limits)
    alarms = {k: (after[k] & (changed | ~before[k])).any(axis=(1, 2)) for k in after}
    alarms["any"] = alarms["range"] | alarms["delta"]
    return alarms
