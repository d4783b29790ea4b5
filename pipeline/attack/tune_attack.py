"""Stage `tune-attack`: distributed Optuna search over a declared subset of the attack's parameters.

Exactly like `tune-model` (one study, W workers, N finished trials), on a fixed subset of at most
1,000 attack targets drawn once by the seed (``tune-attack/targets.json``). A trial runs the attack
that `attack` will run — the `[attack]` table with only the keys of ``[tune-attack] params`` changed
(its max_iter, λ search, FISTA, observed_only, …) — and records that whole table in the trial.

Objectives (docs/methods.md §4):

- ``min_l1`` (default, minimized): the median L1 of the best examples over all targets, a failure
  counting as +∞. The best trial is chosen lexicographically: most targets flipped, then the lowest
  median L1.
- ``success_rate`` (maximized): the share of targets flipped.
- ``sparse_small_max`` (maximized, the reference's): Σ over flipped targets of (1 − L0 / cells) / L∞, cells
  = hours × features. Dominated by 1/L∞, it rewards spreading the change over many cells, and failures cost nothing.
- ``sparse_small`` (maximized): the same with L1 in place of L∞.

The best parameters go to ``tune-attack/best.json`` and become `attack`'s for this run.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math

import numpy as np
import optuna
import torch
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution

from pipeline.attack import spaces
from pipeline.attack.core import BEST, AttackResult
from pipeline.attack.l1 import L1Attack
from pipeline.attack.targets import TargetInputs, select_targets
from pipeline.config import ATTACK_OPTIMIZERS, AttackParams, ConfigError, ModelParams, PipelineConfig
from pipeline.infra import layout, rundir, study
from pipeline.infra.launch import write_best
from pipeline.infra.rundir import RunDir
from pipeline.model import load_model, training

log = logging.getLogger(__name__)
MAX_TARGETS = 1000
MAXIMIZE = ("success_rate", "sparse_small_max", "sparse_small")


def distributions(optimizer: str) -> dict[str, BaseDistribution]:
    """The search space of each tunable `[attack]` key, in the order they are suggested; the step
    size's range depends on the optimizer (ISTA's step is η·gradient; an adaptive step moves a cell by
    about η)."""
    return {
        "optimizer": CategoricalDistribution(list(ATTACK_OPTIMIZERS)),
        "lr": FloatDistribution(*((1e-2, 10.0) if optimizer == "sgd" else (1e-3, 0.3)), log=True),
        "lam": FloatDistribution(1e-4, 1e-1, log=True),
        "kappa": FloatDistribution(0.0, 1.0),
        "fista": CategoricalDistribution([False, True]),
    }


TUNABLE = tuple(distributions("adam"))


def suggest(trial: optuna.Trial, name: str, attack: AttackParams):
    optimizer = trial.params.get("optimizer", attack.optimizer)
    return study.suggest(trial, name, distributions(optimizer)[name])


def search_space(names: list[str], attack: AttackParams) -> dict:
    """The tuned keys' ranges as a person reads them (the study's user attribute)."""
    space = {n: study.describe(d) for n, d in distributions(attack.optimizer).items() if n in names}
    if "lr" in names and "optimizer" in names:
        space["lr"] = {"sgd": study.describe(distributions("sgd")["lr"]),
                       "adam, rmsprop": study.describe(distributions("adam")["lr"])}
    return space


METRICS = {
    "min_l1": "median L1 of the best examples (scaled units, a failure = inf)",
    "success_rate": "share of targets flipped",
    "sparse_small_max": "sum over flipped targets of (1 - L0/cells) / Linf",
    "sparse_small": "sum over flipped targets of (1 - L0/cells) / L1",
}


def trial_attack(trial: optuna.Trial, attack: AttackParams, names: list[str]) -> AttackParams:
    """`attack` with the tuned keys replaced by this trial's suggestions."""
    return dataclasses.replace(attack, **{n: suggest(trial, n, attack) for n in TUNABLE if n in names})


def measures(result: AttackResult) -> dict[str, float]:
    """Success rate and the median L0 / L1 of the best examples (L1 over all targets, failure = +∞)."""
    found = result.found[:, BEST].cpu().numpy()
    p = result.perturbation[:, BEST].abs()
    l1 = np.where(found, p.sum(dim=(1, 2)).double().cpu().numpy(), np.inf)
    l0 = (p > 0).sum(dim=(1, 2)).cpu().numpy()
    return {"success_rate": float(found.mean()), "median_l1": float(np.median(l1)),
            "median_l0": float(np.median(l0[found])) if found.any() else float("nan")}


def score(result: AttackResult, objective: str) -> float:
    if objective == "min_l1":
        return measures(result)["median_l1"]
    found = result.found[:, BEST]
    if objective == "success_rate":
        return float(found.float().mean())
    p = result.perturbation[found, BEST].abs()
    cells = p[0].numel() if len(p) else 1
    sparsity = 1.0 - (p > 0).sum(dim=(1, 2)).double() / cells
    size = p.amax(dim=(1, 2)) if objective == "sparse_small_max" else p.sum(dim=(1, 2))
    return float((sparsity / size.double()).sum())


def best_trial(trials: list[optuna.trial.FrozenTrial], objective: str) -> optuna.trial.FrozenTrial:
    """min_l1: the most targets flipped, then the lowest median L1; the others: the highest value."""
    if objective == "min_l1":
        return min(trials, key=lambda t: (-t.user_attrs["success_rate"], t.value, t.number))
    return max(trials, key=lambda t: (t.value, -t.number))


def tuning_worker(run_dir: str, storage: str, name: str, trials: int, worker: int, settings: dict) -> int:
    """One worker (a task): attacks the fixed targets with each trial's parameters."""
    training.set_threads(settings["workers"])
    run = RunDir(run_dir)
    index = np.array(json.loads(run.tuning_file("tune-attack", layout.TUNING_TARGETS).read_text())["dataset_index"])
    device = training.device()
    model = load_model(run.path, device, ModelParams(**settings["model"]))
    attack = AttackParams(**settings["attack"])
    inputs = TargetInputs.load(run, index, attack.space)
    space = inputs.space(attack, device)  # no tunable key changes the space
    y = torch.from_numpy(run.dataset().y.values[index].astype(np.int64))

    def objective(trial: optuna.Trial) -> float:
        params = trial_attack(trial, attack, settings["params"])
        trial.set_user_attr("attack", dataclasses.asdict(params))
        result = L1Attack(model, params).run(space, y)
        for key, value in measures(result).items():
            trial.set_user_attr(key, value)
        value = score(result, settings["objective"])
        log.info("trial %d: %s = %.4f (%s)", trial.number, settings["objective"], value,
                 {n: getattr(params, n) for n in settings["params"]})
        return value

    return study.run_worker(storage, run.path, name, objective, trials, worker, seed=settings["seed"],
                            heartbeat_s=settings["heartbeat_s"], startup_trials=settings["startup_trials"])


def tune_attack(cfg: PipelineConfig, run_dir: RunDir) -> None:
    ta = cfg.tune_attack
    for name in ta.params:
        if name not in TUNABLE:
            raise ConfigError(f"[tune-attack] params: {name!r} cannot be tuned (tunable: {', '.join(TUNABLE)})")
    spaces.check(cfg.attack)
    study.check_driver(cfg.run.storage)
    targets = select_targets(run_dir, cfg.attack.targets, cfg.model)
    rng = np.random.default_rng(cfg.run.seed)
    chosen = np.sort(rng.permutation(targets["dataset_index"].to_numpy())[:min(ta.targets, MAX_TARGETS)])
    rundir.write_json(run_dir.tuning_file("tune-attack", layout.TUNING_TARGETS), {"dataset_index": chosen.tolist()})
    direction = "maximize" if ta.objective in MAXIMIZE else "minimize"
    settings = {"objective": ta.objective, "params": list(ta.params), "attack": dataclasses.asdict(cfg.attack.params()),
                "startup_trials": ta.startup_trials, "model": dataclasses.asdict(cfg.model)}
    name = study.run_study(cfg, run_dir, "tune-attack", tuning_worker, ta.trials, settings, direction=direction,
                           metric=METRICS[ta.objective], search_space=search_space(list(ta.params), cfg.attack))
    s = optuna.load_study(study_name=name, storage=study.open_storage(cfg.run.storage, run_dir.path,
                                                                          cfg.run.heartbeat_s))
    done = s.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    best = best_trial(done, ta.objective)
    # no trial found an example: then no trial is better than the config
    useful = best.user_attrs["success_rate"] > 0
    finite = {k: (v if math.isfinite(v) else None)  # +∞ (most targets failed) is no JSON number
              for k, v in {"value": best.value, **best.user_attrs}.items() if isinstance(v, float)}
    write_best(run_dir, "tune-attack", s, {
        "trial": best.number, "objective": ta.objective, "direction": direction, "targets": len(chosen), **finite,
        "params": best.params if useful else {},
        "note": "" if useful else "no trial found an adversarial example: the config's [attack] parameters are kept"})
    if useful:
        log.info("tune-attack: best trial %d: %.0f%% flipped, median L1 %.3f, median L0 %.0f, %s", best.number,
                 100 * best.user_attrs["success_rate"], best.user_attrs["median_l1"],
                 best.user_attrs["median_l0"], best.params)
    else:
        log.warning("tune-attack: no trial found an adversarial example (%d trials); attack keeps the config's "
                    "[attack] parameters", len(s.trials))
