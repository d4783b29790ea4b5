"""The attack's targets — the correctly classified samples of a run's test set (or of all samples) —
and what the attack reads of them (their input, and their record for the record space).

Shared by `tune-attack` (which draws its fixed subset from them) and `attack`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from pipeline.attack import spaces
from pipeline.attack.spaces.base import Space
from pipeline.checks.limits import Limits
from pipeline.config import AttackParams, ModelParams
from pipeline.data.record import feature_stats
from pipeline.errors import InputError
from pipeline.infra import layout
from pipeline.infra.rundir import RunDir
from pipeline.model import load_model, training


def select_targets(run_dir: RunDir, scope: str, model_params: ModelParams | None = None) -> pd.DataFrame:
    """Correctly classified samples (of the test set, or all): columns dataset_index, y, pred (the model as
    `model_params`, this command's [model], names it: see load_model)."""
    data = training.load_data(run_dir.path)
    split = run_dir.split()
    candidates = np.array(sorted(split["test"])) if scope == "test" else np.arange(len(data.y))
    if len(candidates) and candidates[-1] >= len(data.y):  # a split of another dataset.zarr: not an IndexError
        raise InputError(f"{run_dir / layout.SPLIT}: its test set names sample {candidates[-1]}, dataset.zarr holds "
                         f"{len(data.y)} (the split was made for another dataset); redo the split and the stages "
                         "after it with `python -m pipeline run --force`, or use a new run directory")
    model = load_model(run_dir.path, model=model_params)
    with torch.no_grad():
        pred = np.concatenate([model(data.x[candidates[i:i + 1024]]).argmax(1).numpy()
                               for i in range(0, len(candidates), 1024)])
    correct = pred == data.y[candidates]
    return pd.DataFrame({"dataset_index": candidates[correct], "y": data.y[candidates][correct],
                         "pred": pred[correct]})


@dataclass
class TargetInputs:
    """What the attack reads of dataset.zarr for a set of samples: the model's input x and its mask,
    the recorded values (what the record space edits; None in a store made before the record was kept) and the
    feature statistics."""

    x: np.ndarray  # float32 (n, time, feature)
    mask: np.ndarray  # bool (n, time, feature)
    value: np.ndarray | None  # float64 (n, time, feature), NaN where not recorded; None: store without it
    stats: dict[str, np.ndarray]
    checks: Limits | None = None  # record space: search the sparsest flip these checks do not catch

    @classmethod
    def load(cls, run_dir: RunDir, index: np.ndarray, space: str) -> TargetInputs:
        """Samples `index` of the run's dataset.zarr, as the attack space named `space` reads them (only the
        chunks holding them are read: a batch's inputs, not the whole store)."""
        ds = run_dir.dataset()
        spaces.get(space).check_dataset(ds, run_dir / layout.DATASET)
        rows = ds.isel(sample=np.asarray(index, dtype=np.int64))
        return cls(np.ascontiguousarray(rows.x.values, dtype=np.float32), rows["mask"].values,
                   rows["value"].values if "value" in ds else None, feature_stats(ds))

    def space(self, params: AttackParams, device: torch.device, rows: slice | None = None) -> Space:
        """The attack's search space (`params.space`) for samples `rows` (default: all)."""
        return spaces.get(params.space).build(self, params, device, slice(None) if rows is None else rows)
