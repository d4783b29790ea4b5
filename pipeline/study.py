"""Distributed Optuna: one study in shared storage, W workers that run trials until it holds N.

Storage is a URL from the config. Empty means a journal file in the run directory (safe for
several processes on one machine). On a cluster use PostgreSQL
(``postgresql+psycopg2://user:pw@host:port/db``): each worker keeps a two-connection pool and sends
heartbeats, so a trial whose worker was killed is marked FAIL and re-queued once it goes stale.

The driver creates the study once (:func:`create_study`) before any worker starts — concurrent
first-time schema creation races. Workers call :func:`run_worker`.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import TrialState

log = logging.getLogger(__name__)

HEARTBEAT_S = 10  # a trial is stale after 3 heartbeats without a beat
DONE = (TrialState.COMPLETE, TrialState.PRUNED)
LIVE = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)


def open_storage(url: str, run_dir: Path, heartbeat_s: int = HEARTBEAT_S) -> optuna.storages.BaseStorage:
    if not url:
        path = Path(run_dir) / "optuna.journal"
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    with warnings.catch_warnings():  # heartbeats are marked experimental; we rely on them knowingly
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return _rdb_storage(url, heartbeat_s, 3 * heartbeat_s)


def _rdb_storage(url: str, heartbeat_s: int, grace_s: int) -> RDBStorage:
    return RDBStorage(
        url,
        # two connections at most: the trial loop and the heartbeat thread
        engine_kwargs={"pool_size": 1, "max_overflow": 1, "pool_pre_ping": True},
        heartbeat_interval=heartbeat_s,
        grace_period=grace_s,
        heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=3),
    )


def create_study(url: str, run_dir: Path, name: str, direction: str = "maximize",
                 seed: int = 0, heartbeat_s: int = HEARTBEAT_S) -> optuna.Study:
    """Create (or reopen) the study before workers start; returns it."""
    storage = open_storage(url, run_dir, heartbeat_s)
    return optuna.create_study(storage=storage, study_name=name, direction=direction,
                               sampler=optuna.samplers.TPESampler(seed=seed), load_if_exists=True)


def finished_trials(url: str, run_dir: Path, name: str, heartbeat_s: int = HEARTBEAT_S) -> int:
    """COMPLETE + PRUNED trials of a study."""
    return count(optuna.load_study(study_name=name, storage=open_storage(url, run_dir, heartbeat_s)), DONE)


def count(study: optuna.Study, states: tuple[TrialState, ...]) -> int:
    return len(study.get_trials(deepcopy=False, states=states))


def run_worker(url: str, run_dir: Path, name: str, objective: Callable[[optuna.Trial], float],
               n_trials: int, worker: int, seed: int = 0, poll_s: float = 2.0,
               pruner: optuna.pruners.BasePruner | None = None, heartbeat_s: int = HEARTBEAT_S,
               startup_trials: int = 10) -> int:
    """Run trials of study `name` until it holds `n_trials` COMPLETE or PRUNED ones.

    A worker does not leave while another worker's trial is still RUNNING: if that worker dies,
    its stale trial is failed and re-queued, and someone has to run the retry. `startup_trials`:
    random trials (over the whole study) before TPE models the results. Returns the number of
    trials this worker finished.
    """
    storage = open_storage(url, run_dir, heartbeat_s)
    # per-worker sampler seed: workers must not propose the same first points
    study = optuna.load_study(study_name=name, storage=storage,
                              sampler=optuna.samplers.TPESampler(seed=seed + 1000 * worker,
                                                                 n_startup_trials=startup_trials),
                              pruner=pruner)
    finished = 0

    def guarded(trial: optuna.Trial) -> float:
        if trial.number in _surplus_numbers(study, n_trials):
            # another worker claimed the last slot in the same instant: give this one back
            trial.set_user_attr("surplus", True)
            raise SurplusTrial(f"trial {trial.number} is beyond the budget of {n_trials}")
        trial.set_user_attr("worker", worker)
        return objective(trial)

    while True:
        if isinstance(storage, RDBStorage):
            optuna.storages.fail_stale_trials(study)
        if count(study, DONE) >= n_trials:
            break
        if count(study, LIVE) >= n_trials and not count(study, (TrialState.WAITING,)):
            time.sleep(poll_s)  # the budget is taken by running trials; wait in case one dies
            continue
        # optimize() runs the heartbeat thread and handles pruning; one trial per call so that the
        # budget is re-checked between trials
        study.optimize(guarded, n_trials=1, catch=(SurplusTrial,), gc_after_trial=False)
        finished += 1
    log.info("worker %d ran %d trial(s); study %s holds %d finished", worker, finished, name,
             count(study, DONE))
    return finished


class SurplusTrial(Exception):
    """A trial asked for after the study's budget was already claimed."""


def _surplus_numbers(study: optuna.Study, n_trials: int) -> set[int]:
    """Numbers of live trials beyond the first `n_trials` (by trial number)."""
    live = sorted(t.number for t in study.get_trials(deepcopy=False, states=LIVE))
    return set(live[n_trials:])


def run_study(cfg, run_dir, stage: str, worker: Callable[..., int], trials: int, settings: dict,
              direction: str = "maximize") -> str:
    """The driver of a distributed study: create it once, run `workers` worker tasks, return its name.

    A worker that dies is tolerated when the others finished the study (its trial was retried).
    `worker` is called as worker(run_dir, storage, name, trials, worker_index, settings).
    """
    from .config import without_password
    from .executor import TaskFailed
    from .settings import run_array, stage_seed, study_name

    name = study_name(run_dir, stage)
    settings = {**settings, "seed": stage_seed(cfg, stage), "workers": cfg.run.workers,
                "heartbeat_s": cfg.run.heartbeat_s}
    create_study(cfg.run.storage, run_dir.path, name, direction=direction, seed=settings["seed"],
                 heartbeat_s=cfg.run.heartbeat_s)
    # the workers get the URL without its password (their calls are pickled into the run directory on
    # Slurm); libpq reads it from PGPASSWORD, which local processes and Slurm jobs inherit, or ~/.pgpass
    url, password = without_password(cfg.run.storage)
    if password:
        os.environ["PGPASSWORD"] = password
    calls = [(str(run_dir.path), url, name, trials, w, settings) for w in range(cfg.run.workers)]
    log.info("%s: study %s, %d trials, %d workers", stage, name, trials, cfg.run.workers)
    try:
        run_array(cfg, run_dir, stage, worker, calls)
    except TaskFailed as e:
        if finished_trials(cfg.run.storage, run_dir.path, name, cfg.run.heartbeat_s) < trials:
            raise
        log.warning("%s: a worker failed but the study is complete: %s", stage, str(e).splitlines()[0])
    return name
