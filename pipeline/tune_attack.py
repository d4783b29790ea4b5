"""Stage `tune-attack`: distributed Optuna search of the attack's κ, λ, learning rate and optimizer.

Exactly like `tune-model` (one study, W workers, N finished trials), on a fixed subset of at most
1,000 attack targets drawn once by the seed (``tune-attack/targets.json``). Objectives (METHODS.md §4),
over the targets where the best example flipped the prediction:

- ``sparse_small_max`` (default, the reference's): Σ (1 − L0 / 912) / L∞
- ``sparse_small``: Σ (1 − L0 / 912) / L1
- ``success_rate``: the share of targets flipped

The best parameters go to ``tune-attack/best.json`` and become `attack`'s for this run.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import optuna
import torch
import xarray as xr

from . import rundir, study, training
from .attack import select_targets
from .config import PipelineConfig
from .l1_attack import BEST, AttackParams, AttackResult, L1Attack
from .model import load_model
from .rundir import RunDir

log = logging.getLogger(__name__)
MAX_TARGETS = 1000


def score(result: AttackResult, objective: str) -> float:
    found = result.found[:, BEST]
    if objective == "success_rate":
        return float(found.float().mean())
    p = result.perturbation[found, BEST].abs()
    cells = p[0].numel() if len(p) else 1
    sparsity = 1.0 - (p > 0).sum(dim=(1, 2)).double() / cells
    size = p.amax(dim=(1, 2)) if objective == "sparse_small_max" else p.sum(dim=(1, 2))
    return float((sparsity / size.double()).sum())


def suggest(trial: optuna.Trial) -> dict:
    return {"kappa": trial.suggest_float("kappa", 0.0, 2.0),
            "lam": trial.suggest_float("lam", 1e-7, 1.0, log=True),
            "lr": trial.suggest_float("lr", 1e-5, 1.0, log=True),
            "optimizer": trial.suggest_categorical("optimizer", ["sgd", "adam", "rmsprop"])}


def tuning_worker(run_dir: str, storage: str, name: str, trials: int, worker: int, settings: dict) -> int:
    """One worker (a task): attacks the fixed targets with each trial's parameters."""
    training.set_threads(settings["workers"])
    run = Path(run_dir)
    index = np.array(json.loads((run / "tune-attack" / "targets.json").read_text())["dataset_index"])
    data = training.load_data(run)
    mask = torch.from_numpy(xr.open_zarr(run / "dataset.zarr", consolidated=False)["mask"].values[index])
    model = load_model(run, training.device())
    x, y = data.x[index], torch.from_numpy(data.y[index])

    def objective(trial: optuna.Trial) -> float:
        params = AttackParams(**suggest(trial), max_iter=settings["max_iter"], observed_only=settings["observed_only"])
        value = score(L1Attack(model, params).run(x, y, mask), settings["objective"])
        log.info("trial %d: %s = %.4f", trial.number, settings["objective"], value)
        return value

    return study.run_worker(storage, run, name, objective, trials, worker, seed=settings["seed"],
                            heartbeat_s=settings["heartbeat_s"])


def tune_attack(cfg: PipelineConfig, run_dir: RunDir) -> None:
    ta = cfg.tune_attack
    targets = select_targets(run_dir.path, cfg.attack.targets)
    rng = np.random.default_rng(cfg.run.seed)
    chosen = np.sort(rng.permutation(targets["dataset_index"].to_numpy())[:min(ta.targets, MAX_TARGETS)])
    rundir.write_json(run_dir.path / "tune-attack" / "targets.json", {"dataset_index": chosen.tolist()})
    settings = {"objective": ta.objective, "max_iter": ta.max_iter, "observed_only": cfg.attack.observed_only}
    name = study.run_study(cfg, run_dir, "tune-attack", tuning_worker, ta.trials, settings)
    s = optuna.load_study(study_name=name, storage=study.open_storage(cfg.run.storage, run_dir.path,
                                                                          cfg.run.heartbeat_s))
    best = s.best_trial
    # every objective is 0 when no example was found: then no trial is better than the config
    useful = best.value > 0
    rundir.write_json(run_dir.path / "tune-attack" / "best.json", {
        "study": name, "trial": best.number, "value": best.value, "objective": ta.objective,
        "targets": len(chosen), "max_iter": ta.max_iter, "params": best.params if useful else {},
        "note": "" if useful else "no trial found an adversarial example: the config's [attack] parameters are kept",
        "trials": len(s.get_trials(states=study.DONE))})
    if useful:
        log.info("tune-attack: best trial %d, %s = %.4f, %s", best.number, ta.objective, best.value, best.params)
    else:
        log.warning("tune-attack: no trial found an adversarial example (%d trials); attack keeps the config's "
                    "[attack] parameters", len(s.trials))
