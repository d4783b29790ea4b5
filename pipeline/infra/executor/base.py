"""The interface every backend implements: :class:`Executor` runs the calls of one stage's array.

A backend subclasses it with ``submit`` (start the array), ``wait``, ``outcomes`` and, where something
can be stopped, ``cancel``; the base class holds what is the same everywhere: :meth:`Executor.claim` (no
two arrays of one stage write one run directory), :meth:`Executor.results` (results in call order, the
first failure as :class:`TaskFailed`) and :meth:`Executor.run` (submit, wait, results; an interrupted
driver cancels its tasks).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pipeline.infra import layout
from pipeline.infra.executor.outcome import ArrayBusy, Outcome, TaskFailed
from pipeline.infra.executor.profile import job_name
from pipeline.infra.executor.states import arrays_of, earlier_tasks, end_slurm_tasks
from pipeline.infra.executor.workers import end_local_workers, live_workers

log = logging.getLogger(__name__)


class Executor:
    """Runs the calls of one stage's array: ``submit`` them, then ``wait``, ``results``, ``cancel``."""

    kind = ""

    def __init__(self, stage: str, jobs_dir: Path, workers: int = 1, force: bool = False):
        self.stage, self.jobs_dir, self.workers = stage, Path(jobs_dir), max(1, workers)
        self.force = force  # cancel what still runs of an earlier array of the stage (--force)
        # the name the stage's Slurm arrays carry: a job is this run's only where Slurm shows it
        self.name = job_name(stage, self.jobs_dir.parent.parent)
        self.calls: list[tuple] = []

    def claim(self, keep: set[str] = frozenset(), unrecorded: bool = False) -> None:
        """Make sure nothing else writes this stage's outputs: this run's Slurm tasks of an earlier array
        (recorded in ``array.json``, or with `unrecorded` found by job name) other than those in `keep`
        (reattached), and local workers a driver left (``workers.json``). Found: ArrayBusy, or with `force`
        they are stopped and awaited."""
        slurm = sorted(earlier_tasks(self.jobs_dir / layout.ARRAY_RECORD, self.name, unrecorded) - set(keep))
        local = live_workers(self.jobs_dir / layout.LOCAL_WORKERS)
        if not slurm and not local:
            return
        pids = ", ".join(str(pid) for pid, _, _ in local)
        what = ", ".join(filter(None, [f"Slurm array {', '.join(arrays_of(slurm))}" if slurm else "",
                                        f"local worker pid {pids}" if local else ""]))
        if not self.force:
            raise ArrayBusy(f"{self.stage}: {what} of an earlier run of this stage, with other work, still runs "
                            f"in {self.jobs_dir.parent.parent}; wait for it, stop it with `python -m pipeline "
                            f"cancel --run-dir {self.jobs_dir.parent.parent}`, or run with --force to stop it first")
        log.warning("%s: --force: stopping %s of an earlier run of this stage, and waiting until it has ended",
                    self.stage, what)
        if slurm:
            end_slurm_tasks(slurm, self.stage)
        if local:
            end_local_workers(local, self.stage)

    def task_log(self, index: int) -> Path:
        return self.jobs_dir / f"task-{index}.log"

    def submit(self, fn: Callable[..., Any], calls: Sequence[tuple]) -> None:
        raise NotImplementedError

    def wait(self, progress: bool = True) -> None:
        raise NotImplementedError

    def outcomes(self) -> list[Outcome]:
        raise NotImplementedError

    def cancel(self) -> None:
        """Stop what has not ended (the tasks' progress on disk stays, so a later run resumes)."""

    def results(self) -> list[Any]:
        """The results in call order, once every task has ended; TaskFailed names the first failure."""
        outcomes = self.outcomes()
        failed = [i for i, o in enumerate(outcomes) if o.error is not None]
        if failed:
            i = failed[0]
            first = outcomes[i]
            more = f" ({len(failed) - 1} more failed)" if len(failed) > 1 else ""
            empty = not (first.log and first.log.exists() and first.log.stat().st_size)
            log_file = f"{first.log}{' (empty)' if empty else ''}"
            if first.reason:  # the task said what is wrong in one line: that line, not a traceback
                raise TaskFailed(f"{self.stage}: task {i} failed{more}: {first.reason}; log: {log_file}")
            raise TaskFailed(f"{self.stage}: task {i} {self.calls[i]!r} failed{more}; log: {log_file}\n"
                             f"{first.error}")
        return [o.result for o in outcomes]

    def run(self, fn: Callable[..., Any], calls: Sequence[tuple], progress: bool = True) -> list[Any]:
        """Submit, wait for every task, return the results; an interrupted driver cancels its tasks."""
        self.submit(fn, calls)
        try:
            self.wait(progress)
        except KeyboardInterrupt:
            self.cancel()
            raise
        return self.results()
