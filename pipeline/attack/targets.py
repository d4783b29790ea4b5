"""The attack's targets — the correctly classified samples of a run's test set (or of all samples) —
and what the attack reads of them (their input, and their record for the record space).

Shared by `tune-attack` (which draws its fixed subset from them) and `attack`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from pipeline.attack.fewest_edits import Target
from pipeline.attack.l1 import RecordSpace, Space, tensor_space
from pipeline.config import AttackParams
from pipeline.data.record import Transform, feature_stats, width
from pipeline.errors import InputError
from pipeline.features import FEATURES
from pipeline.infra.rundir import RunDir
from pipeline.model import load_model, training


def select_targets(run_dir: RunDir, scope: str) -> pd.DataFrame:
    """Correctly classified samples (of the test set, or all): columns dataset_index, y, pred."""
    data = training.load_data(run_dir.path)
    split = run_dir.split()
    candidates = np.array(sorted(split["test"])) if scope == "test" else np.arange(len(data.y))
    model = load_model(run_dir.path)
    with torch.no_grad():
        pred = np.concatenate([model(data.x[candidates[i:i + 1024]]).argmax(1).numpy()
                               for i in range(0, len(candidates), 1024)])
    correct = pred == data.y[candidates]
    return pd.DataFrame({"dataset_index": candidates[correct], "y": data.y[candidates][correct],
                         "pred": pred[correct]})


@dataclass
class TargetInputs:
    """What the attack reads of dataset.zarr for a set of samples: the model's input x and its mask,
    and — for the record space — the recorded values and the feature statistics."""

    x: np.ndarray  # float32 (n, time, feature)
    mask: np.ndarray  # bool (n, time, feature)
    value: np.ndarray | None  # float64 (n, time, feature), NaN where not recorded; None: store without it
    stats: dict[str, np.ndarray]

    @classmethod
    def load(cls, run_dir: RunDir, index: np.ndarray, space: str) -> TargetInputs:
        ds = run_dir.dataset()
        if space == "record" and "value" not in ds:
            raise InputError(f"{run_dir / 'dataset.zarr'} holds no recorded values (made before the record was "
                             "kept): run `prepare --force` for attack.space = \"record\", or use attack.space=tensor")
        return cls(np.ascontiguousarray(ds.x.values[index], dtype=np.float32), ds["mask"].values[index],
                   ds["value"].values[index] if space == "record" else None,
                   feature_stats(ds))

    def targets(self, y: np.ndarray, rows: slice) -> list[Target]:
        """The record-space targets `rows` (of class y[rows]) for the fewest-edit search, with the box the
        attack uses (float32, as RecordSpace holds it)."""
        value, mask = self.value[rows], self.mask[rows]
        lower, upper = plausible_edits(value, mask, self.stats)
        return [Target(v, int(c), self.stats, lo, hi) for v, c, lo, hi in
                zip(value, y[rows], lower.astype(np.float32), upper.astype(np.float32), strict=True)]

    def space(self, params: AttackParams, device: torch.device, rows: slice | None = None) -> Space:
        """The attack's search space for samples `rows` (default: all): tensor (Sun et al.) or record (edits of
        recorded values)."""
        rows = slice(None) if rows is None else rows
        mask = self.mask[rows]
        if params.space == "tensor":
            return tensor_space(torch.from_numpy(self.x[rows]).to(device), torch.from_numpy(mask),
                                params.observed_only)
        value = self.value[rows]
        lower, upper = plausible_edits(value, mask, self.stats)
        as_tensor = lambda a, dtype=torch.float32: torch.as_tensor(np.array(a), dtype=dtype, device=device)  # noqa: E731
        return RecordSpace(as_tensor(np.where(mask, value, 0.0), torch.float64),
                           as_tensor(width(self.stats), torch.float64), torch.from_numpy(mask).to(device),
                           as_tensor(lower), as_tensor(upper), Transform(mask, self.stats, device))


# an edited value stays this share of the feature's range inside it: float32 rounding of the edit must
# never carry it onto the excluded lower end or past the upper one
EDGE = 1e-6


def plausible_edits(value: np.ndarray, mask: np.ndarray, stats: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per recorded cell, the range of δ (scaled units) that keeps v + δ·(p95 − p5) plausible — inside the
    feature's range filter lo < v ≤ hi, where prepare keeps it; 0 … 0 where nothing was recorded."""
    lo = np.array([f.lo for f in FEATURES])
    hi = np.array([f.hi for f in FEATURES])
    edge = EDGE * (hi - lo)
    v = np.nan_to_num(value)
    w = width(stats)
    lower = np.where(mask, np.minimum(((lo + edge) - v) / w, 0.0), 0.0)
    upper = np.where(mask, np.maximum(((hi - edge) - v) / w, 0.0), 0.0)
    return lower, upper
