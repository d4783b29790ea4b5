"""Robust training (docs/methods.md §2.3): a share of each training batch is trained on an edited record, its
label kept ([model] robust, robust_share, robust_edits).

- `errors`: `robust_edits` plausible data-entry errors (the error model, pipeline/data/entry_errors.py), each
  on a recorded cell drawn at random, of a kind and value drawn at random among those the cell allows;
- `adversarial`: the `robust_edits` recorded cells whose move to an edge of the record space's box (the
  feature's plausible range, where prepare keeps a value) raises the loss most by the gradient through the
  record transform, moved there: the one-edit threat the exact scan measures, found in one gradient step.

Either way the model's input is derived again from the edited record with the transform prepare uses
(pipeline/data/record.py), so the model trains on inputs a real record could give. Draws come from a
generator of their own (seeded), so the class-balanced sampler draws the same batches as without it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pipeline.data.entry_errors import apply, erroneous_values, mean_after
from pipeline.data.record import Transform, derive, derive_record
from pipeline.error_kinds import KINDS
from pipeline.features import FEATURES

LO = np.array([f.lo for f in FEATURES])
HI = np.array([f.hi for f in FEATURES])
INSIDE = 1e-6  # the edges sit this share of the range inside it, as the record space's box (EDGE there)


@dataclass(frozen=True)
class Records:
    """What robust training edits: the recorded values and event counts (dataset.zarr `value`, `count`) and
    the feature statistics that derive the model's input from them."""

    value: np.ndarray  # float64 (n, time, feature), NaN where nothing was recorded
    count: np.ndarray  # int (n, time, feature)
    stats: dict[str, np.ndarray]


class Perturb:
    """Called on each training batch: the batch's input with a share of its samples' records edited."""

    def __init__(self, mode: str, share: float, edits: int, records: Records, seed: int):
        self.mode, self.share, self.edits, self.records = mode, share, edits, records
        self.rng = np.random.default_rng([seed, 0x5EED])  # apart from the sampler's generator

    def __call__(self, model: torch.nn.Module, index: np.ndarray, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        chosen = np.flatnonzero(self.rng.random(len(index)) < self.share)
        if not len(chosen):
            return xb
        rows = index[chosen]
        if self.mode == "errors":
            edited = np.stack([self.with_errors(r) for r in rows])
        else:
            edited = self.adversarial(model, rows, yb[chosen])
        xb = xb.clone()
        xb[torch.as_tensor(chosen)] = torch.from_numpy(edited).to(xb.device, xb.dtype)
        return xb

    def with_errors(self, row: int) -> np.ndarray:
        """The sample's input after `edits` random entry errors on distinct recorded cells (fewer when it
        has fewer recorded cells or a drawn cell allows no error)."""
        value, count = self.records.value[row], self.records.count[row]
        cells = np.argwhere(~np.isnan(value))
        for hour, f in cells[self.rng.permutation(len(cells))[:self.edits]]:
            v, n = float(value[hour, f]), max(int(count[hour, f]), 1)
            options = erroneous_values(FEATURES[f], v, list(KINDS))
            if not options:
                continue
            _, e = options[int(self.rng.integers(len(options)))]
            after = mean_after(FEATURES[f], v, e, n)
            if after is not None:
                value, count = apply(value, count, int(hour), int(f), after)
        return derive_record(value[None], self.records.stats)[0]

    def adversarial(self, model: torch.nn.Module, rows: np.ndarray, y: torch.Tensor) -> np.ndarray:
        """The samples' inputs after moving, per sample, the `edits` recorded cells of most first-order loss
        gain to the edge of the box their gradient points to (model in eval mode for the search: no dropout)."""
        value = self.records.value[rows]
        mask = ~np.isnan(value)
        device = next(model.parameters()).device
        v = torch.tensor(np.where(mask, value, 0.0), dtype=torch.float64, device=device, requires_grad=True)
        was_training = model.training
        model.eval()
        try:
            loss = torch.nn.functional.cross_entropy(model(Transform(mask, self.records.stats, device)(v)),
                                                     y.to(device), reduction="sum")
            (grad,) = torch.autograd.grad(loss, v)
        finally:
            model.train(was_training)
        g = grad.cpu().numpy()
        edge = np.where(g > 0, HI - INSIDE * (HI - LO), LO + INSIDE * (HI - LO))
        gain = np.where(mask & (g != 0), g * (edge - np.where(mask, value, 0.0)), -np.inf)
        flat = gain.reshape(len(rows), -1)
        k = min(self.edits, flat.shape[1])
        top = np.argpartition(-flat, k - 1, axis=1)[:, :k]
        edited = np.where(mask, value, 0.0).reshape(len(rows), -1)
        take = np.take_along_axis(flat, top, axis=1) > 0  # only moves that raise the loss
        picks = np.take_along_axis(edge.reshape(len(rows), -1), top, axis=1)
        np.put_along_axis(edited, top, np.where(take, picks, np.take_along_axis(edited, top, axis=1)), axis=1)
        return derive(edited.reshape(value.shape), mask, self.records.stats)
