"""Where a study lives: Optuna storage from the config's URL, and creating, counting and reading studies.

An empty URL means Optuna's file journal ``<run-dir>/optuna.journal`` (:data:`JOURNAL`), whose symlink lock
is safe on NFS; a torn last record (a full disk, a node lost mid-write) is moved aside before it is opened
(:func:`repair_journal`). A PostgreSQL URL gives an RDB storage with a two-connection pool and heartbeats,
so that a trial whose worker died is failed and re-queued (at most :data:`MAX_RETRY` times); its driver,
psycopg2, is an extra (:func:`check_driver`). :func:`create_study` creates a study once, before any worker
starts; :data:`DONE` and :data:`LIVE` are the trial states that count towards a study's budget.
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock, JournalStorage
from optuna.trial import TrialState

from pipeline.config import ConfigError
from pipeline.errors import InputError

log = logging.getLogger(__name__)

HEARTBEAT_S = 10  # a trial is stale after 3 heartbeats without a beat
MAX_RETRY = 3  # times a trial whose worker died is re-queued (PostgreSQL and journal alike)
DONE = (TrialState.COMPLETE, TrialState.PRUNED)
LIVE = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
JOURNAL = "optuna.journal"
PSYCOPG2_SCHEMES = ("postgresql", "postgresql+psycopg2")  # SQLAlchemy's default PostgreSQL driver is psycopg2


def open_storage(url: str, run_dir: Path, heartbeat_s: int = HEARTBEAT_S) -> optuna.storages.BaseStorage:
    if not url:
        path = Path(run_dir) / JOURNAL
        path.parent.mkdir(parents=True, exist_ok=True)
        repair_journal(path)
        return JournalStorage(JournalFileBackend(str(path)))  # default lock: a symlink, NFS-safe

    check_driver(url)
    with warnings.catch_warnings():  # heartbeats are marked experimental; we rely on them knowingly
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return _rdb_storage(url, heartbeat_s, 3 * heartbeat_s)


def repair_journal(path: Path) -> None:
    """A journal whose last record was cut off (a full disk, a node lost mid-write) would glue the next
    record onto it and break every later read. Holding the journal's own lock (so no worker is halfway
    through a write), move a torn last record aside to ``optuna.journal.torn-<time>`` with a warning;
    every complete record stays. A broken record before the last is not repairable: InputError."""
    if not path.exists() or path.stat().st_size == 0:
        return
    lock = JournalFileSymlinkLock(str(path))
    lock.acquire()
    try:
        data = path.read_bytes()
        end = data.rfind(b"\n") + 1  # the end of the last complete record
        for number, line in enumerate(data[:end].splitlines(), start=1):
            try:
                json.loads(line)
            except ValueError:
                raise InputError(f"{path}: record {number} is broken (a write was cut off and later records were "
                                 "joined to it); move the file aside to start the tuning afresh") from None
        if end == len(data):
            return
        aside = path.with_name(f"{path.name}.torn-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}")
        aside.write_bytes(data[end:])
        with open(path, "r+b") as journal:
            journal.truncate(end)
        log.warning("%s: its last record was cut off (%d bytes); moved to %s, tuning goes on with the %d "
                    "complete ones", path, len(data) - end, aside, data[:end].count(b"\n"))
    finally:
        lock.release()


def check_driver(url: str) -> None:
    """ConfigError (one line) when `url` needs psycopg2 and it is not installed (it is an extra)."""
    if url.partition("://")[0] not in PSYCOPG2_SCHEMES:
        return
    try:
        import psycopg2  # noqa: F401 - here: an optional extra, imported only to learn whether it is installed
    except ImportError:
        raise ConfigError("run.storage is a PostgreSQL URL but psycopg2 is not installed: "
                          "pip install 'mimic-adversarial-pipeline[postgres]' (or make setup)") from None


def _rdb_storage(url: str, heartbeat_s: int, grace_s: int) -> RDBStorage:
    return RDBStorage(
        url,
        # two connections at most: the trial loop and the heartbeat thread
        engine_kwargs={"pool_size": 1, "max_overflow": 1, "pool_pre_ping": True},
        heartbeat_interval=heartbeat_s,
        grace_period=grace_s,
        heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY),
    )


def create_study(url: str, run_dir: Path, name: str, direction: str = "maximize", seed: int = 0,
                 heartbeat_s: int = HEARTBEAT_S, metric: str = "", attrs: dict[str, Any] | None = None) -> optuna.Study:
    """Create (or reopen) the study before workers start; returns it.

    `metric` names the objective (optuna-dashboard shows it instead of "Objective 0"); `attrs` (JSON
    values: run directory, seed, search space, …) become the study's user attributes.
    """
    storage = open_storage(url, run_dir, heartbeat_s)
    study = optuna.create_study(storage=storage, study_name=name, direction=direction,
                                sampler=optuna.samplers.TPESampler(seed=seed), load_if_exists=True)
    if metric and study.metric_names != [metric]:
        with warnings.catch_warnings():  # experimental since 3.2, and stable in use
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([metric])
    for key, value in (attrs or {}).items():
        if study.user_attrs.get(key) != value:
            study.set_user_attr(key, value)
    return study


def finished_trials(url: str, run_dir: Path, name: str, heartbeat_s: int = HEARTBEAT_S) -> int:
    """COMPLETE + PRUNED trials of a study."""
    return count(optuna.load_study(study_name=name, storage=open_storage(url, run_dir, heartbeat_s)), DONE)


def count(study: optuna.Study, states: tuple[TrialState, ...]) -> int:
    return len(study.get_trials(deepcopy=False, states=states))
