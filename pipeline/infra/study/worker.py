"""The worker loop: run trials of one study until it holds its budget of finished ones.

Workers call :func:`run_worker`, one per array task. Each trial records its owner; a trial asked for
after another worker claimed the budget's last slot is given back (:class:`SurplusTrial`). A worker does
not leave while another worker's trial still runs, since that worker may die and its trial be retried:
on PostgreSQL Optuna's heartbeats fail such trials, on the journal :func:`fail_orphaned_trials` does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from pipeline.infra.study.orphans import fail_orphaned_trials, owner
from pipeline.infra.study.storage import DONE, HEARTBEAT_S, LIVE, count, open_storage

log = logging.getLogger(__name__)


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
