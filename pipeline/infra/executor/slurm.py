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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import submitit
from tqdm.auto import tqdm

from pipeline.errors import reported_reason
from pipeline.infra import layout
from pipeline.infra.executor.base import Executor
from pipeline.infra.executor.outcome import Outcome
from pipeline.infra.executor.profile import SlurmProfile, job_name, make_slurm_executor
from pipeline.infra.executor.states import ACTIVE, slurm_states
from pipeline.infra.executor.tasks import CheckpointableTask
from pipeline.infra.rundir import write_json

log = logging.getLogger(__name__)


class SlurmExecutor(Executor):
    """One ``sbatch --array`` per stage through submitit; reattaches to the array a restarted driver left."""

    kind = "slurm"

    def __init__(self, stage: str, jobs_dir: Path, workers: int, profile: SlurmProfile, run_dir: Path,
                 force: bool = False):
        super().__init__(stage, jobs_dir, workers, force)
        self.profile, self.name = profile, job_name(stage, run_dir)
        self.record = self.jobs_dir / layout.ARRAY_RECORD

    def submit(self, fn: Callable[..., Any], calls: Sequence[tuple]) -> None:
        self.calls = [tuple(c) for c in calls]
        digest = hashlib.sha256(repr((getattr(fn, "fn", fn).__qualname__, self.calls)).encode()).hexdigest()
        task = fn if isinstance(fn, CheckpointableTask) else CheckpointableTask(fn)
        jobs: list[submitit.Job | None] = [None] * len(self.calls)
        recorded = json.loads(self.record.read_text()) if self.record.exists() else {}
        if recorded.get("calls_sha256") == digest:  # the same work: wait for what is still useful of it
            for i, job_id in enumerate(recorded["tasks"]):
                job = submitit.SlurmJob(folder=self.jobs_dir / "%j", job_id=job_id)
                if _still_useful(job):
                    jobs[i] = job
            log.info("%s: reattached to %d task(s) of array %s", self.stage, sum(j is not None for j in jobs),
                     recorded["tasks"][0].split("_")[0])
        self.claim(keep={job.job_id for job in jobs if job is not None}, name=self.name)
        missing = [i for i, job in enumerate(jobs) if job is None]
        if missing:
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
                outcomes.append(Outcome(job.result(), log=Path(str(job.paths.stderr))))
            except Exception as e:  # reported by results(); a remote error comes back as its traceback's text
                outcomes.append(Outcome(error=f"(Slurm job {job.job_id}) {e}", log=Path(str(job.paths.stderr)),
                                        reason=reported_reason(str(e))))
        return outcomes

    def results(self) -> list[Any]:
        results = super().results()
        # every task succeeded: the record has done its job; a later run of the stage submits afresh
        # (its tasks find their finished work on disk) instead of reusing these results
        self.record.unlink(missing_ok=True)
        return results

    def cancel(self) -> None:
        for job in self.jobs:
            job.cancel(check=False)


def _still_useful(job: submitit.Job) -> bool:
    """A recorded task worth waiting for: finished with a result, or still pending / running.

    Its state comes from squeue first: accounting (what submitit's ``job.state`` reads) can lag a
    just-submitted array by seconds, which made a restarted driver resubmit tasks that were queued.
    """
    if job.paths.result_pickle.exists():
        try:
            job.result()
            return True
        except Exception:  # it failed: resubmit it
            return False
    return slurm_states({job.job_id}).get(job.job_id) in ACTIVE
