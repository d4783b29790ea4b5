"""The error model: what a data-entry error does to one recorded value (docs/methods.md §9).

A cell of the record is the mean v of its `count` events that hour. An error is made on one event,
whose value is taken to be v (exact when the hour holds one event, as most lab hours do): the typed
value becomes e, and the cell's mean moves to v + (e − v) / count. The kinds of slip and the values each
types are registered functions (pipeline/error_kinds.py: decimal, transpose, unit, delete).

`prepare` keeps an event only when lo < e ≤ hi; an erroneous value outside that range is dropped, as
`prepare` would drop it: the cell loses the event, so with a single event it is no longer recorded and
is imputed again; with several, the others keep its mean. A deletion does the same.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.error_kinds import KINDS
from pipeline.features import FEATURES, Feature

KIND_CODE = {kind: code for code, kind in enumerate(KINDS)}


def erroneous_values(feature: Feature, v: float, kinds: tuple[str, ...] | list[str]) -> list[tuple[str, float]]:
    """(kind, typed value) of every error of `kinds` on an event of value `v` of `feature`; a deletion
    has NaN (nothing is typed). Values equal to `v` (no change) are left out, and repeats keep the first kind."""
    found = [(kind, e) for kind in kinds for e in KINDS[kind](feature, v)]
    unique, seen = [], {round(v, 9)}  # the value itself is no error
    for kind, e in found:
        if e != e or round(e, 9) not in seen:  # NaN: the deletion, never a repeat
            seen.add(round(e, 9))
            unique.append((kind, e))
    return unique


def plausible(feature: Feature, e: float) -> bool:
    """Whether `prepare` keeps an event of value `e` (lo < e ≤ hi)."""
    return feature.lo < e <= feature.hi


def mean_after(feature: Feature, v: float, e: float, n: int) -> float | None:
    """The mean of a cell of `n` events of mean `v` once one of them is typed as `e` (NaN: deleted): the new
    mean; NaN when the cell loses its only event; None when nothing changes (an event dropped among several,
    whose others keep the mean)."""
    if e == e and plausible(feature, e):
        return v + (e - v) / n
    return float("nan") if n == 1 else None


@dataclass(frozen=True)
class Candidates:
    """The single errors possible on a record, one row each: where, what, and the cell's new mean."""

    hour: np.ndarray  # int
    feature: np.ndarray  # int
    kind: np.ndarray  # int8, index into the error kinds (pipeline/error_kinds.py)
    recorded: np.ndarray  # float64: the cell's value before
    erroneous: np.ndarray  # float64: the typed value (NaN for a deletion)
    dropped: np.ndarray  # bool: prepare drops the erroneous event (out of range), or it was deleted
    after: np.ndarray  # float64: the cell's mean after the error; NaN: no longer recorded

    def __len__(self) -> int:
        return len(self.hour)


def candidates(value: np.ndarray, count: np.ndarray, kinds: tuple[str, ...] | list[str],
               skip: set[tuple[int, int]] = frozenset()) -> Candidates:
    """Every single error of `kinds` on the recorded cells of one record (`value` (time, feature), NaN where
    nothing was recorded; `count` events per cell), except on the cells in `skip` (already erroneous).
    An error that changes nothing (an out-of-range value among several events) is left out."""
    rows = []
    for hour, f in zip(*np.nonzero(~np.isnan(value)), strict=True):
        if (int(hour), int(f)) in skip:
            continue
        feature, v, n = FEATURES[f], float(value[hour, f]), max(int(count[hour, f]), 1)
        for kind, e in erroneous_values(feature, v, kinds):
            after = mean_after(feature, v, e, n)
            if after is not None:
                rows.append((hour, f, KIND_CODE[kind], v, e, not (e == e and plausible(feature, e)), after))
    if not rows:
        empty = np.zeros(0)
        return Candidates(empty.astype(int), empty.astype(int), empty.astype(np.int8), empty, empty,
                          empty.astype(bool), empty)
    hour, feature, kind, recorded, erroneous, dropped, after = map(np.array, zip(*rows, strict=True))
    return Candidates(hour, feature, kind.astype(np.int8), recorded.astype(np.float64),
                      erroneous.astype(np.float64), dropped.astype(bool), after.astype(np.float64))


def apply(value: np.ndarray, count: np.ndarray, hour: int, feature: int, after: float) -> tuple[np.ndarray, np.ndarray]:
    """The record (value, count) with cell (hour, feature) set to `after` (NaN: its event is gone)."""
    value, count = value.copy(), count.copy()
    value[hour, feature] = after
    if after != after:
        count[hour, feature] = 0
    return value, count
