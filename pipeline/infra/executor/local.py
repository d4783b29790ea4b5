"""The backends on this machine: ``debug`` (in this process, one task after the other) and ``local``.

:class:`LocalExecutor` runs at most `workers` spawned processes at once, each dying with its driver
(:func:`~pipeline.infra.executor.tasks.start_worker`), and records them in ``jobs/<stage>/workers.json``
while they work, so that a later driver of the stage waits for them (:mod:`.workers`).
:class:`DebugExecutor` runs the tasks in the driver itself, for pdb and tests.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from typing import Any

from tqdm.auto import tqdm

from pipeline.infra import layout
from pipeline.infra.executor.base import Executor
from pipeline.infra.executor.outcome import Outcome, failure
from pipeline.infra.executor.tasks import LoggedTask, start_worker
from pipeline.infra.executor.workers import marked_environment, new_token, record_workers, worker_mark


class DebugExecutor(Executor):
    """In this process, one task after the other (for pdb and tests)."""

    kind = "debug"

    def submit(self, fn: Callable[..., Any], calls: Sequence[tuple]) -> None:
        self.claim()
        self.fn, self.calls, self._outcomes = fn, [tuple(c) for c in calls], []

    def wait(self, progress: bool = True) -> None:
        for i, args in enumerate(tqdm(self.calls, desc=self.stage, disable=not progress)):
            try:
                self._outcomes.append(Outcome(LoggedTask(self.fn, self.task_log(i))(*args), log=self.task_log(i)))
            except Exception as e:  # the failure rule: the other tasks still run
                self._outcomes.append(failure(e, self.task_log(i)))

    def outcomes(self) -> list[Outcome]:
        return self._outcomes


class LocalExecutor(Executor):
    """At most `workers` processes at once on this machine."""

    kind = "local"

    def submit(self, fn: Callable[..., Any], calls: Sequence[tuple]) -> None:
        self.claim()
        self.calls = [tuple(c) for c in calls]
        # spawn, not fork: a forked child of a process holding torch/OpenMP threads can deadlock
        self._pool = ProcessPoolExecutor(max_workers=min(self.workers, len(self.calls)),
                                         mp_context=multiprocessing.get_context("spawn"),
                                         initializer=start_worker, initargs=(os.getpid(),))
        token = new_token()
        # the pool starts its workers as tasks are submitted: each starts carrying this launch's mark, the
        # only thing that lets a later driver or `pipeline cancel` signal it
        with marked_environment(worker_mark(self.jobs_dir, token)):
            self._futures: list[Future] = [self._pool.submit(LoggedTask(fn, self.task_log(i)), *args)
                                           for i, args in enumerate(self.calls)]
        # who works for this stage now: a later driver waits for them (they die with this driver, but a
        # process's death takes a moment, and elsewhere than Linux only a poll notices it)
        record_workers(self.jobs_dir / layout.LOCAL_WORKERS, token,
                       [w.pid for w in multiprocessing.active_children()])

    def wait(self, progress: bool = True) -> None:
        for _ in tqdm(as_completed(self._futures), total=len(self._futures), desc=self.stage, disable=not progress):
            pass
        self._pool.shutdown()
        (self.jobs_dir / layout.LOCAL_WORKERS).unlink(missing_ok=True)

    def outcomes(self) -> list[Outcome]:
        outcomes = []
        for i, future in enumerate(self._futures):
            if future.cancelled():
                outcomes.append(Outcome(error="cancelled", log=self.task_log(i)))
            elif future.exception() is not None:
                outcomes.append(failure(future.exception(), self.task_log(i)))
            else:
                outcomes.append(Outcome(future.result(), log=self.task_log(i)))
        return outcomes

    def cancel(self) -> None:
        """Drop the queued tasks and stop the running ones (shutdown alone lets them run to the end)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        for worker in multiprocessing.active_children():
            worker.terminate()
