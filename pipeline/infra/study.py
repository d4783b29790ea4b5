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
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, IntDistribution
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock, JournalStorage
from optuna.trial import TrialState

from pipeline.config import ConfigError
from pipeline.errors import InputError
from pipeline.infra.rundir import HOST, process_ended

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
        import psycopg2  # noqa: F401
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


# ---- search spaces: parameters in their own units, described for the study's user attributes ---------

def suggest(trial: optuna.Trial, name: str, distribution: BaseDistribution) -> Any:
    """trial.suggest_* for a declared distribution (Optuna's own dispatcher is private)."""
    if isinstance(distribution, CategoricalDistribution):
        return trial.suggest_categorical(name, distribution.choices)
    if isinstance(distribution, IntDistribution):
        return trial.suggest_int(name, distribution.low, distribution.high, step=distribution.step,
                                 log=distribution.log)
    return trial.suggest_float(name, distribution.low, distribution.high, step=distribution.step,
                               log=distribution.log)


def describe(distribution: BaseDistribution) -> list | str:
    """A distribution as a person reads it: the choices, or "low…high" (+ " log")."""
    if isinstance(distribution, CategoricalDistribution):
        return list(distribution.choices)
    return f"{distribution.low:g}…{distribution.high:g}" + (" log" if distribution.log else "")


# ---- who runs a trial, and the journal's stale-trial rule --------------------------------------------

def owner() -> dict[str, Any]:
    """This process as the owner of a trial: its Slurm task (if any, with its restart count), host, pid."""
    env = os.environ
    array, task = env.get("SLURM_ARRAY_JOB_ID"), env.get("SLURM_ARRAY_TASK_ID")
    return {"slurm_job": f"{array}_{task}" if array and task else env.get("SLURM_JOB_ID", ""),
            "restart": int(env.get("SLURM_RESTART_COUNT") or 0), "host": HOST, "pid": os.getpid()}


def orphaned(trials: list[optuna.trial.FrozenTrial], me: dict[str, Any]) -> list[optuna.trial.FrozenTrial]:
    """The RUNNING `trials` whose owner is gone (:func:`gone`), as seen by the process `me`."""
    owned = [(t, t.user_attrs["owner"]) for t in trials if isinstance(t.user_attrs.get("owner"), dict)]
    jobs = {o["slurm_job"] for _, o in owned if o.get("slurm_job") and o["slurm_job"] != me["slurm_job"]}
    from pipeline.infra.executor import slurm_states

    states = slurm_states(jobs) if jobs else {}
    return [t for t, o in owned if gone(o, me, states)]


def gone(o: dict[str, Any], me: dict[str, Any], states: dict[str, str]) -> bool:
    """Whether the owner `o` of a RUNNING trial has ended, as far as `me` can tell.

    - another Slurm task: Slurm shows it in a state that is not active (cancelled, failed, timed out,
      completed, …; squeue keeps a cancelled task COMPLETING while its processes still run); a task
      Slurm does not report is taken as alive;
    - my own Slurm task (or allocation): an earlier run of it (it was requeued), or — local workers
      sharing one allocation — a process on this host that has ended;
    - no Slurm: a process on this host that has ended. A process on another host: alive.
    Process ids are compared only outside Slurm or within one allocation: array tasks may run in
    containers with PID namespaces of their own.
    """
    from pipeline.infra.executor import ACTIVE

    job = o.get("slurm_job", "")
    if job and job != me["slurm_job"]:
        return job in states and states[job] not in ACTIVE
    if job and o.get("restart", 0) < me["restart"]:
        return True
    return o.get("host") == me["host"] and process_ended(int(o.get("pid", 0)))


def fail_orphaned_trials(study: optuna.Study, storage: optuna.storages.BaseStorage) -> list[int]:
    """The journal's fail_stale_trials: fail each RUNNING trial whose owner is gone and queue it again
    (same parameters; ``system_attrs["failed_trial"]`` as Optuna's RetryHeartbeatStaleTrialCallback,
    at most MAX_RETRY times per original trial). Returns the numbers of the trials this call failed."""
    failed = []
    for trial in orphaned(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)), owner()):
        try:
            storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)  # as Optuna's fail_stale_trials
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker failed it first (or it just finished): that one re-queues it
        history = [*trial.system_attrs.get("retry_history", []), trial.number]
        log.warning("trial %d: its worker %s is gone; failed%s", trial.number, trial.user_attrs["owner"],
                    ", re-queued" if len(history) <= MAX_RETRY else f" (retried {MAX_RETRY} times already)")
        failed.append(trial.number)
        if len(history) <= MAX_RETRY:
            study.add_trial(optuna.trial.create_trial(
                state=TrialState.WAITING, params=trial.params, distributions=trial.distributions,
                user_attrs={k: v for k, v in trial.user_attrs.items() if k not in ("owner", "worker")},
                system_attrs={**trial.system_attrs, "failed_trial": history[0], "retry_history": history}))
    return failed


# ---- the worker loop and the driver -------------------------------------------------------------------

def run_worker(url: str, run_dir: Path, name: str, objective: Callable[[optuna.Trial], float],
               n_trials: int, worker: int, seed: int = 0, poll_s: float = 2.0,
               pruner: optuna.pruners.BasePruner | None = None, heartbeat_s: int = HEARTBEAT_S,
               startup_trials: int = 10) -> int:
    """Run trials of study `name` until it holds `n_trials` COMPLETE or PRUNED ones.

    A worker does not leave while another worker's trial is still RUNNING: if that worker dies,
    its trial is failed and re-queued (PostgreSQL: for its missing heartbeat; journal: for its
    owner that is gone, checked every `heartbeat_s`), and someone has to run the retry.
    `startup_trials`: random trials (over the whole study) before TPE models the results. Returns
    the number of trials this worker finished.
    """
    storage = open_storage(url, run_dir, heartbeat_s)
    # per-worker sampler seed: workers must not propose the same first points
    study = optuna.load_study(study_name=name, storage=storage,
                              sampler=optuna.samplers.TPESampler(seed=seed + 1000 * worker,
                                                                 n_startup_trials=startup_trials),
                              pruner=pruner)
    finished, checked = 0, float("-inf")
    me = owner()

    def guarded(trial: optuna.Trial) -> float:
        trial.set_user_attr("owner", me)
        if trial.number in _surplus_numbers(study, n_trials):
            # another worker claimed the last slot in the same instant: give this one back
            trial.set_user_attr("surplus", True)
            raise SurplusTrial(f"trial {trial.number} is beyond the budget of {n_trials}")
        trial.set_user_attr("worker", worker)
        return objective(trial)

    while True:
        if isinstance(storage, RDBStorage):
            optuna.storages.fail_stale_trials(study)
        elif time.monotonic() - checked >= heartbeat_s:  # journal: one sacct call per heartbeat_s at most
            fail_orphaned_trials(study, storage)
            checked = time.monotonic()
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
              direction: str = "maximize", metric: str = "", search_space: dict | None = None) -> str:
    """The driver of a distributed study: create it once, run `workers` worker tasks, return its name.

    The study is named ``<run>-<stage>-<tag>`` (settings.study_name): the tag stands for the run
    directory and for everything its trials depend on — the stage's config table, `settings`, the seed
    and the stage's inputs — so a stage redone with another search space, objective, budget or data
    starts a study of its own instead of mixing its trials with the old ones, while a stage resumed
    as it was continues its study. `metric` names the objective; the study's user attributes hold the
    run directory, seed, objective, `search_space` and config.

    A worker that dies is tolerated when the others finished the study (its trial was retried).
    `worker` is called as worker(run_dir, storage, name, trials, worker_index, settings).
    """
    from dataclasses import asdict

    from pipeline.config import without_password
    from pipeline.infra.executor import TaskFailed
    from pipeline.infra.launch import run_array, stage_seed, study_name
    from pipeline.infra.stages import STAGES

    seed = stage_seed(cfg, stage)
    config = asdict(cfg.section(stage))
    name = study_name(run_dir, stage, {"config": config, "settings": settings, "seed": seed,
                                       "inputs": run_dir.fingerprints(*STAGES[stage].inputs)})
    attrs = {"run_dir": str(run_dir.path), "stage": stage, "seed": seed, "run_seed": cfg.run.seed,
             "objective": metric, "direction": direction, "search_space": search_space or {}, "config": config}
    create_study(cfg.run.storage, run_dir.path, name, direction=direction, seed=seed,
                 heartbeat_s=cfg.run.heartbeat_s, metric=metric, attrs=attrs)
    settings = {**settings, "seed": seed, "workers": cfg.run.workers, "heartbeat_s": cfg.run.heartbeat_s}
    # the workers get the URL without its password (their calls are pickled into the run directory on
    # Slurm); libpq reads it from PGPASSWORD, which local processes and Slurm jobs inherit, or ~/.pgpass
    url, password = without_password(cfg.run.storage)
    if password:
        os.environ["PGPASSWORD"] = password
    calls = [(str(run_dir.path), url, name, trials, w, settings) for w in range(cfg.run.workers)]
    log.info("%s: study %s in %s, %d trials, %d workers", stage, name,
             url or run_dir.path / JOURNAL, trials, cfg.run.workers)
    try:
        run_array(cfg, run_dir, stage, worker, calls)
    except TaskFailed as e:
        if finished_trials(cfg.run.storage, run_dir.path, name, cfg.run.heartbeat_s) < trials:
            raise
        log.warning("%s: a worker failed but the study is complete: %s", stage, str(e).splitlines()[0])
    return name
