"""The ``slurm`` backend: one ``sbatch --array`` per stage through submitit, reattached after a restart.

The array's task ids are recorded in ``jobs/<stage>/array.json`` until every task has succeeded: a driver
that restarts while the array is pending or running waits for it instead of submitting a second one, and
resubmits only the tasks that failed or vanished (:func:`_still_useful`). Every task is a
:class:`~pipeline.infra.executor.tasks.CheckpointableTask`, so a preempted or timed-out one is requeued and
resumes by itself.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import submitit
from tqdm.auto import tqdm

from pipeline.errors import InputError, UntrustedFile, reported_reason
from pipeline.infra import layout
from pipeline.infra.executor.base import Executor
from pipeline.infra.executor.outcome import Outcome
from pipeline.infra.executor.private import load_private, private_umask
from pipeline.infra.executor.profile import SlurmProfile, make_slurm_executor
from pipeline.infra.executor.states import ACTIVE, foreign, slurm_jobs, slurm_states
from pipeline.infra.executor.tasks import CheckpointableTask
from pipeline.infra.rundir import write_json

log = logging.getLogger(__name__)


class SlurmExecutor(Executor):
    """One ``sbatch --array`` per stage through submitit; reattaches to the array a restarted driver left."""

    kind = "slurm"

    def __init__(self, stage: str, jobs_dir: Path, workers: int, profile: SlurmProfile, force: bool = False):
        super().__init__(stage, jobs_dir, workers, force)
        self.profile = profile
        self.record = self.jobs_dir / layout.ARRAY_RECORD

    def submit(self, fn: Callable[..., Any], calls: Sequence[tuple]) -> None:
        self.calls = [tuple(c) for c in calls]
        digest = calls_digest(fn, self.calls)
        task = fn if isinstance(fn, CheckpointableTask) else CheckpointableTask(fn)
        jobs: list[submitit.Job | None] = [None] * len(self.calls)
        recorded = json.loads(self.record.read_text()) if self.record.exists() else {}
        if recorded.get("calls_sha256") == digest:  # the same work: wait for what is still useful of it
            others = foreign(slurm_jobs(set(recorded["tasks"])), self.record, self.name)  # a planted record's
            for i, job_id in enumerate(recorded["tasks"]):
                job = submitit.SlurmJob(folder=self.jobs_dir / "%j", job_id=job_id)
                if job_id not in others and _still_useful(job):
                    jobs[i] = job
            log.info("%s: reattached to %d task(s) of array %s", self.stage, sum(j is not None for j in jobs),
                     recorded["tasks"][0].split("_")[0])
        self.claim(keep={job.job_id for job in jobs if job is not None}, unrecorded=True)
        missing = [i for i, job in enumerate(jobs) if job is None]
        if missing:
            with private_umask():  # the pickles submitit writes (code the job loads) are the user's only
                executor = make_slurm_executor(self.profile, self.jobs_dir, self.name)
                with executor.batch():  # one sbatch --array for all calls
                    submitted = [executor.submit(task, *self.calls[i]) for i in missing]
            for i, job in zip(missing, submitted, strict=True):
                jobs[i] = job
            log.info("%s: submitted array job %s (%d tasks), logs in %s", self.stage,
                     submitted[0].job_id.split("_")[0], len(submitted), self.jobs_dir)
        self.jobs = jobs
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        write_json(self.record, {"calls_sha256": digest, "name": self.name, "tasks": [j.job_id for j in jobs]})

    def wait(self, progress: bool = True) -> None:
        for _ in tqdm(submitit.helpers.as_completed(self.jobs, poll_frequency=1), total=len(self.jobs),
                      desc=self.stage, disable=not progress):
            pass

    def outcomes(self) -> list[Outcome]:
        outcomes = []
        for job in self.jobs:
            try:
                outcomes.append(Outcome(task_result(job), log=Path(str(job.paths.stderr))))
            except Exception as e:  # reported by results(); a remote error comes back as its traceback's text
                outcomes.append(Outcome(error=f"(Slurm job {job.job_id}) {e}", log=Path(str(job.paths.stderr)),
                                        reason=str(e) if isinstance(e, InputError) else reported_reason(str(e))))
        return outcomes

    def results(self) -> list[Any]:
        results = super().results()
        # every task succeeded: the record has done its job; a later run of the stage submits afresh
        # (its tasks find their finished work on disk) instead of reusing these results
        self.record.unlink(missing_ok=True)
        return results

    def cancel(self) -> None:
        for job in self.jobs:  # this run's only: submit() reattached no job Slurm shows as another's
            job.cancel(check=False)


def calls_digest(fn: Callable[..., Any], calls: Sequence[tuple]) -> str:
    """What ``array.json`` records of an array's work: the same digest, the same work (reattached)."""
    return hashlib.sha256(repr((getattr(fn, "fn", fn).__qualname__, [tuple(c) for c in calls])).encode()).hexdigest()


def _still_useful(job: submitit.Job) -> bool:
    """A recorded task worth waiting for: finished with a result, or still pending / running.

    Its state comes from squeue first: accounting (what submitit's ``job.state`` reads) can lag a
    just-submitted array by seconds, which made a restarted driver resubmit tasks that were queued.
    """
    if job.paths.result_pickle.exists():
        try:
            task_result(job)
            return True
        except UntrustedFile as e:  # not its task's result: never loaded, the task is run again
            log.warning("%s; its task is run again", e)
            return False
        except Exception:  # it failed: resubmit it
            return False
    return slurm_states({job.job_id}).get(job.job_id) in ACTIVE


RESULT_WAIT_S = 15  # a shared file system may show a finished task's result pickle late (as submitit waits)


def task_result(job: submitit.Job) -> Any:
    """What ``job.result()`` gives, but its result pickle is unpickled only when it is the user's own private
    file (:func:`~pipeline.infra.executor.private.load_private`): UntrustedFile, naming it, otherwise."""
    job.wait()
    path = job.paths.result_pickle
    deadline = time.time() + RESULT_WAIT_S
    while not path.exists() and time.time() < deadline:
        time.sleep(1)
    if not path.exists():
        raise submitit.core.utils.UncompletedJobError(
            f"Job {job.job_id} with path {path} has not produced any output (state: {job.state})\n"
            f"{job.stderr() or ''}")
    outcome, value = load_private(path)
    if outcome == "error":  # the task raised: `value` is its traceback's text
        raise submitit.core.utils.FailedJobError(f"Job (task={job.task_id}) failed during processing with trace:\n"
                                                 f"{value}")
    return value
