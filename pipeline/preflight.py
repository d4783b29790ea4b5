"""Before any stage runs: check what the whole chain will need, and show what it would submit.

A cluster user should meet a wrong profile key, a missing container or an unreachable database on
the login node in the first second — not after `synth` and `prepare` ran, or in a job's log hours
later. :func:`preflight` checks, for the stages that will run: the run directory is writable, the
Slurm profile exists and every stage's table in it is valid, the command that runs Python in a job
exists (and a container is given ``--nv`` where GPUs are requested), ``sbatch`` is there, and the
Optuna storage answers. :func:`dry_run` prints each stage's resolved config and the sbatch script
submitit would submit (validated by ``sbatch --test-only``), and submits nothing.
"""

from __future__ import annotations

import functools
import logging
import os
import shlex
import shutil
import subprocess
from pathlib import Path

from pipeline import __version__
from pipeline.config import ConfigError, PipelineConfig, redacted, to_toml
from pipeline.errors import InputError
from pipeline.infra.executor import IMAGES, SlurmProfile, job_name, load_profile, preview_submission, profile_file
from pipeline.infra.registry import CHAIN, STAGES, chain, stage_config
from pipeline.infra.rundir import RunDir
from pipeline.infra.stages import unfit_outputs

CONTAINER_RUNNERS = ("apptainer", "singularity")

log = logging.getLogger(__name__)


def planned(cfg: PipelineConfig, run_dir: RunDir, stage: str, force: bool) -> list[str]:
    """The stages a command will run: `stage`, or for ``run`` the chain (synth only without real
    tables), less the complete ones unless forced."""
    names = chain(cfg) if stage == "run" else [stage]
    return [n for n in names if force or not run_dir.is_complete(n) or unfit_outputs(n, run_dir)]


def preflight(cfg: PipelineConfig, run_dir: RunDir, stages: list[str], submitting: bool = True) -> None:
    """Raise ConfigError (one line: what, where, how to fix) on the first thing `stages` would trip on.

    `submitting` False (a dry run): no ``sbatch`` here is not an error, the scripts are shown unchecked.
    """
    if not stages:
        return
    check_writable(run_dir.path)
    if cfg.run.executor == "slurm":
        for name in stages:
            if STAGES[name].tasks(cfg):
                check_profile(slurm_profile(cfg, name), name, probe=submitting)
        if submitting and shutil.which("sbatch") is None:
            raise ConfigError("executor slurm: sbatch is not on PATH (run the driver on a Slurm login node, or "
                              "use --executor local)")
        if submitting:
            for name in stages:
                check_accepted(cfg, run_dir, name)
    if cfg.run.storage and any(STAGES[n].storage for n in stages):
        check_storage(cfg.run.storage)
    if "prepare" in stages and cfg.prepare.stats_from:
        from pipeline.data.prepare import frozen_stats  # here: it imports xarray and dask, which few runs need

        frozen_stats(cfg.prepare)  # before anything is written: a bad store leaves no run directory behind
    if {"attack", "errors"} & set(stages) and cfg.checks.limits:
        from pipeline.checks import table  # here: it imports numpy, which --help and dry runs do not need

        table.load(cfg.checks.limits)  # a bad limits table: one line before the chain starts
    if "train" in stages and cfg.model.external:
        check_external(cfg, run_dir)
    if "prepare" in stages and cfg.prepare.source == "meds":
        from pipeline.data.meds import FeatureMap  # here: it imports pandas and pyarrow, which few runs need

        FeatureMap.load(cfg.prepare.feature_map)  # a bad regex or key: one line, no run directory written


def check_external(cfg: PipelineConfig, run_dir: RunDir) -> None:
    """The model `[model] external` names loads (the file exists, the factory imports, runs and takes its
    weights) before synth and prepare run: a typo is one line, and no run directory is made."""
    from pipeline.model import external  # here: it imports torch, which --help and dry runs do not need

    cfg.model.check()
    try:
        external.load_user(cfg.model, run_dir.path)
    except InputError as e:
        raise ConfigError(str(e)) from None


def check_accepted(cfg: PipelineConfig, run_dir: RunDir, name: str) -> None:
    """Slurm accepts the stage's array as the profile asks for it (``sbatch --test-only``: a partition,
    account or QoS it does not know, limits it would refuse), before anything is submitted."""
    n = STAGES[name].tasks(cfg)
    if not n:
        return
    preview = preview_submission(slurm_profile(cfg, name), job_name(name, run_dir.path), run_dir.jobs_dir(name), n)
    if not preview.accepted:
        reason = (preview.check or "").strip().splitlines()
        raise ConfigError(f"slurm profile [stages.{name}]: sbatch --test-only rejects the stage's array: "
                          f"{reason[-1] if reason else 'no reason given'}")


def slurm_profile(cfg: PipelineConfig, stage: str) -> SlurmProfile:
    return load_profile(profile_file(cfg.run.slurm_profile), stage)


def check_writable(path: Path) -> None:
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"run directory {path}: {existing} is not a writable folder")
    if existing == path:  # one the pipeline makes is the user's own (mode by the umask)
        warn_if_shared(path)


def warn_if_shared(folder: Path) -> None:
    """A warning when others may write the run directory: they can change its results (docs/reliability.md,
    the trust model; a Slurm job's pickles in jobs/ are loaded only when private, executor/private.py). Not
    an error: shared project folders are common, and the user may trust the group."""
    st = folder.stat()
    if st.st_mode & 0o022 or st.st_uid != os.geteuid():
        log.warning("run directory %s: %s (mode %o, owner uid %d); whoever can write it can change the run's results: "
                    "see docs/reliability.md (trust model)",
                    folder, "writable by others" if st.st_mode & 0o022 else "owned by another user",
                    st.st_mode & 0o777, st.st_uid)


def check_profile(profile: SlurmProfile, stage: str, probe: bool = True) -> None:
    """The job's Python command exists (as far as the login node can tell), sees the GPUs it asks for and
    (`probe`) imports this package at the driver's version."""
    where = f"slurm profile [stages.{stage}] python"
    words = shlex.split(profile.python) if profile.python else []
    if not words:
        return  # this interpreter, which exists
    program = words[0]
    if "/" in program and not os.access(program, os.X_OK):
        raise ConfigError(f"{where}: {program} does not exist or is not executable")
    for word in words[1:]:
        if word.endswith(IMAGES) and not Path(word).is_file():
            raise ConfigError(f"{where}: container image {word} not found (build it: see containers/README.md)")
    if Path(program).name in CONTAINER_RUNNERS and profile.gpus_per_node and "--nv" not in words:
        raise ConfigError(f"{where}: the stage requests {profile.gpus_per_node} GPU(s) but runs "
                          f"{Path(program).name} without --nv, so the container would not see them")
    if probe:
        check_imports(tuple(words), where)


def check_imports(words: tuple[str, ...], where: str) -> None:
    """The job's Python imports this package at the driver's version (else every task would fail minutes
    later, e.g. "No module named 'submitit'"). Run here, on the login node, as the task would run it."""
    problem = _probe(words)
    if problem:
        raise ConfigError(f"{where}: {shlex.join(words)} {problem}")


@functools.cache  # one probe per distinct command (several stages share one)
def _probe(words: tuple[str, ...]) -> str | None:
    try:
        done = subprocess.run([*words, "-c", "import submitit, torch, pipeline; print(pipeline.__version__)"],
                              capture_output=True, text=True, timeout=PROBE_S)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"cannot be run here ({e})"
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        return f"cannot run the pipeline's tasks ({last})"
    if done.stdout.strip() != __version__:
        return (f"has pipeline {done.stdout.strip()}, this driver {__version__}: install the same version there "
                "(or rebuild the container)")
    return None


PROBE_S = 120  # a container's first start on a login node can take a while


def check_storage(url: str) -> None:
    """Connect once to the Optuna storage; the error names the URL without its password."""
    # heavy (sqlalchemy, optuna): only when a storage is checked, so that --help and dry runs stay fast
    import sqlalchemy

    from pipeline.infra.study import check_driver

    check_driver(url)  # the [postgres] extra: its own message
    try:
        engine = sqlalchemy.create_engine(url, connect_args={"connect_timeout": 10} if url.startswith("postgres")
                                          else {})
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("select 1"))
        engine.dispose()
    except ModuleNotFoundError as e:  # another database's driver
        raise ConfigError(f"run.storage {redacted(url)}: its driver is not installed ({e.name})") from None
    except Exception as e:  # any failure to connect: name it, one line
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"run.storage {redacted(url)}: cannot connect ({redacted(reason)})") from None


def dry_run(cfg: PipelineConfig, run_dir: RunDir, stages: list[str]) -> tuple[str, bool]:
    """What each stage would do, as text, and whether Slurm would accept every script."""
    lines, accepted = [f"# dry run: nothing is submitted or written (run directory {run_dir.path})"], True
    skipped = [n for n in CHAIN if n not in stages and run_dir.is_complete(n)]
    if skipped:
        lines.append(f"# complete, would be skipped: {', '.join(skipped)}")
    for name in stages:
        stage = STAGES[name]
        lines += ["", f"## {name}: {stage.summary} → {stage.produces}", "",
                  to_toml(stage_config(cfg, name))]
        n = stage.tasks(cfg)
        if not n:
            lines.append("runs in the driver (no array)")
        elif cfg.run.executor != "slurm":
            lines.append(f"{n} task(s) as {cfg.run.executor} processes, {cfg.run.workers} at once")
        else:
            preview = preview_submission(slurm_profile(cfg, name), job_name(name, run_dir.path),
                                         run_dir.jobs_dir(name), n)
            accepted &= preview.accepted
            verdict = "not checked: no sbatch here" if preview.check is None else \
                ("accepted" if preview.accepted else "REJECTED") + ":\n  " + preview.check.replace("\n", "\n  ")
            lines += [f"sbatch --test-only: {verdict}", "", preview.script.rstrip()]
    return "\n".join(lines) + "\n", accepted
