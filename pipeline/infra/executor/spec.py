"""Choosing and running a backend: :class:`ExecutorSpec` (the run's ``[run]`` table says which launcher and
how much parallelism), :func:`make_executor` (the backend of a spec for one stage) and :func:`run_tasks`
(call a function for every tuple of arguments on it; the results in call order).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.config import ConfigError
from pipeline.infra.executor.base import Executor
from pipeline.infra.executor.local import DebugExecutor, LocalExecutor
from pipeline.infra.executor.profile import load_profile, profile_file
from pipeline.infra.executor.slurm import SlurmExecutor

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExecutorSpec:
    """Which launcher and how much parallelism; the run's ``[run]`` table provides it."""

    kind: str = "local"
    workers: int = 1
    slurm_profile: Path | None = None


def make_executor(spec: ExecutorSpec, stage: str, jobs_dir: Path, force: bool = False) -> Executor:
    """The backend of `spec` for one stage; the run directory is the parent of ``jobs/<stage>``. With
    `force` it stops what an earlier array of the stage still runs instead of refusing to start."""
    if spec.kind == "debug":
        return DebugExecutor(stage, jobs_dir, force=force)
    if spec.kind == "local":
        return LocalExecutor(stage, jobs_dir, spec.workers, force)
    if spec.kind == "slurm":
        return SlurmExecutor(stage, jobs_dir, spec.workers, load_profile(profile_file(spec.slurm_profile), stage),
                             force)
    raise ConfigError(f"unknown executor {spec.kind!r} (known: debug, local, slurm)")


def run_tasks(fn: Callable[..., Any], calls: Sequence[tuple], *, spec: ExecutorSpec, jobs_dir: Path,
              stage: str, progress: bool = True, force: bool = False) -> list[Any]:
    """Call ``fn(*args)`` for every tuple in `calls` on the backend of `spec`; the results in call order."""
    calls = [tuple(c) for c in calls]
    if not calls:
        return []
    log.info("%s: %d task(s) on %s executor", stage, len(calls), spec.kind)
    return make_executor(spec, stage, jobs_dir, force).run(fn, calls, progress)
