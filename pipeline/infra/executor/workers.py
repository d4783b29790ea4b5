"""The records of local worker processes (``jobs/<stage>/workers.json``): who is still alive, and ending them.

A local driver records its workers' pids with their start times (:func:`process_start`, which with the pid
names one process, as pids are reused); a later driver of the stage finds those still alive on this host
(:func:`live_workers`) and, with ``--force``, kills them and waits until they have ended
(:func:`end_local_workers`); ``pipeline cancel`` ends them too.

A record is read from the run directory, which others may write: it never chooses a process to signal by
itself. The driver starts its workers with :data:`WORKER_ENV` set to :func:`worker_mark` (the stage's jobs
folder and a random token of this launch); a recorded process counts as a worker, and is signalled, only when
its own environment (``/proc/PID/environ``) carries that mark — which a planted record cannot give to any
other process.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import signal
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from pipeline.infra import layout
from pipeline.infra.executor.outcome import END_WAIT_S, ArrayBusy
from pipeline.infra.rundir import HOST, write_json

log = logging.getLogger(__name__)

WORKER_ENV = "PIPELINE_WORKER"  # in a local worker's environment from its start: worker_mark()


def new_token() -> str:
    """A launch's token: unknowable before the launch, so no other process can have carried it."""
    return secrets.token_hex(16)


def worker_mark(jobs_dir: Path, token: str) -> str:
    """What the workers of one launch of a stage carry in :data:`WORKER_ENV`: the stage's jobs folder (a
    mark copied from another run's record does not name this one) and the launch's token."""
    return f"{Path(jobs_dir).resolve()} {token}"


@contextlib.contextmanager
def marked_environment(mark: str) -> Iterator[None]:
    """:data:`WORKER_ENV` set to `mark` while workers are started (a process's /proc environ is the one it
    started with), then as before."""
    before = os.environ.get(WORKER_ENV)
    os.environ[WORKER_ENV] = mark
    try:
        yield
    finally:
        if before is None:
            del os.environ[WORKER_ENV]
        else:
            os.environ[WORKER_ENV] = before


def carries(pid: int, mark: str) -> bool:
    """Whether process `pid` started with :data:`WORKER_ENV` = `mark` (False where /proc cannot tell)."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:  # gone, or another user's process
        return False
    return f"{WORKER_ENV}={mark}".encode() in environ.split(b"\0")


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state first), or None: no such process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return fields if len(fields) > 19 else None


def process_start(pid: int) -> str | None:
    """When process `pid` started (clock ticks since boot, from /proc): with the pid, it names one process
    (a pid is reused once its process has ended). None where /proc has no such process."""
    fields = _stat(pid)
    return fields[19] if fields else None


def running(pid: int, start: str | None) -> bool:
    """Whether the process that started at `start` as `pid` is still there, and not a zombie."""
    fields = _stat(pid)
    return start is not None and fields is not None and fields[19] == start and fields[0] != "Z"


def record_workers(record: Path, token: str, pids: Sequence[int]) -> None:
    """Write `record` (``workers.json``): the workers `pids` of the launch with `token`, on this host."""
    write_json(record, {"host": HOST, "token": token, "workers": [[pid, process_start(pid)] for pid in pids]})


def live_workers(record: Path) -> list[tuple[int, str, str]]:
    """(pid, start time, mark) of the local workers in `record` (``workers.json``) still alive on this host
    and carrying their launch's mark. A live process the record names that does not carry it is not a
    worker of this stage: left alone, with a warning."""
    if not record.exists():
        return []
    data = json.loads(record.read_text())
    if data.get("host") != HOST:
        return []  # another machine's workers die with their driver there
    token = data.get("token")
    mark = worker_mark(record.parent, token) if isinstance(token, str) else None  # None: an older record's
    live = [(pid, start) for pid, start in data["workers"] if type(pid) is int and pid > 0 and running(pid, start)]
    workers = [(pid, start, mark) for pid, start in live if mark and carries(pid, mark)]
    for pid in sorted({pid for pid, _ in live} - {pid for pid, _, _ in workers}):
        log.warning("%s names pid %s, a process this pipeline did not start for this stage: left alone", record, pid)
    return workers

def _kill_if_worker(pid: int, start: str, mark: str) -> None:
    """SIGKILL `pid` if it is still the worker that started at `start` carrying `mark`. Through a pidfd
    where there is one: the process checked is the process signalled, even if the pid is reused between."""
    try:
        pidfd = os.pidfd_open(pid) if hasattr(os, "pidfd_open") else None
    except ProcessLookupError:
        return
    except OSError:  # no pidfds here (an old kernel, a sandbox): check, then kill by pid
        pidfd = None
    try:
        if not (running(pid, start) and carries(pid, mark)):
            return
        with contextlib.suppress(ProcessLookupError):
            if pidfd is None:
                os.kill(pid, signal.SIGKILL)
            else:
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    finally:
        if pidfd is not None:
            os.close(pidfd)


def end_local_workers(workers: Sequence[tuple[int, str, str]], stage: str) -> None:
    """SIGKILL the local workers (from :func:`live_workers`) a driver left, and return once they have ended."""
    for pid, start, mark in workers:
        _kill_if_worker(pid, start, mark)
    deadline = time.monotonic() + END_WAIT_S
    while alive := [pid for pid, start, _ in workers if running(pid, start)]:
        if time.monotonic() > deadline:
            raise ArrayBusy(f"{stage}: local worker pid {', '.join(map(str, alive))} still alive after SIGKILL")
        time.sleep(0.1)


def end_run_workers(run_dir: Path) -> list[int]:
    """``pipeline cancel``: end the live local workers of every stage of `run_dir` (those :func:`live_workers`
    finds: carrying their launch's mark); returns their pids. Their driver sees its pool broken and fails."""
    ended = []
    for record in sorted(Path(run_dir).glob(f"{layout.JOBS}/*/{layout.LOCAL_WORKERS}")):
        workers = live_workers(record)
        end_local_workers(workers, record.parent.name)
        ended += [pid for pid, _, _ in workers]
    return sorted(ended)
