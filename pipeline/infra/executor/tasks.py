"""What runs inside a task: worker-process setup and the wrappers around a stage's task function.

:func:`ensure_logging` gives a worker process (local or a Slurm task) the driver's INFO log lines
(:data:`LOG_FORMAT`); :func:`start_worker` initializes a local worker so that it dies with its driver.
:class:`LoggedTask` also writes a task's log lines (and traceback) to a file of its own;
:class:`CheckpointableTask` lets submitit requeue a preempted or timed-out Slurm task and checks, at the
task's start, that it runs the driver's versions (:mod:`pipeline.infra.versions`).
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import submitit

from pipeline.infra.versions import check_versions, commit, runtime_versions

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def ensure_logging() -> None:
    """In a worker process (local or a Slurm task), log INFO lines like the driver does."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, datefmt="%H:%M:%S")


PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def start_worker(driver: int) -> None:
    """Initializer of a local worker process: it dies with the driver that started it.

    Without this a killed driver (SIGKILL, a node's OOM killer, a closed terminal) left its workers
    computing for minutes with nobody to collect their results. On Linux the kernel sends SIGKILL
    when the parent ends (PR_SET_PDEATHSIG); elsewhere a thread polls the parent's pid.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    else:
        def watch() -> None:
            while os.getppid() == driver:
                time.sleep(1.0)
            os._exit(1)

        threading.Thread(target=watch, daemon=True, name="driver-watch").start()
    if os.getppid() != driver:  # the driver was already gone when the request took effect
        os._exit(1)
    ensure_logging()


class LoggedTask:
    """A task function whose log lines (and traceback, if it fails) also go to a file of its own."""

    def __init__(self, fn: Callable[..., Any], log_file: Path):
        self.fn, self.log_file = fn, Path(log_file)

    def __call__(self, *args: Any) -> Any:
        ensure_logging()
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(self.log_file, mode="a")
        handler.setFormatter(logging.Formatter(LOG_FORMAT, datefmt="%H:%M:%S"))
        root = logging.getLogger()
        root.addHandler(handler)
        try:
            return self.fn(*args)
        except Exception:
            logging.getLogger(__name__).error("task failed:\n%s", traceback.format_exc())
            raise
        finally:
            root.removeHandler(handler)
            handler.close()


class CheckpointableTask(submitit.helpers.Checkpointable):
    """A task function that saves its progress on disk, so that a requeued call resumes.

    submitit calls :meth:`checkpoint` on preemption / time-out; the default resubmits this same
    call with the same arguments, and the function picks up from what it saved.

    It also records the driver's versions (:mod:`pipeline.infra.versions`) when created, and a task
    whose Python, packages or source commit differ from them fails at its start, naming each one.
    """

    def __init__(self, fn: Callable[..., Any]):
        self.fn = fn
        self.driver_versions = runtime_versions()

    def __call__(self, *args: Any) -> Any:
        ensure_logging()
        # which interpreter runs the task (a container's, or the driver's environment): the task log says
        logging.getLogger(__name__).info("task runs %s (Python %s, pipeline source commit %s)", sys.executable,
                                         platform.python_version(), commit() or "unknown")
        if getattr(self, "driver_versions", None) is not None:  # None: pickled before versions were recorded
            check_versions(self.driver_versions)
        return self.fn(*args)

    def __repr__(self) -> str:
        return f"CheckpointableTask({getattr(self.fn, '__qualname__', self.fn)!r})"
