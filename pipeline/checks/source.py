"""Which limits a run's checks use (docs/methods.md §11): a laboratory's table (`[checks] limits`), or limits
derived from the training records — this run's, or, when its dataset was prepared with
``prepare.stats_from``, those of the trained run whose statistics it took: the limits are frozen with the
model, as the statistics are. Never the test set's: the attack's targets are drawn from it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from pipeline.checks import table
from pipeline.checks.limits import Limits, derive
from pipeline.config import ChecksConfig
from pipeline.errors import InputError
from pipeline.infra import layout
from pipeline.infra.rundir import RunDir
from pipeline.model.training import non_test_indices
from pipeline.options import ConfigError

log = logging.getLogger(__name__)


def limits_for(checks: ChecksConfig, run_dir: RunDir) -> tuple[Limits, dict]:
    """The limits of the run's checks and where they come from (a JSON-able record for the stores' attrs)."""
    if checks.limits:
        limits = table.load(checks.limits)
        return limits, {"source": "table", "table": str(checks.limits)}
    within = checks.within_hours or None
    quantiles = {"range_quantiles": [checks.range_tail, 1 - checks.range_tail],
                 "delta_quantiles": [checks.delta_tail, 1 - checks.delta_tail], "within_hours": within}
    frozen = run_dir.dataset().attrs.get("stats_from", "")
    trained = trained_run(frozen) if frozen else run_dir
    value = training_records(trained)
    limits = derive(value, tuple(quantiles["range_quantiles"]), tuple(quantiles["delta_quantiles"]), within)
    log.info("checks: limits derived from the %d training records of %s", len(value), trained.path)
    # "this run" rather than its path: a run directory moved or copied (or run inside the image) records the same
    return limits, {"source": "training records", "run": str(trained.path) if frozen else "this run",
                    "training_records": len(value), **quantiles}


def trained_run(stats_from: str) -> RunDir:
    """The run directory a dataset's `prepare.stats_from` store belongs to (its parent), which must hold the
    split its model was trained on."""
    where = f"dataset.zarr's stats_from = {stats_from!r}"
    store = Path(stats_from)
    if store.name != layout.DATASET or not (store.parent / layout.SPLIT).is_file():
        raise ConfigError(f"{where}: the checks' limits are frozen with the model, but that store is not the "
                          f"{layout.DATASET} of a run directory with a {layout.SPLIT} (the trained run): give "
                          "the trained run's dataset.zarr, or a limits table ([checks] limits)")
    return RunDir(store.parent)


def training_records(run: RunDir) -> np.ndarray:
    """The recorded values (sample, time, feature; NaN: none) of the run's non-test samples."""
    ds = run.dataset()
    if "value" not in ds:
        raise InputError(f"{run / layout.DATASET} holds no recorded values (made before the record was kept): "
                         "run `prepare --force`")
    train = non_test_indices(run.split())
    if len(train) and (train[-1] >= ds.sizes["sample"] or train[0] < 0):
        raise InputError(f"{run / layout.SPLIT}: names sample {train[-1]}, {run / layout.DATASET} holds "
                         f"{ds.sizes['sample']} (the split of another dataset)")
    return ds["value"].isel(sample=train).values
