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


def process_start(pid: int) -> str | None:
    """When process `pid` started (clock ticks since boot, from /proc): with the pid, it names one process
    (a pid is reused once its process has ended). None where /proc has no such process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[19]
    except (OSError, IndexError):
        return None


def live_workers(record: Path) -> list[int]:
    """The local workers in `record` (``workers.json``) that are still alive on this host."""
    if not record.exists():
        return []
    data = json.loads(record.read_text())
    if data.get("host") != HOST:
        return []  # another machine's workers die with their driver there
    return [pid for pid, start in data["workers"] if process_start(pid) is not None and process_start(pid) == start]


def end_local_workers(pids: Sequence[int], stage: str) -> None:
    """SIGKILL local workers a driver left, and return once they have ended."""
    starts = {pid: process_start(pid) for pid in pids}
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + END_WAIT_S
    while alive := [pid for pid in pids if starts[pid] is not None and process_start(pid) == starts[pid]
                    and _process_state(pid) != "Z"]:
        if time.monotonic() > deadline:
            raise ArrayBusy(f"{stage}: local worker pid {', '.join(map(str, alive))} still alive after SIGKILL")
        time.sleep(0.1)


def _process_state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return None
