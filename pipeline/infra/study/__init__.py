"""Distributed Optuna: one study in shared storage, W workers that run trials until it holds N.

Storage is a URL from the config. Empty means a journal file, ``<run-dir>/optuna.journal``: Optuna's
file journal, whose lock (a symlink) is safe on NFS, so it serves several processes on one machine
and Slurm array tasks on the nodes of a cluster whose run directory is on a shared file system.
With PostgreSQL (``postgresql+psycopg2://user@host:port/db``, the ``[postgres]`` extra) each worker
keeps a two-connection pool and sends heartbeats, so a trial whose worker was killed is marked FAIL
and re-queued once it goes stale. The journal has no heartbeats; our own rule does the same there:
each trial records who runs it (``user_attrs["owner"]``: the Slurm task, host and pid), and a RUNNING
trial whose owner is gone — its Slurm task no longer active, or its process on this host ended — is
failed and re-queued with the same parameters (:func:`fail_orphaned_trials`).

The driver creates the study once (:func:`create_study`) before any worker starts — concurrent
first-time schema creation races. Workers call :func:`run_worker`.

The modules: :mod:`.storage` (storage, creating and counting studies), :mod:`.space` (search spaces),
:mod:`.orphans` (trial owners and the journal's stale-trial rule), :mod:`.worker` (the worker loop) and
:mod:`.driver` (a tuning stage's driver, :func:`run_study`).
"""

from pipeline.infra.rundir import HOST  # a trial's owner names its host as this
from pipeline.infra.study.driver import run_study
from pipeline.infra.study.orphans import fail_orphaned_trials, gone, orphaned, owner
from pipeline.infra.study.space import describe, suggest
from pipeline.infra.study.storage import (
    DONE,
    HEARTBEAT_S,
    JOURNAL,
    LIVE,
    MAX_RETRY,
    PSYCOPG2_SCHEMES,
    check_driver,
    count,
    create_study,
    finished_trials,
    open_storage,
    repair_journal,
)
from pipeline.infra.study.worker import SurplusTrial, run_worker

__all__ = [
    "DONE", "HEARTBEAT_S", "HOST", "JOURNAL", "LIVE", "MAX_RETRY", "PSYCOPG2_SCHEMES",
    "SurplusTrial",
    "check_driver", "count", "create_study", "describe", "fail_orphaned_trials", "finished_trials", "gone",
    "open_storage", "orphaned", "owner", "repair_journal", "run_study", "run_worker", "suggest",
]
