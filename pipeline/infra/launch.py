"""What a stage derives from the config and the run directory: its array, its seed, its study's name, and
the parameters tuning chose."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from pipeline.config import PipelineConfig
from pipeline.infra import rundir
from pipeline.infra.executor import CheckpointableTask, ExecutorSpec, run_tasks
from pipeline.infra.registry import STAGES
from pipeline.infra.rundir import RunDir

T = TypeVar("T")


def run_array(cfg: PipelineConfig, run_dir: RunDir, stage: str, task: Callable[..., Any],
              calls: list[tuple]) -> list[Any]:
    """A stage's tasks as one array on the run's executor; each keeps its progress on disk and resumes.
    A forced stage stops what an earlier array of it still runs (other work) instead of refusing."""
    return run_tasks(CheckpointableTask(task), calls, spec=executor_spec(cfg), jobs_dir=run_dir.jobs_dir(stage),
                     stage=stage, force=run_dir.forced)


def executor_spec(cfg: PipelineConfig) -> ExecutorSpec:
    profile = Path(cfg.run.slurm_profile) if cfg.run.slurm_profile else None
    return ExecutorSpec(kind=cfg.run.executor, workers=cfg.run.workers, slurm_profile=profile)


def stage_seed(cfg: PipelineConfig, stage: str) -> int:
    """A stage's own seed, derived from the master seed (stages do not share random streams)."""
    return cfg.run.seed * 65536 + zlib.crc32(stage.encode()) % 65536


def study_name(run_dir: RunDir, stage: str, identity: dict[str, Any]) -> str:
    """``<run>-<stage>-<tag>``, e.g. ``run1-tune-model-3fa9c21b``: readable in optuna-dashboard. The tag,
    a hash of the run directory's path and of `identity` (what the trials depend on), keeps runs that
    share one database apart and gives a stage redone with another config its own study."""
    digest = hashlib.sha1(json.dumps([str(run_dir.path), identity], sort_keys=True, default=str).encode())
    return f"{run_dir.path.name}-{stage}-{digest.hexdigest()[:8]}"


def tuned(run_dir: RunDir, stage: str, table: T) -> tuple[T, str]:
    """`table` (the config's [model] or [attack]) with the values `stage` (tune-model, tune-attack) chose,
    when it ran and chose any; and where the values came from, for logs, model.json and attack.zarr."""
    values = (run_dir.best_params(stage) or {}).get("params")
    if not values:  # not tuned, or no trial was better than the config
        return table, f"the config's [{STAGES[stage].tunes}] table"
    return dataclasses.replace(table, **values), f"{run_dir.tuning_file(stage)} ({', '.join(sorted(values))})"



def write_best(run_dir: RunDir, stage: str, study: Any, record: dict[str, Any]) -> None:
    """``<stage>/best.json`` of a tuning stage: `record` (the best trial, its value, ``params``: the keys
    :func:`tuned` applies) and, in one format for both stages, the study's name and its trials by state."""
    states = [t.state.name for t in study.trials]
    rundir.write_json(run_dir.tuning_file(stage), {
        **record, "study": study.study_name, "trials": {state: states.count(state) for state in sorted(set(states))}})
