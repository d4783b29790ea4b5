"""Stage `attack`: the L1 attack on every target, sharded by sample index, into one ``attack.zarr``.

Targets are the correctly classified samples of the test set (or of all samples). The driver
pre-allocates the store (dims sample = targets, kind = the space's kinds, time, feature, class), then
launches S array tasks; shard k attacks a contiguous range of targets (in record space each batch's L1
attack is followed by the fewest-edit searches, fewest_edits.py) whose boundaries are
multiples of the batch size (itself a multiple of the store's chunk along `sample`), so that shards
never share a chunk and their batches are the batches a single shard would run. A shard writes
only its own region, records every finished batch in ``attack-shards/shard-K.json`` and resumes
from there after a requeue. When every shard is done, the store is renamed to ``attack.zarr``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
from pathlib import Path

import dask.array as da
import numpy as np
import pandas as pd
import torch
import xarray as xr
import zarr
from tqdm.auto import tqdm

from pipeline.attack import spaces, wiring
from pipeline.attack.l1 import L1Attack
from pipeline.attack.spaces.base import Space
from pipeline.attack.targets import TargetInputs, select_targets
from pipeline.attack.wiring.base import Wiring
from pipeline.checks import table
from pipeline.checks.limits import Limits
from pipeline.checks.source import limits_for
from pipeline.config import AttackConfig, AttackParams, ConfigError, ModelParams, PipelineConfig
from pipeline.errors import blaming
from pipeline.features import NAMES
from pipeline.infra import cf, layout, rundir
from pipeline.infra.checkpoint import Checkpoint
from pipeline.infra.launch import run_array, tuned
from pipeline.infra.rundir import RunDir
from pipeline.model import load_model, training

log = logging.getLogger(__name__)

VARIABLES = ("perturbation", "found", "iteration", "margin", "lam", "logits")


def attack_params(cfg: PipelineConfig, run_dir: RunDir) -> tuple[AttackConfig, str]:
    """The config's [attack], with tune-attack's best values for the keys it tuned when it ran."""
    spaces.check(cfg.attack)
    return tuned(run_dir, "tune-attack", cfg.attack)


def shard_ranges(n: int, shards: int, unit: int) -> list[tuple[int, int]]:
    """`shards` contiguous ranges covering 0…n, boundaries on multiples of `unit` (some may be empty)."""
    units = -(-n // unit)
    edges = [min(n, round(k * units / shards) * unit) for k in range(shards + 1)]
    return [(edges[k], edges[k + 1]) for k in range(shards)]



def allocate(path: Path, targets: pd.DataFrame, n_time: int, chunk: int, attrs: dict,
             limits: Limits | None = None) -> None:
    """Create the store with its coordinates and empty variables (written later, region by region), and the
    checks' `limits` (record space)."""
    n, n_feat = len(targets), len(NAMES)
    rows = max(1, min(chunk, n))

    def empty(shape, dtype, fill):
        return da.full(shape, fill, dtype=dtype, chunks=(rows, *shape[1:]))

    one = cf.DIMENSIONLESS
    cells = ("sample", "kind", "time", "feature")
    wired = wiring.get(attrs["space"])
    k = len(wired.KINDS)
    ds = xr.Dataset(
        {**wired.variables(n, n_time, n_feat, empty), **(table.variables(limits) if limits is not None else {}),
         "perturbation": (cells, empty((n, k, n_time, n_feat), np.float32, 0.0),
                          {"long_name": wired.EFFECT, "units": one,
                           "description": "P in scaled [0, 1] units; × (p95 − p5) for clinical units"}),
         "found": (("sample", "kind"), empty((n, k), bool, False),
                   {"long_name": "an example of this kind was found (the prediction flipped)"}),
         "iteration": (("sample", "kind"), empty((n, k), np.int32, -1),
                       {"long_name": "proximal updates applied when the example was found (-1: none, or not "
                                     "an iterate of the L1 attack)", "units": one,
                        "description": "proximal updates applied when the L1 attack found the example; -1: no "
                                       "example, or one another search found (see `method`)"}),
         "margin": (("sample", "kind"), empty((n, k), np.float32, np.nan),
                    {"long_name": "logit margin Z_o − Z_t at the example (> 0: flipped; NaN: none)", "units": one,
                     "description": "Z_o − Z_t at the example (> 0: the prediction flipped); NaN: none"}),
         "lam": (("sample", "kind"), empty((n, k), np.float64, np.nan),
                 {"long_name": "L1 weight λ of the run that found the example (NaN: none, or not an "
                              "iterate of the L1 attack)", "units": one,
                  "description": "λ of the run that found the example (the λ search changes it per target)"}),
         "logits": (("sample", "kind", "class"), empty((n, k, 2), np.float32, np.nan),
                    {"long_name": "the model's logits at x + P, per class (NaN: no example)", "units": one})},
        coords={"sample": ("sample", np.arange(n), {"long_name": "target index (a correctly classified sample)"}),
                "dataset_index": ("sample", targets["dataset_index"].to_numpy(np.int64),
                                  {"long_name": "index of the target along dataset.zarr's sample"}),
                "y": ("sample", targets["y"].to_numpy(np.int8),
                      {"long_name": "true label: in-hospital mortality", **cf.CLASSES}),
                "pred": ("sample", targets["pred"].to_numpy(np.int8),
                         {"long_name": "the model's prediction before the attack (equals y)", **cf.CLASSES}),
                "kind": ("kind", np.array(wired.KINDS, dtype=object), wired.KIND),
                "time": ("time", np.arange(n_time), cf.TIME),
                "feature": ("feature", np.array(NAMES, dtype=object), cf.FEATURE),
                "class": ("class", np.arange(2), {"long_name": "class of the logit", **cf.CLASSES})},
        attrs=store_attrs(attrs))
    ds.to_zarr(path, mode="w", zarr_format=3, compute=False, consolidated=False)


def checks_of(cfg: PipelineConfig, run_dir: RunDir, space: str) -> tuple[Limits | None, dict]:
    """The checks' limits and their provenance (with the limits' own sha256 and whether the searches ran):
    the record space's; a tensor-space attack changes no recorded value the checks could see."""
    if not wiring.get(space).CHECKS:
        return None, {}
    limits, provenance = limits_for(cfg.checks, run_dir)
    digest = hashlib.sha256(b"".join(np.asarray(v, np.float64).tobytes() for _, v, _ in
                                     table.variables(limits).values())).hexdigest()
    return limits, {**provenance, "limits_sha256": digest, "search": cfg.checks.search}


def store_attrs(attrs: dict) -> dict:
    """The store's global attributes: the attack's `attrs` and the CF ones."""
    return {**cf.GLOBAL, **attrs}


def resumable(partial: Path, attrs: dict) -> bool:
    """A store in the making left by an earlier run of the same attack (same targets, model, parameters).

    One that cannot be opened (a run killed while allocating it) is not: it is made again.
    """
    try:
        found = xr.open_zarr(partial, consolidated=False).attrs
    except (OSError, ValueError, KeyError):  # absent, empty or half-written (zarr's GroupNotFoundError is both)
        return False
    return found == json.loads(json.dumps(store_attrs(attrs)))


def attack_shard(run_dir: str, shard: int, start: int, stop: int, params: dict, batch_size: int,
                 workers: int = 1, model_params: ModelParams | None = None, checks: Limits | None = None) -> dict:
    """One shard (a task): attack targets start…stop batch by batch, resuming after a requeue; with `checks`
    (record space) each target's sparsest flip that these checks do not catch is searched too."""
    training.set_threads(workers)
    run = RunDir(run_dir)
    store = zarr.open_group(run.partial(layout.ATTACK), mode="r+")
    checkpoint = Checkpoint(run.shard_progress("attack", shard), key={"targets": [start, stop], "params": params,
                                                             "batch_size": batch_size})
    progress = checkpoint.load() or {"done": [], "writes": []}
    if progress.get("complete"):
        return progress
    device = training.device()
    model = load_model(run.path, device, model_params)
    config = AttackParams(**params)
    attack = L1Attack(model, config)
    wired = wiring.get(config.space)
    index = store["dataset_index"][start:stop]
    target = store["y"][start:stop].astype(np.int64)
    batches = [(b, min(b + batch_size, stop)) for b in range(start, stop, batch_size)]
    bar = tqdm(total=stop - start, desc=f"shard {shard}", unit="target", initial=sum(b1 - b0 for b0, b1 in batches
                                                                                     if b0 in progress["done"]))
    successes = progress.get("successes", 0)
    for b0, b1 in batches:
        if b0 in progress["done"]:
            continue
        rows = slice(b0 - start, b1 - start)
        inputs = TargetInputs.load(run, index[rows], config.space)  # this batch's rows only: memory follows the batch
        inputs.checks = checks
        space = inputs.space(config, device)
        result = attack.run(space, torch.from_numpy(target[rows]))
        successes += int(result.found[:, 0].sum())
        batch = wired.after_l1(attack.model, result, inputs, target[rows], slice(None), config)  # record: fewest edits
        with blaming(run.partial(layout.ATTACK)):
            write_batch(store, wired, space, batch, b0, b1)
        del inputs, space, result, batch  # not held while the next batch builds its own
        progress["done"].append(b0)
        progress["writes"].append([b0, b1])
        progress["successes"] = successes
        with blaming(checkpoint.path):
            checkpoint.save(progress)
        bar.update(b1 - b0)
        bar.set_postfix(successes=successes)
        log.info("shard %d: targets %d–%d done, %d successes so far", shard, b0, b1 - 1, successes)
    bar.close()
    progress["complete"] = True
    with blaming(checkpoint.path):
        checkpoint.save(progress)
    return progress


def write_batch(store: zarr.Group, wired: type[Wiring], space: Space, batch, b0: int, b1: int) -> None:
    """One batch's examples (what the wiring's `after_l1` returned) into rows b0…b1 of the store in the making."""
    result = wired.write(space, store, batch, b0, b1)
    for name in VARIABLES:
        values = getattr(result, name).cpu().numpy()
        store[name][b0:b1] = values.astype(np.int32) if name == "iteration" else values


def attack(cfg: PipelineConfig, run_dir: RunDir) -> None:
    a: AttackConfig = cfg.attack
    params, source = attack_params(cfg, run_dir)
    targets = select_targets(run_dir, a.targets, cfg.model)
    if targets.empty:
        raise ConfigError(f"[attack] targets = {a.targets!r}: no correctly classified sample to attack")
    TargetInputs.load(run_dir, np.zeros(0, np.int64), params.space)  # a store the space cannot read: one line, now
    limits, provenance = checks_of(cfg, run_dir, params.space)
    attrs = {"attack_config": dataclasses.asdict(params.params()), "space": params.space, "params_source": source,
             "targets": a.targets,
             "batch_size": a.batch_size, "seed": cfg.run.seed, **run_dir.model_record(),
             "inputs": run_dir.data_fingerprints(),
             **({"checks": provenance} if limits is not None else {})}  # a partial store resumes only if all match
    partial = run_dir.partial(layout.ATTACK)
    if not resumable(partial, attrs):
        shutil.rmtree(partial, ignore_errors=True)
        shutil.rmtree(run_dir.shards_dir("attack"), ignore_errors=True)
        with rundir.atomic_path(partial) as tmp:  # whole or absent: a kill while allocating leaves no husk
            allocate(tmp, targets, run_dir.dataset().sizes["time"], a.chunk_samples, attrs, limits)
    else:
        log.info("attack: resuming the store in %s", partial)
    ranges = shard_ranges(len(targets), a.shards, a.batch_size)
    log.info("attack: %d targets (%s set, correctly classified), %d shard(s), %d iterations, parameters from %s",
             len(targets), a.targets, a.shards, params.max_iter, source)
    searched = limits if limits is not None and cfg.checks.search else None
    calls = [(str(run_dir.path), k, lo, hi, dataclasses.asdict(params.params()), a.batch_size, cfg.run.workers,
              cfg.model, searched)
             for k, (lo, hi) in enumerate(ranges) if hi > lo]  # a shard without targets is not submitted
    if len(calls) < a.shards:
        log.info("attack: %d target(s) fill %d batch(es) of %d: %d shard(s) run, not %d", len(targets),
                 -(-len(targets) // a.batch_size), a.batch_size, len(calls), a.shards)
    shards = run_array(cfg, run_dir, "attack", attack_shard, calls)
    written = sorted(tuple(w) for shard in shards for w in shard["writes"])
    covered = [i for b0, b1 in written for i in range(b0, b1)]
    if covered != list(range(len(targets))):  # every target written exactly once
        raise RuntimeError(f"attack: the shards wrote {len(covered)} target rows for {len(targets)} targets")
    with rundir.consolidated_zarr_v3():
        zarr.consolidate_metadata(str(partial))
    with rundir.atomic_path(run_dir / layout.ATTACK) as tmp:
        partial.rename(tmp)
    store = xr.open_zarr(run_dir / layout.ATTACK, consolidated=False)
    found = store.found.values
    log.info("attack: success rate %.1f%% (%d of %d targets)", 100 * found[:, 0].mean(), found[:, 0].sum(),
             len(found))
    if "edit" in store:  # edits of the record: how few edits flip (best: the sparsest example of any search)
        best = store.sel(kind="best")
        counted = (best["edit"] != 0).sum(("time", "feature")).values  # chunk by chunk, not the whole edit
        edits = np.where(best.found.values, counted, 0)
        for k in range(1, params.max_edits + 1):
            log.info("attack: %.1f%% of %d targets flipped by ≤ %d edited value(s)", 100 * np.mean((edits > 0) &
                     (edits <= k)), len(edits), k)
