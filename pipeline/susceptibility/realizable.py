"""Adversarial examples as edits of the record, and the proof that they are edits someone could make.

An example is realizable when writing its edit into the record — the recorded values only — and deriving
the model's input with the transform `prepare` uses (pipeline/data/record.py, the run's statistics) still flips
the prediction. How an example is written into the record is the space's wiring (pipeline/attack/wiring/):
for a record-space run it is the example itself, re-derived in numpy; for a tensor-space run it keeps
only the changes of recorded cells (a change of an imputed cell is no edit of the record) and lets the
imputed cells follow, as `prepare` would.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import xarray as xr

from pipeline.attack import wiring
from pipeline.attack.core import margin
from pipeline.data.record import derive, feature_stats, plan, width
from pipeline.susceptibility.scores import direction_of

BATCH = 1024


def edited_values(attack: xr.Dataset, data: xr.Dataset, kind: str, rows: np.ndarray) -> np.ndarray:
    """The recorded values (clinical units, float64) of targets `rows` with their example of `kind`
    written in, as the store's space writes an example into the record."""
    return wiring.of(attack).edited_values(attack, data, kind, rows)


def rederived_flips(attack: xr.Dataset, data: xr.Dataset, model: torch.nn.Module, kind: str) -> np.ndarray:
    """Per target (bool): its example of `kind` was found and still flips the prediction once its record
    edit is re-derived into the model's input by :func:`pipeline.data.record.derive`."""
    found = attack.found.sel(kind=kind).values
    rows = np.flatnonzero(found)
    stats = feature_stats(data)
    flips = np.zeros(len(found), bool)
    for b in range(0, len(rows), BATCH):
        chunk = rows[b:b + BATCH]
        mask = data["mask"].values[attack.dataset_index.values[chunk]]
        x = derive(edited_values(attack, data, kind, chunk), mask, stats)
        with torch.no_grad():
            logits = model(torch.from_numpy(x))
        target = torch.from_numpy(attack.y.values[chunk].astype(np.int64))
        flips[chunk] = (margin(logits, target) > 0).numpy()
    return flips


def imputed_share(attack: xr.Dataset, data: xr.Dataset, kind: str, direction: str) -> float:
    """Of all cells the found examples of `kind` and `direction` change, the share that were never
    recorded (imputed by prepare)."""
    found = attack.found.sel(kind=kind).values & (direction_of(attack.pred).values == direction)
    changed = attack.perturbation.sel(kind=kind).values[found] != 0
    recorded = data["mask"].values[attack.dataset_index.values[found]]
    total = int(changed.sum())
    return float((changed & ~recorded).sum() / total) if total else float("nan")


def record_edits(attack: xr.Dataset, data: xr.Dataset, kind: str = "best") -> pd.DataFrame:
    """Every edited recorded value of the found examples of a record-space run, one row each: the hour
    it was recorded, before → after in clinical units, and the hours of the model's input it reaches
    (interpolated or carried from it)."""
    found = attack.found.sel(kind=kind).values
    delta = attack["edit"].sel(kind=kind).values
    sample, hour, feature = np.nonzero(delta * found[:, None, None])
    index = attack.dataset_index.values[sample]
    stats = feature_stats(data)
    before = data["value"].values[index, hour, feature]
    after = before + delta[sample, hour, feature].astype(np.float64) * width(stats)[feature]
    reach_from, reach_to = _reach(data["mask"].values[index], hour, feature)
    return pd.DataFrame({
        "sample": sample, "hadm_id": data.hadm_id.values[index], "direction": direction_of(attack.pred).values[sample],
        "feature": data.feature.values[feature], "hour": hour, "unit": data["unit"].values[feature],
        "events": data["count"].values[index, hour, feature], "before": before, "after": after,
        "edit_scaled": delta[sample, hour, feature], "reaches_from": reach_from, "reaches_to": reach_to})


def _reach(mask: np.ndarray, hour: np.ndarray, feature: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For the recorded cell (hour, feature) of each row's sample: the first and last hour whose input
    takes part of its value (itself, the hours interpolated towards it, the edges carried from it)."""
    if len(hour) == 0:
        return np.zeros(0, int), np.zeros(0, int)
    p = plan(mask)
    rows = np.arange(len(hour))
    prev = p.prev[rows, :, feature]  # (rows, time)
    nxt = p.next[rows, :, feature]
    w = p.weight[rows, :, feature]
    uses = ((prev == hour[:, None]) & (w < 1)) | ((nxt == hour[:, None]) & (w > 0))
    uses[rows, hour] = True
    t = np.arange(mask.shape[1])
    return np.where(uses, t, mask.shape[1]).min(axis=1), np.where(uses, t, -1).max(axis=1)
