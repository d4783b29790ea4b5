"""The Slurm profile format: a stage's sbatch parameters, and the job names that tell runs apart.

A profile file (``slurm/``) holds a ``[default]`` table, overridden per stage by ``[stages.<stage>]``;
the fields of :class:`SlurmProfile` are the only valid keys, defined once here. :func:`load_profile`
reads one stage's profile (its relative paths made absolute by :func:`resolve_paths`),
:func:`sbatch_parameters` turns it into submitit's parameters and :func:`make_slurm_executor` into
submitit's Slurm executor. Job names carry the run (``pipeline-<stage>-<tag>``, :func:`job_name`), the
tag a hash of the run directory (:func:`run_tag`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import submitit

from pipeline.config import ConfigError, build_section, option, read_toml
from pipeline.infra.registry import STAGES


@dataclass(frozen=True)
class SlurmProfile:
    """sbatch parameters of one stage. Keys of a profile file are exactly these fields."""

    partition: str = option("", "partition (empty: the cluster's default)")
    account: str = option("", "account to charge (empty: none)")
    qos: str = option("", "quality of service (empty: none)")
    constraint: str = option("", "node feature constraint, e.g. a GPU type (empty: none)")
    time_min: int = option(60, "time limit per array task, minutes", ge=1)
    cpus_per_task: int = option(1, "CPUs per array task", ge=1)
    mem_gb: float = option(4.0, "memory per array task, GB", gt=0)
    gpus_per_node: int = option(0, "GPUs per array task (0: none requested)", ge=0)
    array_parallelism: int = option(64, "array tasks running at once at most", ge=1)
    signal_delay_s: int = option(60, "seconds before the time limit at which a task is told to checkpoint",
                                ge=0)
    max_requeue: int = option(3, "times a timed-out task is requeued (preemptions do not count)", ge=0)
    wckey: str = option("", "workload characterization key, sbatch --wckey (empty: none; submitit's default "
                            "'submitit' is rejected where a site enforces its own wckeys)")
    python: str = option(
        "", "command that runs Python in the job, e.g. 'apptainer exec --nv pipeline.sif python' "
            "(empty: this interpreter)")
    setup: list[str] = field(default_factory=list, metadata={
        "help": "shell lines run before the task (module loads, exports)", "choices": None})
    extra: list[str] = field(default_factory=list, metadata={
        "help": "further sbatch flags as 'name=value', e.g. 'mail-type=FAIL'", "choices": None})


def profile_file(path: str | Path | None) -> Path:
    """The Slurm profile file the run names (run.slurm_profile); ConfigError when it names none or a file that
    is not there. The one check: make_executor and preflight both ask it."""
    if not path:
        raise ConfigError("executor slurm needs run.slurm_profile (a profile file, see slurm/profiles/)")
    if not Path(path).is_file():
        raise ConfigError(f"run.slurm_profile: {Path(path).resolve()} not found")
    return Path(path)


def load_profile(path: Path, stage: str) -> SlurmProfile:
    """The profile of `stage`: ``[default]`` updated by ``[stages.<stage>]``."""
    data = read_toml(Path(path))
    unknown = set(data) - {"default", "stages"}
    if unknown:
        raise ConfigError(f"{path}: unknown table(s) {sorted(unknown)} (expected [default], [stages.*])")
    misspelled = sorted(set(data.get("stages", {})) - set(STAGES))  # would silently give the stage the defaults
    if misspelled:
        raise ConfigError(f"{path}: unknown stage table(s) {', '.join(f'[stages.{s}]' for s in misspelled)}; "
                          f"the stages are {', '.join(STAGES)}")
    values = dict(data.get("default", {}))
    values.update(data.get("stages", {}).get(stage, {}))
    profile = build_section(SlurmProfile, values, f"{path}: [stages.{stage}]")
    return dataclasses.replace(profile, python=resolve_paths(profile.python, Path(path).resolve().parent))


def resolve_paths(command: str, base: Path) -> str:
    """`command` with its relative paths (a word holding a '/' or naming a container image) made absolute
    against `base`, the profile's folder: a profile means the same from any working directory."""
    words = shlex.split(command)
    for i, word in enumerate(words):
        if word.startswith(("-", "$", "~")) or Path(word).is_absolute() or \
                ("/" not in word and not word.endswith(IMAGES)):
            continue
        words[i] = str(base / word)
    return shlex.join(words)


IMAGES = (".sif", ".simg", ".img")  # Apptainer / Singularity images


def run_tag(run_dir: Path | str) -> str:
    """A short hash of the run directory: job names carry it, so one run's jobs can be told apart."""
    return hashlib.sha1(str(Path(run_dir).resolve()).encode()).hexdigest()[:8]


def job_name(stage: str, run_dir: Path | str) -> str:
    return f"pipeline-{stage}-{run_tag(run_dir)}"


def sbatch_parameters(profile: SlurmProfile, name: str) -> dict[str, Any]:
    """submitit's Slurm parameter names → values, for `profile`."""
    extra = {}
    for item in profile.extra:
        flag, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"slurm profile extra {item!r}: expected 'name=value'")
        extra[flag.strip()] = value.strip()
    params: dict[str, Any] = {
        "job_name": name,
        "time": profile.time_min,
        "cpus_per_task": profile.cpus_per_task,
        "mem": f"{int(profile.mem_gb * 1024)}MB",
        "array_parallelism": profile.array_parallelism,
        "signal_delay_s": profile.signal_delay_s,
        "setup": list(profile.setup),
        "wckey": profile.wckey or None,  # None: no --wckey line at all
    }
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(profile, key):
            params[key] = getattr(profile, key)
    if profile.gpus_per_node:
        params["gpus_per_node"] = profile.gpus_per_node
    if extra:
        params["additional_parameters"] = extra
    return params


# what a task runs first (submitit appends "-u -m submitit.core._submit FOLDER"): it checks, before submitit
# unpickles it, that the task's pickle is the user's own private file (pipeline/infra/executor/guard.py)
GUARD = "-P -u -m pipeline.infra.executor.guard"


def make_slurm_executor(profile: SlurmProfile, jobs_dir: Path, name: str) -> submitit.SlurmExecutor:
    """submitit's Slurm executor itself (AutoExecutor would drop a None, e.g. to leave out --wckey)."""
    python = f"{profile.python or shlex.quote(sys.executable)} {GUARD}"
    executor = submitit.SlurmExecutor(folder=Path(jobs_dir) / "%j", max_num_timeout=profile.max_requeue,
                                      python=python)
    executor.update_parameters(**sbatch_parameters(profile, name))
    return executor
