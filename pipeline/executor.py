"""Run a list of task calls: ``debug`` (in-process), ``local`` (≤ N processes) or ``slurm`` (one array).

Every parallel stage hands the same task function and argument tuples to :func:`run_tasks`; only
the launcher differs. On Slurm a stage's sbatch parameters come from a profile file (``slurm/``):
a ``[default]`` table, overridden per stage by ``[stages.<stage>]``. The fields of
:class:`SlurmProfile` are the only valid keys, defined once here.

A task whose progress lives on disk is wrapped in :class:`CheckpointableTask`: when Slurm preempts
or times it out, submitit requeues the same call and the task resumes from its checkpoint.
"""

from __future__ import annotations

import logging
import multiprocessing
import shlex
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import submitit
from submitit.slurm.slurm import _make_sbatch_string
from tqdm.auto import tqdm

from .config import ConfigError, build_section, option, read_toml

log = logging.getLogger(__name__)


class TaskFailed(RuntimeError):
    """A task of a stage raised or its job died; the message says which and where its log is."""


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def ensure_logging() -> None:
    """In a worker process (local or a Slurm task), log INFO lines like the driver does."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, datefmt="%H:%M:%S")


class LoggedTask:
    """A task function that sets up logging in the process it runs in."""

    def __init__(self, fn: Callable[..., Any]):
        self.fn = fn

    def __call__(self, *args: Any) -> Any:
        ensure_logging()
        return self.fn(*args)


class CheckpointableTask(submitit.helpers.Checkpointable):
    """A task function that saves its progress on disk, so that a requeued call resumes.

    submitit calls :meth:`checkpoint` on preemption / time-out; the default resubmits this same
    call with the same arguments, and the function picks up from what it saved.
    """

    def __init__(self, fn: Callable[..., Any]):
        self.fn = fn

    def __call__(self, *args: Any) -> Any:
        ensure_logging()
        return self.fn(*args)

    def __repr__(self) -> str:
        return f"CheckpointableTask({getattr(self.fn, '__qualname__', self.fn)!r})"


@dataclass(frozen=True)
class SlurmProfile:
    """sbatch parameters of one stage. Keys of a profile file are exactly these fields."""

    partition: str = option("", "partition (empty: the cluster's default)")
    account: str = option("", "account to charge (empty: none)")
    qos: str = option("", "quality of service (empty: none)")
    constraint: str = option("", "node feature constraint, e.g. a GPU type (empty: none)")
    time_min: int = option(60, "time limit per array task, minutes")
    cpus_per_task: int = option(1, "CPUs per array task")
    mem_gb: float = option(4.0, "memory per array task, GB")
    gpus_per_node: int = option(0, "GPUs per array task (0: none requested)")
    array_parallelism: int = option(64, "array tasks running at once at most")
    signal_delay_s: int = option(60, "seconds before the time limit at which a task is told to checkpoint")
    max_requeue: int = option(3, "times a timed-out task is requeued (preemptions do not count)")
    python: str = option(
        "", "command that runs Python in the job, e.g. 'apptainer exec --nv pipeline.sif python' "
            "(empty: this interpreter)")
    setup: list[str] = field(default_factory=list, metadata={
        "help": "shell lines run before the task (module loads, exports)", "choices": None})
    extra: list[str] = field(default_factory=list, metadata={
        "help": "further sbatch flags as 'name=value', e.g. 'mail-type=FAIL'", "choices": None})


def load_profile(path: Path, stage: str) -> SlurmProfile:
    """The profile of `stage`: ``[default]`` updated by ``[stages.<stage>]``."""
    data = read_toml(Path(path))
    unknown = set(data) - {"default", "stages"}
    if unknown:
        raise ConfigError(f"{path}: unknown table(s) {sorted(unknown)} (expected [default], [stages.*])")
    values = dict(data.get("default", {}))
    values.update(data.get("stages", {}).get(stage, {}))
    return build_section(SlurmProfile, values, f"{path}: [stages.{stage}]")


def sbatch_parameters(profile: SlurmProfile, stage: str) -> dict[str, Any]:
    """submitit's Slurm parameter names → values, for `profile`."""
    extra = {}
    for item in profile.extra:
        name, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"slurm profile extra {item!r}: expected 'name=value'")
        extra[name.strip()] = value.strip()
    params: dict[str, Any] = {
        "job_name": f"pipeline-{stage}",
        "time": profile.time_min,
        "cpus_per_task": profile.cpus_per_task,
        "mem": f"{int(profile.mem_gb * 1024)}MB",
        "array_parallelism": profile.array_parallelism,
        "signal_delay_s": profile.signal_delay_s,
        "setup": list(profile.setup),
    }
    for name in ("partition", "account", "qos", "constraint"):
        if getattr(profile, name):
            params[name] = getattr(profile, name)
    if profile.gpus_per_node:
        params["gpus_per_node"] = profile.gpus_per_node
    if extra:
        params["additional_parameters"] = extra
    return params


def python_command(profile: SlurmProfile) -> str:
    return profile.python or shlex.quote(sys.executable)


def sbatch_script(profile: SlurmProfile, stage: str, folder: Path | str, n_tasks: int) -> str:
    """The exact sbatch script submitit submits for an array of `n_tasks` calls of `stage`."""
    command = " ".join([python_command(profile), "-u -m submitit.core._submit", shlex.quote(str(folder))])
    return _make_sbatch_string(command=command, folder=folder, map_count=n_tasks,
                               **sbatch_parameters(profile, stage))


@dataclass(frozen=True)
class ExecutorSpec:
    """Which launcher and how much parallelism; the run's ``[run]`` table provides it."""

    kind: str = "local"
    workers: int = 1
    slurm_profile: Path | None = None


def run_tasks(fn: Callable[..., Any], calls: Sequence[tuple], *, spec: ExecutorSpec, jobs_dir: Path,
              stage: str, progress: bool = True) -> list[Any]:
    """Call ``fn(*args)`` for every tuple in `calls`; return the results in the same order."""
    calls = [tuple(c) for c in calls]
    if not calls:
        return []
    log.info("%s: %d task(s) on %s executor", stage, len(calls), spec.kind)
    if spec.kind == "debug":
        return [fn(*args) for args in tqdm(calls, desc=stage, disable=not progress)]
    if spec.kind == "local":
        return _run_local(fn, calls, spec.workers, stage, progress)
    if spec.kind == "slurm":
        if spec.slurm_profile is None:
            raise ConfigError("executor slurm needs run.slurm_profile")
        profile = load_profile(spec.slurm_profile, stage)
        return _run_slurm(fn, calls, profile, jobs_dir, stage, progress)
    raise ConfigError(f"unknown executor {spec.kind!r} (known: debug, local, slurm)")


def _run_local(fn: Callable[..., Any], calls: list[tuple], workers: int, stage: str,
               progress: bool) -> list[Any]:
    # spawn, not fork: a forked child of a process holding torch/OpenMP threads can deadlock
    ctx = multiprocessing.get_context("spawn")
    results: list[Any] = [None] * len(calls)
    with ProcessPoolExecutor(max_workers=max(1, min(workers, len(calls))), mp_context=ctx,
                             initializer=ensure_logging) as pool:
        futures = {pool.submit(fn, *args): i for i, args in enumerate(calls)}
        for fut in tqdm(as_completed(futures), total=len(calls), desc=stage, disable=not progress):
            i = futures[fut]
            try:
                results[i] = fut.result()
            except Exception as e:
                for other in futures:
                    other.cancel()
                raise TaskFailed(f"{stage}: task {i} {calls[i]!r} failed: {e!r}") from e
    return results


def make_slurm_executor(profile: SlurmProfile, jobs_dir: Path, stage: str) -> submitit.AutoExecutor:
    folder = Path(jobs_dir) / "%j"
    kwargs: dict[str, Any] = {"slurm_max_num_timeout": profile.max_requeue}
    if profile.python:
        kwargs["slurm_python"] = profile.python
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm", **kwargs)
    executor.update_parameters(**{f"slurm_{k}": v for k, v in sbatch_parameters(profile, stage).items()})
    return executor


def _run_slurm(fn: Callable[..., Any], calls: list[tuple], profile: SlurmProfile, jobs_dir: Path,
               stage: str, progress: bool) -> list[Any]:
    executor = make_slurm_executor(profile, jobs_dir, stage)
    task = fn if isinstance(fn, CheckpointableTask) else LoggedTask(fn)
    with executor.batch():  # one sbatch --array for all calls
        jobs = [executor.submit(task, *args) for args in calls]
    log.info("%s: submitted array job %s (%d tasks), logs in %s", stage, jobs[0].job_id.split("_")[0],
             len(jobs), jobs_dir)
    return wait_for_jobs(jobs, calls, stage, progress)


def wait_for_jobs(jobs: Sequence[submitit.Job], calls: Sequence[tuple], stage: str,
                  progress: bool = True) -> list[Any]:
    """Wait for all jobs (with a progress bar); raise TaskFailed naming the first failed task."""
    for _ in tqdm(submitit.helpers.as_completed(jobs, poll_frequency=1), total=len(jobs), desc=stage,
                  disable=not progress):
        pass
    results = []
    for i, job in enumerate(jobs):
        try:
            results.append(job.result())
        except Exception as e:
            raise TaskFailed(f"{stage}: task {i} {calls[i]!r} (Slurm job {job.job_id}) failed; "
                             f"log: {job.paths.stderr}\n{e}") from e
    return results
