"""Who runs a trial, and the journal's stale-trial rule (the journal has no heartbeats).

Each trial records its owner (:func:`owner`: the Slurm task with its restart count, the host and the pid,
in ``user_attrs["owner"]``). A RUNNING trial whose owner is gone (:func:`gone`: its Slurm task no longer
active, an earlier run of my own requeued task, or its process on this host ended) is failed and queued
again with the same parameters, at most ``MAX_RETRY`` times (:func:`fail_orphaned_trials`), as Optuna's
heartbeats do on PostgreSQL.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import optuna
from optuna.trial import TrialState

from pipeline.infra.executor import ACTIVE, slurm_states
from pipeline.infra.rundir import HOST, process_ended
from pipeline.infra.study.storage import MAX_RETRY

log = logging.getLogger(__name__)


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
