"""What Slurm says about a run's jobs (squeue, then sacct), and what acts on it.

:func:`slurm_jobs` asks for the state, user and name of given jobs (:data:`ACTIVE`: still pending or
running); :func:`earlier_tasks` finds the tasks an earlier array of a stage still runs, :func:`end_slurm_tasks`
scancels them and waits until they have ended, and :func:`cancel_run` (``pipeline cancel``) scancels
whatever a run directory's recorded arrays still run.

A record (``jobs/<stage>/array.json``) is read from the run directory, which others may write: it never
chooses a job to cancel by itself. A job is this run's only when Slurm says it is the user's and carries the
stage's job name (``pipeline-<stage>-<tag>``, set at submission; the tag is the run directory's), which a
planted record cannot give to anyone's other job (:func:`ours`). Slurm never reuses a job id soon, so the
job checked is the job cancelled.
"""

from __future__ import annotations

import json
import logging
import os
import pwd
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import InputError
from pipeline.infra import layout
from pipeline.infra.executor.outcome import END_WAIT_S, ArrayBusy
from pipeline.infra.executor.profile import job_name

log = logging.getLogger(__name__)

ACTIVE = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED", "RESIZING", "REQUEUE_HOLD",
          "REQUEUE_FED", "SIGNALING", "STAGE_OUT"}


@dataclass(frozen=True)
class SlurmJob:
    """What Slurm says of one job: its state, its user and its name."""

    state: str
    user: str
    name: str


SQUEUE_FORMAT = "%i|%T|%u|%j"  # the name last: it may hold a '|'


def slurm_jobs(jobs: set[str]) -> dict[str, SlurmJob]:
    """{job id: SlurmJob} of the `jobs` Slurm knows: squeue's (a cancelled task stays COMPLETING until its
    processes are gone), then accounting's for those squeue has forgotten. A job neither knows: absent."""
    found = _jobs(["squeue", "-h", "-r", "-o", SQUEUE_FORMAT, "-j", ",".join(sorted(jobs))])  # -r: a task a line
    forgotten = jobs - found.keys()
    if forgotten:
        found |= _jobs(["sacct", "-n", "-X", "-P", "-o", "JobID,State,User,JobName", "-j", ",".join(sorted(forgotten))])
    return found


def slurm_states(jobs: set[str]) -> dict[str, str]:
    """{job id: state} of the `jobs` Slurm knows (:func:`slurm_jobs`)."""
    return {job: found.state for job, found in slurm_jobs(jobs).items()}


def _jobs(command: list[str]) -> dict[str, SlurmJob]:
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        log.warning("cannot ask Slurm about jobs: %s", e)
        return {}
    if out.returncode != 0:
        if "Invalid job id" not in out.stderr:  # squeue's answer for a job it has forgotten
            log.warning("cannot ask Slurm about jobs: %s", out.stderr.strip())
        return {}
    found = {}
    for line in out.stdout.splitlines():  # a requeued job in sacct: its last record counts
        fields = line.split("|", 3)
        if len(fields) == 4 and fields[1].strip():
            job, state, user, name = fields
            found[job.strip()] = SlurmJob(state.split()[0].rstrip("+"), user.strip(), name.strip())
    return found


def current_user() -> str:
    return pwd.getpwuid(os.getuid()).pw_name


def foreign(jobs: dict[str, SlurmJob], record: Path, name: str) -> set[str]:
    """Those of `jobs` that Slurm does not show as the user's and named `name` (the stage's arrays' name):
    not this run's, whatever `record` says. Each is left alone, with a warning."""
    me = current_user()
    others = {job for job, found in jobs.items() if (found.user, found.name) != (me, name)}
    for job in sorted(others):
        log.warning("%s names Slurm job %s (%s of user %s), not this run's %s: left alone", record, job,
                    jobs[job].name, jobs[job].user, name)
    return others


def ours(jobs: dict[str, SlurmJob], record: Path, name: str) -> dict[str, SlurmJob]:
    """Those of `jobs` that are this run's (not :func:`foreign`)."""
    others = foreign(jobs, record, name)
    return {job: found for job, found in jobs.items() if job not in others}


def recorded_tasks(record: Path) -> set[str]:
    """The task ids `record` (``array.json``) holds; none when there is no record."""
    return {str(task) for task in json.loads(record.read_text())["tasks"]} if record.exists() else set()


def earlier_tasks(record: Path, name: str, unrecorded: bool = False) -> set[str]:
    """This run's Slurm tasks (:func:`ours`: named `name`) still pending or running of the array `record`
    (``array.json``) holds, and with `unrecorded` of any job named `name` (an array whose driver was killed
    before it could record it)."""
    if not (shutil.which("squeue") or shutil.which("sacct")):
        return set()  # no Slurm here (a run directory copied off the cluster): nothing of it runs here
    tasks = recorded_tasks(record)
    found = slurm_jobs(tasks) if tasks else {}
    if unrecorded and shutil.which("squeue"):
        found |= _jobs(["squeue", "-h", "-r", "-n", name, "-u", current_user(), "-o", SQUEUE_FORMAT])
    return {task for task, job in ours(found, record, name).items() if job.state in ACTIVE}


def arrays_of(tasks: Sequence[str]) -> list[str]:
    return sorted({t.split("_")[0] for t in tasks})


def require_scancel() -> None:
    if shutil.which("scancel") is None:
        raise InputError("scancel: not found on PATH (run `pipeline cancel` where Slurm's commands are)")


def scancel(ids: list[str]) -> None:
    """scancel these jobs (checked to be this run's: :func:`ours`); InputError (one line) when scancel is
    missing or fails. Not with scancel's --name/--user filters: on an array still pending as one record they
    leave an accounting record under the bare array id, and submitit then never sees its tasks end."""
    require_scancel()
    done = subprocess.run(["scancel", *ids], capture_output=True, text=True)
    if done.returncode != 0:
        raise InputError(f"scancel {' '.join(ids)}: {done.stderr.strip() or f'exit {done.returncode}'}")


def end_slurm_tasks(tasks: Sequence[str], stage: str) -> None:
    """scancel the arrays of `tasks` (this run's) and return once Slurm reports none of them pending or
    running."""
    scancel(arrays_of(tasks))
    deadline = time.monotonic() + END_WAIT_S
    while active := sorted(t for t, s in slurm_states(set(tasks)).items() if s in ACTIVE):
        if time.monotonic() > deadline:
            raise ArrayBusy(f"{stage}: Slurm task(s) {', '.join(active)} still not ended {END_WAIT_S} s after "
                            "scancel; run again once squeue no longer shows them")
        time.sleep(1.0)
    log.info("%s: Slurm array %s has ended", stage, ", ".join(arrays_of(tasks)))


def cancel_run(run_dir: Path) -> list[str]:
    """scancel the arrays a run recorded (``jobs/*/array.json``) that Slurm still shows pending or running
    and that are this run's (:func:`ours`); returns their job ids. InputError (one line) when scancel is
    missing or fails."""
    records = {record: recorded_tasks(record) for record in sorted(Path(run_dir).glob(
        f"{layout.JOBS}/*/{layout.ARRAY_RECORD}"))}
    if not any(records.values()):
        return []
    require_scancel()  # before asking Slurm anything
    cancelled = []
    for record, tasks in records.items():
        name = job_name(record.parent.name, run_dir)  # the record's folder is its stage's
        found = ours(slurm_jobs(tasks), record, name) if tasks else {}
        ids = arrays_of([task for task, job in found.items() if job.state in ACTIVE])
        if ids:
            scancel(ids)
        cancelled += ids
    return cancelled
