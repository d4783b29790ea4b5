"""Distributed Optuna: one study, several workers, exactly N finished trials."""

from pathlib import Path

import optuna
import pytest

from pipeline import study
from pipeline.executor import ExecutorSpec, run_tasks
from tests import tasks

ROOT = Path(__file__).resolve().parent.parent
PROFILE = ROOT / "slurm" / "profiles" / "test-cluster.toml"


def _check_study(url: str, run_dir: Path, name: str, n: int, worker_counts: list[int]) -> None:
    s = optuna.load_study(study_name=name, storage=study.open_storage(url, run_dir))
    done = s.get_trials(states=study.DONE)
    assert len(done) == n
    assert not s.get_trials(states=(optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING))
    workers = {t.user_attrs["worker"] for t in done}
    assert workers == set(range(len(worker_counts))), "every worker must have run trials"
    assert all(c > 0 for c in worker_counts)


def test_two_local_workers_on_the_journal_file(tmp_path):
    n = 12
    study.create_study("", tmp_path, "toy", seed=1)
    counts = run_tasks(tasks.tuning_worker, [("", str(tmp_path), "toy", n, w) for w in range(2)],
                       spec=ExecutorSpec("local", workers=2), jobs_dir=tmp_path / "jobs", stage="tune")
    assert (tmp_path / "optuna.journal").is_file()
    _check_study("", tmp_path, "toy", n, counts)


@pytest.mark.slurm
@pytest.mark.postgres
def test_two_slurm_array_workers_on_postgresql(slurm_cluster, fresh_pg_url, shared_tmp):
    n = 10
    study.create_study(fresh_pg_url, shared_tmp, "toy-pg", seed=1)
    counts = run_tasks(tasks.tuning_worker, [(fresh_pg_url, str(shared_tmp), "toy-pg", n, w) for w in range(2)],
                       spec=ExecutorSpec("slurm", workers=2, slurm_profile=PROFILE),
                       jobs_dir=shared_tmp / "jobs" / "tune", stage="tune")
    _check_study(fresh_pg_url, shared_tmp, "toy-pg", n, counts)


@pytest.mark.postgres
def test_no_file_of_a_tuning_run_holds_the_database_password(fresh_pg_url, small_run, tmp_path):
    """The workers get the URL without its password (PGPASSWORD carries it); nothing written holds it."""
    from pipeline.cli import main
    from pipeline.config import without_password
    from tests.runs import TINY, copy_run

    password = without_password(fresh_pg_url)[1]
    assert password
    run = copy_run(small_run, tmp_path)
    assert main(["tune-model", "--run-dir", str(run), "--executor", "local", "--workers", "2", "--seed", "5",
                 f"run.storage={fresh_pg_url}", "cv.folds=3", "tune-model.trials=2", "tune-model.max_epochs=1",
                 "tune-model.epochs_per_report=1", *TINY]) == 0
    holding = [p for p in run.rglob("*") if p.is_file() and password.encode() in p.read_bytes()]
    assert holding == []
