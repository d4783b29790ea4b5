"""Stage `errors`: for every correctly classified target, the fewest plausible data-entry errors that flip
the model's prediction (docs/methods.md §9), one array task per shard of targets → ``errors.zarr``.

A stage of its own rather than a mode of `attack`: it answers another question (how many real errors,
not how small a change), shares nothing of the attack's optimizer, store layout or tuning, and runs in
minutes on a CPU. Each shard keeps its finished targets in ``errors-shards/shard-K.json`` and resumes
from them after a requeue; the driver writes the store once every shard is done.

errors.zarr (dims sample, error): per target its `dataset_index`, `y`, `flipped`, `n_errors` (of the
flipping set, or of the set that came closest), the clean margin `margin0` and the records it cost
(`passes`); per error its `hour`, `feature`, `kind`, the `recorded` value, the `erroneous` value as
typed, whether `prepare` `dropped` it, and the `margin` Z_o − Z_t after it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil

import numpy as np
import xarray as xr

from pipeline.attack.core import Margins
from pipeline.attack.fewest_errors import ERROR_FIELDS, fewest_errors
from pipeline.attack.shards import shard_ranges
from pipeline.attack.targets import select_targets
from pipeline.attack.undetected import unflagged_errors
from pipeline.checks import table
from pipeline.checks.limits import Limits
from pipeline.checks.source import limits_for
from pipeline.config import ERROR_KINDS, ConfigError, ModelParams, PipelineConfig
from pipeline.data.record import feature_stats
from pipeline.errors import InputError, blaming
from pipeline.features import FEATURES, NAMES
from pipeline.infra import cf, layout, rundir
from pipeline.infra.checkpoint import Checkpoint
from pipeline.infra.launch import run_array
from pipeline.infra.rundir import RunDir
from pipeline.model import load_model, training

log = logging.getLogger(__name__)

SAVE_EVERY = 16  # targets between two saves of a shard's progress


def errors_shard(run_dir: str, shard: int, index: list[int], y: list[int], params: dict, workers: int = 1,
                 model_params: ModelParams | None = None, checks: Limits | None = None) -> list:
    """One shard (a task): search each of its targets in turn, resuming after a requeue; with `checks`, each
    target's fewest errors that no check flags too (pipeline/attack/undetected.py)."""
    training.set_threads(workers)
    run = RunDir(run_dir)
    key = {"index": index, "params": params, "weights": run.model_record()["weights_sha256"],
           "inputs": run.fingerprints(layout.DATASET),
           "checks": None if checks is None else [np.asarray(v).tolist() for v in dataclasses.astuple(checks)]}
    checkpoint = Checkpoint(run.shard_progress("errors", shard), key=key)
    rows = (checkpoint.load() or {"rows": []})["rows"]
    ds = run.dataset()
    mine = ds[["value", "count"]].isel(sample=index)  # this shard's records only, not the whole cohort's
    stats, value, count = feature_stats(ds), mine["value"].values, mine["count"].values
    margins = Margins(load_model(run.path, training.device(), model_params), params["batch_size"])
    for i in range(len(rows), len(index)):
        found = fewest_errors(margins, value[i], count[i], y[i], stats, params["kinds"], params["max_errors"],
                              params["beam"])
        rows.append(dataclasses.asdict(found))
        if checks is not None:
            rows[-1]["undetected"] = dataclasses.asdict(fewest_errors(
                margins, value[i], count[i], y[i], stats, params["kinds"], params["max_errors"], params["beam"],
                unflagged_errors(checks)))
        if len(rows) % SAVE_EVERY == 0 or len(rows) == len(index):
            with blaming(checkpoint.path):
                checkpoint.save({"rows": rows})
            log.info("shard %d: %d of %d targets, %d flipped", shard, len(rows), len(index),
                     sum(r["flipped"] for r in rows))
    return rows


def errors(cfg: PipelineConfig, run_dir: RunDir) -> None:
    e = cfg.errors
    ds = run_dir.dataset()
    if "value" not in ds:
        raise InputError(f"{run_dir / layout.DATASET} holds no recorded values (made before the record was kept): "
                         "run `prepare --force`")
    targets = select_targets(run_dir, e.targets, cfg.model)
    if targets.empty:
        raise ConfigError(f"[errors] targets = {e.targets!r}: no correctly classified sample to search")
    params = {"kinds": list(e.kinds), "max_errors": e.max_errors, "beam": e.beam, "batch_size": e.batch_size}
    index, y = targets.dataset_index.to_numpy(), targets.y.to_numpy().astype(int)
    limits, provenance = limits_for(cfg.checks, run_dir)
    searched = limits if cfg.checks.search else None
    calls = [(str(run_dir.path), k, index[lo:hi].tolist(), y[lo:hi].tolist(), params, cfg.run.workers, cfg.model,
              searched) for k, (lo, hi) in enumerate(shard_ranges(len(index), e.shards, 1)) if hi > lo]
    log.info("errors: %d targets (%s set), %d shard(s), kinds %s, at most %d errors, beam %d", len(index),
             e.targets, len(calls), ", ".join(e.kinds), e.max_errors, e.beam)
    rows = [row for shard in run_array(cfg, run_dir, "errors", errors_shard, calls) for row in shard]
    store = to_store(rows, index, y, ds.hadm_id.values[index], e.max_errors, {
        **params, "targets": e.targets, "seed": cfg.run.seed,
        "weights_sha256": run_dir.model_record()["weights_sha256"],
        "inputs": run_dir.data_fingerprints(), "checks": {**provenance, "search": cfg.checks.search}}, limits)
    with rundir.atomic_path(run_dir / layout.ERRORS) as tmp:
        store.to_zarr(tmp, zarr_format=3, consolidated=False)
    shutil.rmtree(run_dir.shards_dir("errors"), ignore_errors=True)
    flipped, n_errors = store.flipped.values, store.n_errors.values
    for k in range(1, e.max_errors + 1):
        log.info("errors: %.1f%% of %d targets flipped by ≤ %d error(s)%s", 100 * np.mean(flipped & (n_errors <= k)),
                 len(flipped), k, "; no check flags %.1f%%" % (100 * np.mean(
                     store.undetected_flipped.values & (store.undetected_n_errors.values <= k)))
                 if "undetected_flipped" in store else "")


def to_store(rows: list[dict], index: np.ndarray, y: np.ndarray, hadm_id: np.ndarray, max_errors: int,
             attrs: dict, limits: Limits | None = None) -> xr.Dataset:
    """errors.zarr from the shards' rows (one per target, in target order), with the checks' `limits` and the
    check-aware search's results when the rows hold them."""
    store = searched_store(rows, index, y, hadm_id, max_errors, attrs)
    if limits is not None:
        store = store.assign({name: xr.Variable(*v) for name, v in table.variables(limits, "check_feature").items()})
        store = store.assign_coords(check_feature=("check_feature", np.array(NAMES, dtype=object),
                                                   {"long_name": "the feature a check's limit is for"}))
    if rows and "undetected" in rows[0]:
        undetected = searched_store([r["undetected"] for r in rows], index, y, hadm_id, max_errors, attrs)
        for name in (*ERROR_FIELDS, "flipped", "n_errors", "passes"):
            var = undetected[name]
            store["undetected_" + name] = var.assign_attrs(
                long_name="the search restricted to errors no check flags (docs/methods.md §11): "
                          + var.attrs["long_name"])
    return store


def searched_store(rows: list[dict], index: np.ndarray, y: np.ndarray, hadm_id: np.ndarray, max_errors: int,
                   attrs: dict) -> xr.Dataset:
    """errors.zarr of one search's rows."""
    n = len(rows)
    fill = {"hour": -1, "feature": -1, "kind": -1, "recorded": np.nan, "erroneous": np.nan, "dropped": False,
            "margin": np.nan}
    dtype = {"hour": np.int16, "feature": np.int16, "kind": np.int8, "recorded": np.float64,
             "erroneous": np.float64, "dropped": bool, "margin": np.float64}
    per_error = {name: np.full((n, max_errors), fill[name], dtype=dtype[name]) for name in ERROR_FIELDS}
    for i, row in enumerate(rows):
        for j, error in enumerate(row["errors"]):
            for name in ERROR_FIELDS:
                per_error[name][i, j] = error[name]
    one = cf.DIMENSIONLESS
    described = {
        "hour": {"long_name": "hour of the erroneous entry (-1: none)", "units": cf.HOURS},
        "feature": {"long_name": "feature of the erroneous entry (-1: none)", "flag_values": list(range(len(NAMES))),
                    "flag_meanings": " ".join(NAMES)},
        "kind": {"long_name": "kind of error (-1: none)", "flag_values": list(range(len(ERROR_KINDS))),
                 "flag_meanings": " ".join(ERROR_KINDS)},
        "recorded": {"long_name": "the cell's recorded value before the error, in the feature's unit "
                                  "(features.py)"},
        "erroneous": {"long_name": "the value as typed by mistake, in the feature's unit (NaN: deleted)"},
        "dropped": {"long_name": "prepare drops the erroneous event (out of the plausible range, or deleted)"},
        "margin": {"long_name": "Z_o - Z_t after this error (positive: flipped)", "units": one},
    }
    data = {name: (("sample", "error"), per_error[name], described[name]) for name in ERROR_FIELDS}
    data |= {
        "dataset_index": ("sample", index.astype(np.int64), {"long_name": "sample index in dataset.zarr"}),
        "hadm_id": ("sample", hadm_id.astype(np.int64), {"long_name": "hospital admission id"}),
        "y": ("sample", y.astype(np.int8), {"long_name": "true label: in-hospital mortality", **cf.CLASSES}),
        "flipped": ("sample", np.array([r["flipped"] for r in rows], bool),
                    {"long_name": f"some set of at most {max_errors} errors flips the prediction"}),
        "n_errors": ("sample", np.array([len(r["errors"]) for r in rows], np.int8),
                     {"long_name": "errors of the flipping set (not flipped: of the set that came closest)",
                      "units": one}),
        "margin0": ("sample", np.array([r["margin0"] for r in rows]), {"long_name": "Z_o - Z_t of the clean record",
                                                                        "units": one}),
        "passes": ("sample", np.array([r["passes"] for r in rows], np.int64),
                   {"long_name": "records passed through the model in the search", "units": one}),
    }
    coords = {"sample": ("sample", np.arange(n), {"long_name": "target"}),
              "error": ("error", np.arange(max_errors), {"long_name": "error, in the order made"})}
    error_model = {f.name: {"decimals": f.decimals, "slips": [dataclasses.asdict(s) for s in f.slips], "lo": f.lo,
                            "hi": f.hi} for f in FEATURES}
    return xr.Dataset(data, coords=coords, attrs={**cf.GLOBAL, **{k: json.dumps(v) if isinstance(v, dict) else v
                                                                   for k, v in attrs.items()},
                                                   "error_model": json.dumps(error_model)})
