"""The records of local worker processes (``jobs/<stage>/workers.json``): who is still alive, and ending them.

A local driver records its workers' pids with their start times (:func:`process_start`, which with the pid
names one process, as pids are reused); a later driver of the stage finds those still alive on this host
(:func:`live_workers`) and, with ``--force``, kills them and waits until they have ended
(:func:`end_local_workers`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path

from pipeline.infra.executor.outcome import END_WAIT_S, ArrayBusy
from pipeline.infra.rundir import HOST


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


def live_workers(record: Path) -> list[int]:
    """The local workers in `record` (``workers.json``) that are still alive on this host."""
    if not record.exists():
        return []
    data = json.loads(record.read_text())
    if data.get("host") != HOST:
        return []  # another machine's workers die with their driver there
    return [pid for pid, start in data["workers"] if running(pid, start)]


def end_local_workers(pids: Sequence[int], stage: str) -> None:
    """SIGKILL local workers a driver left, and return once they have ended."""
    starts = {pid: process_start(pid) for pid in pids}
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + END_WAIT_S
    while alive := [pid for pid in pids if running(pid, starts[pid])]:
        if time.monotonic() > deadline:
            raise ArrayBusy(f"{stage}: local worker pid {', '.join(map(str, alive))} still alive after SIGKILL")
        time.sleep(0.1)
