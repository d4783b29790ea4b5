"""The stages of the pipeline, in order, and how one is run (skip if complete, time it, mark it).

A stage is a function ``stage(config, run_dir)`` that reads earlier stages' artifacts from disk and
writes its own.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from .config import PipelineConfig, redacted
from .errors import InputError
from .rundir import RunDir

log = logging.getLogger(__name__)

StageFunc = Callable[[PipelineConfig, RunDir], None]


@dataclass(frozen=True)
class Stage:
    name: str
    summary: str
    produces: str
    entry: str  # "package.module:function", imported only when the stage runs (a fast --help)
    inputs: tuple[str, ...] = ()  # artifacts of earlier stages it reads (hashed into its marker)

    def load(self) -> StageFunc:
        module, _, name = self.entry.partition(":")
        return getattr(importlib.import_module(module), name)


STAGES: dict[str, Stage] = {s.name: s for s in [
    Stage("synth", "write synthetic MIMIC-III tables (CSV.gz) and each admission's true risk",
          "raw/", "pipeline.synth:synth"),
    Stage("prepare", "cohort, 48 hourly bins, imputation and scaling of 19 features (Dask)",
          "dataset.zarr", "pipeline.prepare:prepare"),
    Stage("tune-model", "distributed Optuna search of the LSTM's hyper-parameters", "optuna study",
          "pipeline.tune_model:tune_model", ("dataset.zarr", "split.json")),
    Stage("cv", "stratified k-fold cross-validation, one array task per fold", "cv/", "pipeline.cv:cv",
          ("dataset.zarr", "split.json", "tune-model/best.json")),
    Stage("train", "final model on all non-test data, evaluated once on the test set", "model/",
          "pipeline.train:train", ("dataset.zarr", "split.json", "tune-model/best.json", "cv/summary.json")),
    Stage("tune-attack", "distributed Optuna search of the attack's parameters", "optuna study",
          "pipeline.tune_attack:tune_attack", ("dataset.zarr", "split.json", "model")),
    Stage("attack", "batched L1 proximal attack, one array task per shard of targets", "attack.zarr",
          "pipeline.attack:attack", ("dataset.zarr", "split.json", "model", "tune-attack/best.json")),
    Stage("analyze", "susceptibility scores, tables, figures and the report (xarray)",
          "susceptibility.zarr, tables/, figures/, report.md", "pipeline.analyze:analyze",
          ("dataset.zarr", "attack.zarr", "model", "cv/summary.json")),
]}
CHAIN = list(STAGES)


def stage_config(cfg: PipelineConfig, name: str) -> dict:
    """What a stage's result depends on: its own table and the shared [run] table (passwords redacted)."""
    return redacted({"run": asdict(cfg.run), name: asdict(cfg.section(name))})


def run_stage(name: str, cfg: PipelineConfig, run_dir: RunDir, force: bool = False) -> bool:
    """Run one stage unless it is complete; returns True if it ran."""
    stage = STAGES[name]
    wanted = stage_config(cfg, name)
    if run_dir.is_complete(name) and not force:
        changed = run_dir.changed_inputs(name, stage.inputs)
        if changed:
            raise InputError(f"{name}: complete, but its input {', '.join(changed)} changed since (a stage before "
                             f"it was redone); redo it with `python -m pipeline {name} --force` or use `run --force`")
        done_with = run_dir.completed_config(name)
        if done_with != wanted:
            log.warning("%s: complete with a different config; kept (use --force to redo)", name)
        log.info("%s: complete, skipped (%s)", name, run_dir.marker(name))
        return False
    run_dir.clear(name)
    log.info("%s: %s → %s", name, stage.summary, stage.produces)
    started = time.time()
    stage.load()(cfg, run_dir)
    run_dir.mark_complete(name, config=wanted, seed=cfg.run.seed, started=started,
                          executor=cfg.run.executor, inputs=stage.inputs)
    log.info("%s: done in %.1f s", name, time.time() - started)
    return True


def run_chain(cfg: PipelineConfig, run_dir: RunDir, force: bool = False) -> None:
    """Every stage in order (synth only without real tables), skipping the complete ones."""
    for name in CHAIN:
        if name == "synth" and cfg.prepare.mimic_dir:
            log.info("synth: skipped, real tables in %s", cfg.prepare.mimic_dir)
            continue
        run_stage(name, cfg, run_dir, force)
