"""The stages of the pipeline, in order, and how one is run (skip if complete, time it, mark it).

A stage is a function ``stage(config, run_dir)`` that reads earlier stages' artifacts from disk and
writes its own.
"""

from __future__ import annotations

import importlib
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from pipeline.config import PipelineConfig, redacted
from pipeline.errors import InputError, StageBusy
from pipeline.infra.rundir import RunDir, recover_replaced, remove_dead_temporaries

log = logging.getLogger(__name__)

StageFunc = Callable[[PipelineConfig, RunDir], None]


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

    def tasks(self, cfg: PipelineConfig) -> int:
        """How many array tasks (Slurm jobs, local processes) the stage runs with `cfg`; 0 = none."""
        if not self.array:
            return 0
        table, _, key = self.array.partition(".")
        return getattr(cfg.section(table), key) if key else int(table)

    def load(self) -> StageFunc:
        module, _, name = self.entry.partition(":")
        return getattr(importlib.import_module(module), name)


STAGES: dict[str, Stage] = {s.name: s for s in [
    Stage("synth", "write synthetic MIMIC-III tables (CSV.gz) and each admission's true risk",
          "raw/", "pipeline.data.synth:synth", outputs=("raw",)),
    Stage("prepare", "cohort, 48 hourly bins, imputation and scaling of 19 features (Dask)",
          "dataset.zarr", "pipeline.data.prepare:prepare", outputs=("dataset.zarr",), scratch=("prepare-events-*",)),
    Stage("tune-model", "distributed Optuna search of the LSTM's hyper-parameters", "optuna study",
          "pipeline.model.tune_model:tune_model", ("dataset.zarr", "split.json"), array="run.workers", makes=("split.json",)),
    Stage("cv", "stratified k-fold cross-validation, one array task per fold", "cv/", "pipeline.model.cv:cv",
          ("dataset.zarr", "split.json", "tune-model/best.json"), array="cv.folds", makes=("split.json",)),
    Stage("train", "final model on all non-test data, evaluated once on the test set", "model/",
          "pipeline.model.train:train", ("dataset.zarr", "split.json", "tune-model/best.json", "cv/summary.json"),
          outputs=("model",), array="1", makes=("split.json",)),
    Stage("tune-attack", "distributed Optuna search of the attack's parameters", "optuna study",
          "pipeline.attack.tune_attack:tune_attack", ("dataset.zarr", "split.json", "model"), array="run.workers"),
    Stage("attack", "batched L1 proximal attack, one array task per shard of targets", "attack.zarr",
          "pipeline.attack.shards:attack", ("dataset.zarr", "split.json", "model", "tune-attack/best.json"),
          outputs=("attack.zarr",), array="attack.shards"),
    Stage("analyze", "susceptibility scores, tables, figures and the report (xarray)",
          "susceptibility.zarr, tables/, figures/, report.md", "pipeline.susceptibility.analyze:analyze",
          ("dataset.zarr", "attack.zarr", "model", "cv/summary.json"), outputs=("susceptibility.zarr",)),
]}
CHAIN = list(STAGES)


def writers(artifact: str) -> list[str]:
    """The stages that write `artifact` (an input name as in :attr:`Stage.inputs`)."""
    return [s.name for s in STAGES.values()
            if artifact in s.outputs + s.makes or artifact.startswith(f"{s.name}/")]


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
    """What a stage's result depends on: its own table and the shared [run] table (passwords redacted)."""
    return redacted({"run": asdict(cfg.run), name: asdict(cfg.section(name))})


def run_stage(name: str, cfg: PipelineConfig, run_dir: RunDir, force: bool = False) -> bool:
    """Run one stage unless it is complete; returns True if it ran.

    A complete stage is skipped without writing anything (a read-only run directory is fine). A stage
    that runs holds its lock for the run directory, first cleans what killed runs of it left, and
    replaces its marker only once its new output is complete: a failed ``--force`` keeps the old one.
    """
    stage = STAGES[name]
    wanted = stage_config(cfg, name)
    missing = [o for o in stage.outputs if not (run_dir / o).exists()]
    if run_dir.is_complete(name) and missing and not force:
        log.warning("%s: marked complete but %s is gone; running it again", name, ", ".join(missing))
        force = True
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
    run_dir.forced = force
    with run_dir.stage_lock(name):
        for other, why in related(name).items():  # holding our lock: of two starting at once, one sees the other
            if (holder := run_dir.running(other)) is not None:
                raise StageBusy(f"{name}: `{other}` is running in {run_dir.path} ({holder}) and {why}; run {name} "
                                f"once it has ended")
        run_dir.open(redacted(cfg.to_dict()), cfg.run.seed)  # no password is ever written
        remove_leftovers(stage, run_dir)
        log.info("%s: %s → %s", name, stage.summary, stage.produces)
        started = time.time()
        read = run_dir.fingerprints(*stage.inputs)  # what the stage is about to read
        stage.load()(cfg, run_dir)
        run_dir.mark_complete(name, config=wanted, seed=cfg.run.seed, started=started,
                              executor=cfg.run.executor, inputs=inputs_read(name, stage, run_dir, read))
    log.info("%s: done in %.1f s", name, time.time() - started)
    return True


def inputs_read(name: str, stage: Stage, run_dir: RunDir, read: dict[str, str | None]) -> dict[str, str | None]:
    """The fingerprints to record in the marker: those taken before the stage read its inputs. An input
    that changed while the stage ran (a stage before it redone meanwhile) is an InputError: the result
    may mix the old input and the new. An input the stage makes itself (`Stage.makes`: split.json) is
    recorded as it made it."""
    now = run_dir.fingerprints(*stage.inputs)
    changed = [n for n in stage.inputs if read[n] is not None and now[n] != read[n] and n not in stage.makes]
    if changed:
        raise InputError(f"{name}: its input {', '.join(changed)} changed while it ran (a stage before it was redone "
                         f"meanwhile); nothing was marked complete: run `python -m pipeline {name} --force` again")
    return {n: now[n] if (read[n] is None or n in stage.makes) else read[n] for n in stage.inputs}


def remove_leftovers(stage: Stage, run_dir: RunDir) -> None:
    """What killed runs left (called holding the stage's lock, so none of it is being written):
    the stage's half-written outputs and scratch folders, and anywhere in the run directory the
    temporaries of processes on this host that have ended. Resumable progress (task checkpoints,
    attack's store in the making) is kept: the stage resumes from it."""
    for output in stage.outputs:
        recover_replaced(run_dir / output)
    scratch = [p for pattern in stage.scratch for p in run_dir.path.glob(pattern)]
    for path in scratch:
        shutil.rmtree(path, ignore_errors=True)
    dead = remove_dead_temporaries(run_dir.path)
    if scratch or dead:
        log.info("%s: removed %d temporary file(s) of killed runs", stage.name, len(scratch) + len(dead))


def run_chain(cfg: PipelineConfig, run_dir: RunDir, force: bool = False) -> None:
    """Every stage in order (synth only without real tables), skipping the complete ones."""
    for name in CHAIN:
        if name == "synth" and cfg.prepare.mimic_dir:
            log.info("synth: skipped, real tables in %s", cfg.prepare.mimic_dir)
            continue
        run_stage(name, cfg, run_dir, force)
