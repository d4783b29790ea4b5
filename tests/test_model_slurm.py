"""The model stage on the real Slurm cluster, with Optuna on the real PostgreSQL or on the journal file."""

import json
import os
import signal
import threading
import time

import optuna
import pytest

from pipeline.cli import main
from pipeline.infra import study
from tests.support.runs import TEST_PROFILE, TINY, copy_run, worker_reports
from tests.support.slurm_control import process_state, resume, suspend, wait_until

pytestmark = [pytest.mark.slurm]


def slurm_args(run, storage, *extra):
    return ["--run-dir", str(run), "--executor", "slurm", "--workers", "2", "--seed", "5",
            f"run.storage={storage}", f"run.slurm_profile={TEST_PROFILE}", "cv.folds=3", *extra]


def array_tasks(jobs_dir):
    """{array job id: [task ids]} from submitit's folders <array>_<task>."""
    arrays = {}
    for p in jobs_dir.iterdir():
        if p.name[0].isdigit() and "_" in p.name:
            job, task = p.name.split("_")
            arrays.setdefault(job, []).append(int(task))
    return {job: sorted(tasks) for job, tasks in arrays.items()}


def load(run, storage):
    """The run's one study (the database is emptied for each test; the journal is the run's own)."""
    opened = study.open_storage(storage, run, heartbeat_s=1)
    (name,) = optuna.get_all_study_names(opened)
    return optuna.load_study(study_name=name, storage=opened)


@pytest.fixture(params=[pytest.param("postgresql", marks=pytest.mark.postgres), "journal"])
def storage(request):
    """run.storage: the test PostgreSQL (emptied), or "" — the journal file in the run directory."""
    return request.getfixturevalue("fresh_pg_url") if request.param == "postgresql" else ""


@pytest.mark.postgres
def test_tune_model_on_postgresql_then_cv_as_one_array(slurm_cluster, fresh_pg_url, small_run, tmp_path):
    run = copy_run(small_run, tmp_path)
    assert main(["tune-model", *slurm_args(run, fresh_pg_url, "tune-model.trials=4", "tune-model.max_epochs=2",
                                           "tune-model.epochs_per_report=1", "tune-model.max_hidden=256",
                                           "tune-model.max_layers=2")]) == 0
    s = load(run, fresh_pg_url)
    done = s.get_trials(states=study.DONE)
    assert len(done) == 4
    # any other trial is FAIL, none left running or waiting: given back when two workers asked for the last
    # slot at once, or failed for a heartbeat missed on a busy machine and retried (pipeline/infra/study/)
    assert all(t.state.name == "FAIL" for t in s.trials if t not in done), [t.state for t in s.trials]
    assert {t.user_attrs["worker"] for t in done} <= {0, 1}
    assert worker_reports(run, "tune-model") == {0: 4, 1: 4}, "both workers took part until the study was full"
    assert array_tasks(run / "jobs" / "tune-model").__len__() == 1

    assert main(["cv", *slurm_args(run, fresh_pg_url, "cv.epochs=2")]) == 0
    (tasks,) = array_tasks(run / "jobs" / "cv").values()
    assert tasks == [0, 1, 2], "the folds ran as one array of three tasks"
    summary = json.loads((run / "cv" / "summary.json").read_text())
    assert len(summary["per_fold"]) == 3


def test_a_cancelled_tuning_worker_leaves_no_running_trial(slurm_cluster, storage, small_run, tmp_path):
    """PostgreSQL: the killed worker's trial loses its heartbeat; journal: its Slurm task is gone. Either
    way it is failed and retried, and the study ends with exactly N finished trials.

    Worker 0 is held (Slurm suspends its task) while a trial of its own is RUNNING, then its process is
    killed with SIGKILL — as the OOM killer or a lost node does — so it never runs again after the test
    saw it inside that trial: the premise holds however fast or slow the machine is."""
    run = copy_run(small_run, tmp_path)
    args = ["tune-model", *slurm_args(run, storage, "run.heartbeat_s=1", "tune-model.trials=4",
                                      "tune-model.max_epochs=15", "tune-model.epochs_per_report=1",
                                      "tune-model.max_hidden=256", "tune-model.max_layers=2", *TINY)]
    outcome = []
    driver = threading.Thread(target=lambda: outcome.append(main(args)))
    driver.start()

    wait_until(lambda: (run / "jobs" / "tune-model" / "array.json").exists() or not driver.is_alive(),
               "the array was submitted", 180)
    assert driver.is_alive(), outcome
    task = json.loads((run / "jobs" / "tune-model" / "array.json").read_text())["tasks"][0]  # worker 0

    def trials_of_worker_0():
        return [t for t in load(run, storage).get_trials(states=(optuna.trial.TrialState.RUNNING,))
                if t.user_attrs.get("worker") == 0]

    deadline = time.monotonic() + 300
    while True:
        assert time.monotonic() < deadline, "worker 0 was never held inside a trial"
        wait_until(trials_of_worker_0, "worker 0 started a trial", 300)
        pid = suspend(task)
        running = trials_of_worker_0()  # read while it cannot move: it is inside this trial
        if running:
            break
        resume(task)  # it finished that trial in between: try again with its next one
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: process_state(pid) in ("", "Z"), "worker 0's process ended")
    resume(task)  # srun sees its task killed and the array task ends (FAILED)

    driver.join(timeout=300)
    assert outcome == [0], "the stage succeeds: the other worker finished the study"
    s = load(run, storage)
    assert len(s.get_trials(states=study.DONE)) == 4
    assert not s.get_trials(states=(optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING))
    # the trial worker 0 was held in and killed inside was failed — for its missing heartbeat, or its
    # owner's ended Slurm task — and retried
    killed = [t for t in s.get_trials(states=(optuna.trial.TrialState.FAIL,)) if t.user_attrs.get("worker") == 0]
    assert [t.number for t in killed] == [t.number for t in running]
    retry = [t for t in s.trials if t.system_attrs.get("failed_trial") == killed[0].number]
    assert len(retry) == 1 and retry[0].state in study.DONE
    assert killed[0].params.items() <= retry[0].params.items(), "the retry keeps what the killed trial had drawn"
