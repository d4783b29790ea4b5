"""How one task of an array ended, and the two errors a stage's array raises.

:class:`Outcome` holds a task's result or the error it raised, with its log file; :func:`failure` builds the
outcome of a task that raised. :class:`TaskFailed` is what a stage raises once all its tasks have ended and
one failed; :class:`ArrayBusy` is what a driver raises when an earlier array (or local workers) of the stage,
doing other work, still runs in the run directory — or, with ``--force``, has not ended
:data:`END_WAIT_S` seconds after it was told to stop.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import InputError, StageBusy


class TaskFailed(RuntimeError):
    """A task of a stage raised or its job died; the message says which and where its log is."""


class ArrayBusy(StageBusy):
    """An earlier array (or local workers) of the stage, doing other work, still runs in this run directory."""


END_WAIT_S = 900  # Slurm's KillWait and epilogs take seconds; a node that does not answer, minutes


@dataclass
class Outcome:
    """How one task ended: its result, or the error it raised; and where its log is."""

    result: Any = None
    error: str | None = None
    log: Path | None = None
    reason: str | None = None  # the one line of an InputError the task raised (a full disk, a bad input)


def failure(error: BaseException, log_file: Path) -> Outcome:
    """The outcome of a task that raised `error`."""
    return Outcome(error=repr(error), log=log_file, reason=str(error) if isinstance(error, InputError) else None)
