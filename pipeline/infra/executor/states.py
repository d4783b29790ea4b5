"""What Slurm says about a run's jobs (squeue, then sacct), and what acts on it.

:func:`slurm_states` asks for the states of given jobs (:data:`ACTIVE`: still pending or running);
:func:`earlier_tasks` finds the tasks an earlier array of a stage still runs, :func:`end_slurm_tasks`
scancels them and waits until they have ended, and :func:`cancel_run` (``pipeline cancel``) scancels
whatever a run directory's recorded arrays still run.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from pipeline.errors import InputError
from pipeline.infra import layout
from pipeline.infra.executor.outcome import END_WAIT_S, ArrayBusy

log = logging.getLogger(__name__)

ACTIVE = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED", "RESIZING", "REQUEUE_HOLD",
          "REQUEUE_FED", "SIGNALING", "STAGE_OUT"}


def slurm_states(jobs: set[str]) -> dict[str, str]:
    """{job id: state} of the `jobs` Slurm knows: squeue's (a cancelled task stays COMPLETING until its
    processes are gone), then accounting's for those squeue has forgotten. A job neither knows: absent."""
    states = _job_states(["squeue", "-h", "-r", "-o", "%i|%T", "-j", ",".join(sorted(jobs))])  # -r: a task a line
    forgotten = jobs - states.keys()
    if forgotten:
        states |= _job_states(["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", ",".join(sorted(forgotten))])
    return states


def _job_states(command: list[str]) -> dict[str, str]:
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        log.warning("cannot ask Slurm about jobs: %s", e)
        return {}
    if out.returncode != 0:
        if "Invalid job id" not in out.stderr:  # squeue's answer for a job it has forgotten
            log.warning("cannot ask Slurm about jobs: %s", out.stderr.strip())
        return {}
    states = {}
    for line in out.stdout.splitlines():  # a requeued job in sacct: its last record counts
        job, _, state = line.partition("|")
        if state.strip():
            states[job.strip()] = state.split()[0].rstrip("+")
    return states


def earlier_tasks(record: Path, name: str = "") -> set[str]:
    """Slurm tasks still pending or running of the array `record` (``array.json``) holds, and of any
    job named `name` (an array whose driver was killed before it could record it)."""
    if not (shutil.which("squeue") or shutil.which("sacct")):
        return set()  # no Slurm here (a run directory copied off the cluster): nothing of it runs here
    tasks = set(json.loads(record.read_text())["tasks"]) if record.exists() else set()
    states = slurm_states(tasks) if tasks else {}
    if name and shutil.which("squeue"):
        states |= _job_states(["squeue", "-h", "-r", "-n", name, "-o", "%i|%T"])
    return {task for task, state in states.items() if state in ACTIVE}


def arrays_of(tasks: Sequence[str]) -> list[str]:
    return sorted({t.split("_")[0] for t in tasks})


def scancel(ids: list[str]) -> None:
    """scancel these jobs; InputError (one line) when scancel is missing or fails."""
    if shutil.which("scancel") is None:
        raise InputError("scancel: not found on PATH (run `pipeline cancel` where Slurm's commands are)")
    done = subprocess.run(["scancel", *ids], capture_output=True, text=True)
    if done.returncode != 0:
        raise InputError(f"scancel {' '.join(ids)}: {done.stderr.strip() or f'exit {done.returncode}'}")


def end_slurm_tasks(tasks: Sequence[str], stage: str) -> None:
    """scancel the arrays of `tasks` and return once Slurm reports none of them pending or running."""
    scancel(arrays_of(tasks))
    deadline = time.monotonic() + END_WAIT_S
    while active := sorted(t for t, s in slurm_states(set(tasks)).items() if s in ACTIVE):
        if time.monotonic() > deadline:
            raise ArrayBusy(f"{stage}: Slurm task(s) {', '.join(active)} still not ended {END_WAIT_S} s after "
                            "scancel; run again once squeue no longer shows them")
        time.sleep(1.0)
    log.info("%s: Slurm array %s has ended", stage, ", ".join(arrays_of(tasks)))


def cancel_run(run_dir: Path) -> list[str]:
    """scancel the arrays a run recorded (``jobs/*/array.json``) that Slurm still shows pending or running;
    returns their job ids. InputError (one line) when scancel is missing or fails."""
    tasks = {task for record in Path(run_dir).glob(f"{layout.JOBS}/*/{layout.ARRAY_RECORD}")
             for task in json.loads(record.read_text())["tasks"]}
    if not tasks:
        return []
    if shutil.which("scancel") is None:  # before asking Slurm anything
        scancel([])
    states = slurm_states(tasks)
    ids = arrays_of([t for t in tasks if states.get(t) in ACTIVE])
    if ids:
        scancel(ids)
    return ids
