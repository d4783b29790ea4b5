"""Stage `tune-model`: distributed Optuna search of the model's hyper-parameters (docs/methods.md §2): within
`[model] arch`, or over the architectures `[tune-model] archs` lists, each with its own keys.

The driver creates one study in the run's storage, then W workers (an array of W tasks, or W local
processes) run trials until the study holds N finished ones. A trial trains the first `folds_used`
CV folds side by side and reports their mean held-out AUROC every `epochs_per_report` epochs, so
that the median pruner can stop bad trials early. The best parameters go to
``tune-model/best.json``, which `cv` and `train` then use. The test set is never touched.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from pipeline import metrics
from pipeline.config import ACTIVATIONS, OPTIMIZERS, ConfigError, ModelParams, PipelineConfig, TuneModelConfig
from pipeline.infra import study
from pipeline.infra.launch import write_best
from pipeline.infra.rundir import RunDir
from pipeline.model import training
from pipeline.model.archs import ARCHS, TRAINING

log = logging.getLogger(__name__)

def distributions(space: TuneModelConfig) -> dict[str, BaseDistribution]:
    """Every [model] key tune-model searches, one distribution each within `space`'s bounds, in its own
    units (sizes are powers of 2, drawn as choices). A key has the same distribution for every architecture
    that uses it: one study may search several, and Optuna keeps one distribution per name."""
    return {
        "hidden": CategoricalDistribution(powers_of_2(32, space.max_hidden)),
        "layers": IntDistribution(1, space.max_layers),
        "bidirectional": CategoricalDistribution([True, False]),
        "heads": CategoricalDistribution([1, 2, 4, 8]),  # each divides every hidden size searched (≥ 32)
        "kernel": CategoricalDistribution([2, 3, 5]),
        "fc": CategoricalDistribution(powers_of_2(16, 256)),
        "dropout": FloatDistribution(0.0, 0.5),
        "activation": CategoricalDistribution(list(ACTIVATIONS)),
        "optimizer": CategoricalDistribution(list(OPTIMIZERS)),
        "lr": FloatDistribution(space.min_lr, 1e-1, log=True),
        "batch_size": CategoricalDistribution(powers_of_2(32, 256)),
    }


def search_space(space: TuneModelConfig, arch: str) -> dict[str, BaseDistribution]:
    """The keys of `arch` (archs.ARCHS: the reference space for the LSTM, docs/methods.md §2), then the
    training keys every architecture shares."""
    every = distributions(space)
    return {name: every[name] for name in (*ARCHS[arch].keys, *TRAINING)}


def archs_searched(space: TuneModelConfig, arch: str) -> list[str]:
    return list(dict.fromkeys(space.archs)) or [arch]


def powers_of_2(low: int, high: int) -> list[int]:
    return [2 ** k for k in range(low.bit_length() - 1, high.bit_length())]


def suggest(trial: optuna.Trial, space: TuneModelConfig, arch: str) -> ModelParams:
    """One trial's parameters: its architecture first when several are searched, then that one's keys."""
    archs = archs_searched(space, arch)
    if len(archs) > 1:
        arch = study.suggest(trial, "arch", CategoricalDistribution(archs))
    else:
        arch = archs[0]
    return ModelParams(arch=arch, **{name: study.suggest(trial, name, d)
                                     for name, d in search_space(space, arch).items()})


def params_of(trial: optuna.trial.FrozenTrial, arch: str) -> ModelParams:
    return ModelParams(**{"arch": arch, **trial.params})


def searched(params: ModelParams, space: TuneModelConfig) -> dict:
    """best.json's `params`: the architecture and every key the search set for it (what `tuned` applies)."""
    return {"arch": params.arch, **{name: getattr(params, name) for name in search_space(space, params.arch)}}


def metric_name(tm: TuneModelConfig) -> str:
    return f"mean held-out AUROC over {tm.folds_used} fold(s)"


def objective(data: training.Data, split: dict, tm: TuneModelConfig, seed: int, arch: str, robust: dict):
    """A trial: the first `folds_used` folds side by side, mean held-out AUROC every `epochs_per_report`; the
    models trained as [model]'s robust keys say (`robust`), as cv and train will train the chosen one."""
    max_epochs, block = tm.max_epochs, tm.epochs_per_report

    def run_trial(trial: optuna.Trial) -> float:
        params = dataclasses.replace(suggest(trial, tm, arch), **robust)
        folds = [training.fold_indices(split, k) for k in range(tm.folds_used)]
        trainers = [training.Trainer(data, train, params, seed + k) for k, (train, _) in enumerate(folds)]
        value = float("nan")
        for stop in range(block, max_epochs + block, block):
            stop = min(stop, max_epochs)
            scores = []
            for trainer, (_, held_out) in zip(trainers, folds, strict=True):
                while trainer.epoch < stop:
                    trainer.train_epoch()
                scores.append(metrics.auroc(trainer.predict(held_out), data.y[held_out]))
            value = float(np.mean(scores))
            log.info("trial %d: epoch %d, mean held-out AUROC %.4f", trial.number, stop, value)
            trial.report(value, step=stop)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {stop} (AUROC {value:.4f})")
        return value
    return run_trial


def tuning_worker(run_dir: str, storage: str, name: str, trials: int, worker: int, settings: dict) -> int:
    """One worker (a task): runs trials of the study until it holds `trials` finished ones."""
    training.set_threads(settings["workers"])
    robust = settings.get("robust", {})
    data = training.load_data(Path(run_dir), records=robust.get("robust", "none") != "none")
    split = RunDir(run_dir).split()
    run_trial = objective(data, split, TuneModelConfig(**settings["tune"]), settings["seed"], settings["arch"],
                          robust)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0)
    return study.run_worker(storage, Path(run_dir), name, run_trial, trials, worker, seed=settings["seed"],
                            pruner=pruner, heartbeat_s=settings["heartbeat_s"])


def tune_model(cfg: PipelineConfig, run_dir: RunDir) -> None:
    tm = cfg.tune_model
    if not 1 <= tm.folds_used <= cfg.cv.folds:
        raise ConfigError(f"[tune-model] folds_used = {tm.folds_used}: must be in 1…{cfg.cv.folds}")
    check_space(tm)
    cfg.model.check()
    study.check_driver(cfg.run.storage)
    data = training.load_data(run_dir.path, cfg.cv.meds_split)
    training.ensure_split(run_dir, data.y, cfg.cv.test_fraction, cfg.cv.folds, cfg.run.seed,
                          remake=run_dir.forced, held_out=data.held_out)
    settings = {"tune": dataclasses.asdict(tm), "arch": cfg.model.arch,
                "robust": {k: getattr(cfg.model, k) for k in ("robust", "robust_share", "robust_edits")}}
    archs = archs_searched(tm, cfg.model.arch)
    space = {name: study.describe(d) for arch in archs for name, d in search_space(tm, arch).items()}
    if len(archs) > 1:
        space = {"arch": study.describe(CategoricalDistribution(archs)), **space}
    name = study.run_study(cfg, run_dir, "tune-model", tuning_worker, tm.trials, settings,
                           metric=metric_name(tm), search_space=space)
    save_best(cfg, run_dir, name)


def check_space(tm: TuneModelConfig) -> None:
    """What the declared ranges cannot say: the hidden size is a power of 2."""
    if tm.max_hidden not in (32, 64, 128, 256):
        raise ConfigError(f"[tune-model] max_hidden = {tm.max_hidden}: must be 32, 64, 128 or 256")


def save_best(cfg: PipelineConfig, run_dir: RunDir, name: str) -> None:
    s = optuna.load_study(study_name=name, storage=study.open_storage(cfg.run.storage, run_dir.path,
                                                                          cfg.run.heartbeat_s))
    best = s.best_trial
    params = searched(params_of(best, cfg.model.arch), cfg.tune_model)
    write_best(run_dir, "tune-model", s, {"trial": best.number, "value": best.value,
                                          "metric": metric_name(cfg.tune_model), "params": params})
    log.info("tune-model: best trial %d, AUROC %.4f, %s", best.number, best.value, params)
