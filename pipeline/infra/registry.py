"""The stages of the pipeline, in order: what each reads, writes and runs — the one place that says so.

Everything else that needs to know which stage makes an artifact, which stages need the Optuna storage,
or which stages a ``run`` chains, asks here (:func:`writers`, :attr:`Stage.storage`, :func:`chain`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from pipeline.config import PipelineConfig, redacted

StageFunc = Callable[[PipelineConfig, Any], None]  # (config, RunDir)


@dataclass(frozen=True)
class Stage:
    name: str
    summary: str
    produces: str
    entry: str  # "package.module:function", imported only when the stage runs (a fast --help)
    inputs: tuple[str, ...] = ()  # artifacts of earlier stages it reads (hashed into its marker)
    outputs: tuple[str, ...] = ()  # what its driver writes in one piece (a killed run's temporaries: cleaned)
    scratch: tuple[str, ...] = ()  # globs of its driver's scratch space, stale whenever the stage is not running
    makes: tuple[str, ...] = ()  # inputs it makes itself when absent or stale (split.json): theirs to change
    array: str = ""  # the config key that sets how many array tasks it runs ("" = none: all in the driver)
    storage: bool = False  # its workers share the Optuna storage (run.storage): preflight connects to it
    replaced_by_mimic: bool = False  # skipped by `run` when real tables are given (prepare.mimic_dir)
    tunes: str = ""  # a tuning stage: the config table whose values its best.json overrides
    tables: tuple[str, ...] = ()  # config tables besides its own and [run] that its result depends on
    fits_model: bool = False  # tunes or cross-validates a model of the pipeline's: skipped for [model] external
    source: str = ""  # "module:" whose record(cfg, run_dir) / changes(cfg, run_dir, recorded) watch files it reads
    #                    from outside the run directory's artifacts (prepare: the tables)

    def tasks(self, cfg: PipelineConfig) -> int:
        """How many array tasks (Slurm jobs, local processes) the stage runs with `cfg`; 0 = none."""
        if not self.array:
            return 0
        table, _, key = self.array.partition(".")
        return getattr(cfg.section(table), key) if key else int(table)

    def watcher(self):
        """The module that records and checks the files it reads from outside the run directory, or None."""
        return importlib.import_module(self.source) if self.source else None

    def load(self) -> StageFunc:
        module, _, name = self.entry.partition(":")
        return getattr(importlib.import_module(module), name)


STAGES: dict[str, Stage] = {s.name: s for s in [
    Stage("synth", "write synthetic MIMIC-III tables (CSV.gz) and each admission's true risk",
          "raw/", "pipeline.data.synth:synth", outputs=("raw",), replaced_by_mimic=True),
    Stage("prepare", "cohort, hourly bins, imputation and scaling of the features (Dask)",
          "dataset.zarr", "pipeline.data.prepare:prepare", outputs=("dataset.zarr",), scratch=("prepare-events-*",),
          source="pipeline.data.inputs"),
    Stage("tune-model", "distributed Optuna search of the model's hyper-parameters", "optuna study",
          "pipeline.model.tune_model:tune_model", ("dataset.zarr", "split.json"), array="run.workers",
          makes=("split.json",), storage=True, tunes="model", tables=("model",), fits_model=True),
    Stage("cv", "stratified k-fold cross-validation, one array task per fold", "cv/", "pipeline.model.cv:cv",
          ("dataset.zarr", "split.json", "tune-model/best.json"), array="cv.folds", makes=("split.json",),
          tables=("model",), fits_model=True),
    Stage("train", "final model on all non-test data (or [model] external), evaluated once on the test set", "model/",
          "pipeline.model.train:train", ("dataset.zarr", "split.json", "tune-model/best.json", "cv/summary.json"),
          outputs=("model",), array="1", makes=("split.json",), tables=("model",)),
    Stage("tune-attack", "distributed Optuna search of the attack's parameters", "optuna study",
          "pipeline.attack.tune_attack:tune_attack", ("dataset.zarr", "split.json", "model"), array="run.workers",
          storage=True, tunes="attack"),
    Stage("attack", "batched L1 proximal attack, one array task per shard of targets", "attack.zarr",
          "pipeline.attack.shards:attack", ("dataset.zarr", "split.json", "model", "tune-attack/best.json"),
          outputs=("attack.zarr",), array="attack.shards", tables=("checks",)),
    Stage("errors", "the fewest plausible data-entry errors that flip each target, one array task per shard",
          "errors.zarr", "pipeline.attack.errors_stage:errors", ("dataset.zarr", "split.json", "model"),
          outputs=("errors.zarr",), array="errors.shards", tables=("checks",)),
    Stage("analyze", "susceptibility scores, tables, figures and the report (xarray)",
          "susceptibility.zarr, tables/, figures/, report.md", "pipeline.susceptibility.analyze:analyze",
          ("dataset.zarr", "attack.zarr", "model", "cv/summary.json", "errors.zarr"),
          outputs=("susceptibility.zarr", "report.md", "tables", "figures")),
]}
CHAIN = list(STAGES)


def writers(artifact: str) -> list[str]:
    """The stages that write `artifact` (an input name as in :attr:`Stage.inputs`)."""
    return [s.name for s in STAGES.values()
            if artifact in s.outputs + s.makes or artifact.startswith(f"{s.name}/")]


def products(name: str) -> tuple[str, ...]:
    """What stage `name` writes, checked for damage once it is complete: its outputs, and its own folder
    when later stages read from it (tune-model/, cv/)."""
    folder = any(a.startswith(f"{name}/") for s in STAGES.values() for a in s.inputs)
    return (*STAGES[name].outputs, *((name,) if folder else ()))


def related(name: str) -> dict[str, str]:
    """{stage: why} for the stages that must not run beside `name` in one run directory: those that write
    what it reads, and those that read what it writes (a store swapped under a reader gave mixed data)."""
    found = {}
    for artifact in STAGES[name].inputs:
        for other in writers(artifact):
            if other != name:
                found.setdefault(other, f"writes {artifact}, which {name} reads")
    for other in STAGES.values():
        for artifact in other.inputs:
            if other.name != name and name in writers(artifact):
                found.setdefault(other.name, f"reads {artifact}, which {name} writes")
    return found


def stage_config(cfg: PipelineConfig, name: str) -> dict:
    """What a stage's result depends on: its own table, the shared [run] table and the tables it names
    (passwords redacted)."""
    return redacted({"run": asdict(cfg.run), **{t: asdict(cfg.section(t)) for t in STAGES[name].tables},
                     name: asdict(cfg.section(name))})


def chain(cfg: PipelineConfig) -> list[str]:
    """The stages `pipeline run` runs, in order: synth only when no real data are given (MIMIC-III tables,
    or a MEDS root with prepare.source = meds); tune-model and cv not for a model trained elsewhere."""
    real = cfg.prepare.meds_dir if cfg.prepare.source == "meds" else cfg.prepare.mimic_dir
    return [n for n in CHAIN if not (STAGES[n].replaced_by_mimic and real)
            and not (STAGES[n].fits_model and cfg.model.external)]
