"""Distributed Optuna: one study, several workers, exactly N finished trials."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from pipeline.cli import main
from pipeline.infra import study
from pipeline.infra.executor import ExecutorSpec, run_tasks
from tests.support import tasks

pytestmark = pytest.mark.thirdparty  # the floors job runs these (tests/test_floors.py)

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
    counts = run_tasks(tasks.tuning_worker, [("", str(tmp_path), "toy", n, w, 2) for w in range(2)],
                       spec=ExecutorSpec("local", workers=2), jobs_dir=tmp_path / "jobs", stage="tune")
    assert (tmp_path / "optuna.journal").is_file()
    _check_study("", tmp_path, "toy", n, counts)


@pytest.mark.slurm
@pytest.mark.postgres
def test_two_slurm_array_workers_on_postgresql(slurm_cluster, fresh_pg_url, shared_tmp):
    n = 6
    study.create_study(fresh_pg_url, shared_tmp, "toy-pg", seed=1)
    counts = run_tasks(tasks.tuning_worker, [(fresh_pg_url, str(shared_tmp), "toy-pg", n, w, 2)
                                             for w in range(2)],
                       spec=ExecutorSpec("slurm", workers=2, slurm_profile=PROFILE),
                       jobs_dir=shared_tmp / "jobs" / "tune", stage="tune")
    _check_study(fresh_pg_url, shared_tmp, "toy-pg", n, counts)


@pytest.mark.postgres
def test_no_file_of_a_tuning_run_holds_the_database_password(fresh_pg_url, small_run, tmp_path):
    """The workers get the URL without its password (PGPASSWORD carries it); nothing written holds it."""
    from pipeline.cli import main
    from pipeline.config import without_password
    from tests.support.runs import TINY, copy_run

    password = without_password(fresh_pg_url)[1]
    assert password
    run = copy_run(small_run, tmp_path)
    assert main(["tune-model", "--run-dir", str(run), "--executor", "local", "--workers", "2", "--seed", "5",
                 f"run.storage={fresh_pg_url}", "cv.folds=3", "tune-model.trials=2", "tune-model.max_epochs=1",
                 "tune-model.epochs_per_report=1", *TINY]) == 0
    holding = [p for p in run.rglob("*") if p.is_file() and password.encode() in p.read_bytes()]
    assert holding == []


# ---- the journal's stale-trial rule: a RUNNING trial whose owner is gone is failed and retried --------

def _ended_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_a_trial_whose_worker_process_ended_is_failed_and_retried_on_the_journal(tmp_path):
    n = 4
    s = study.create_study("", tmp_path, "toy", seed=1)
    orphan = s.ask()  # a worker that died mid-trial: RUNNING, its owner's process gone
    orphan.suggest_float("x", -5, 5)
    orphan.set_user_attr("owner", {**study.owner(), "pid": _ended_pid()})
    orphan.set_user_attr("worker", 7)
    assert tasks.tuning_worker("", str(tmp_path), "toy", n, 0, 1) > 0

    s = optuna.load_study(study_name="toy", storage=study.open_storage("", tmp_path))
    assert len(s.get_trials(states=study.DONE)) == n
    assert not s.get_trials(states=(optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING))
    (failed,) = s.get_trials(states=(optuna.trial.TrialState.FAIL,))
    assert failed.number == orphan.number
    (retry,) = [t for t in s.trials if t.system_attrs.get("failed_trial") == orphan.number]
    assert retry.state in study.DONE and retry.params == failed.params
    assert retry.user_attrs["worker"] == 0 and retry.user_attrs["owner"]["pid"] == os.getpid()


ME = {"slurm_job": "7_1", "restart": 1, "host": study.HOST, "pid": os.getpid()}


@pytest.mark.parametrize(("owner", "states", "gone"), [
    ({"slurm_job": "7_0", "host": "node2", "pid": 1}, {"7_0": "CANCELLED"}, True),
    ({"slurm_job": "7_0", "host": "node2", "pid": 1}, {"7_0": "TIMEOUT"}, True),
    ({"slurm_job": "7_0", "host": "node2", "pid": 1}, {"7_0": "COMPLETING"}, False),  # still being killed
    ({"slurm_job": "7_0", "host": "node2", "pid": 1}, {"7_0": "RUNNING"}, False),
    ({"slurm_job": "7_0", "host": "node2", "pid": 1}, {}, False),  # Slurm does not say: alive
    # another array task on this node, maybe in a container of its own: its pid means nothing here
    ({"slurm_job": "7_0", "host": study.HOST, "pid": _ended_pid()}, {"7_0": "RUNNING"}, False),
    ({"slurm_job": "7_1", "restart": 0, "host": "node2", "pid": 1}, {}, True),  # I am its requeued run
    ({"slurm_job": "7_1", "restart": 1, "host": "node2", "pid": 1}, {}, False),
    ({"slurm_job": "", "host": study.HOST, "pid": _ended_pid()}, {}, True),  # a local worker that ended
    ({"slurm_job": "", "host": study.HOST, "pid": os.getpid()}, {}, False),
    ({"slurm_job": "", "host": "laptop2", "pid": 1}, {}, False),  # another machine: cannot tell
])
def test_when_the_owner_of_a_running_trial_is_gone(owner, states, gone):
    assert study.gone(owner, ME, states) is gone


# ---- PostgreSQL's driver is an extra -----------------------------------------------------------------

def test_a_postgresql_url_without_psycopg2_names_the_extra(monkeypatch, tmp_path, capsys):
    from pipeline.cli import main
    from pipeline.config import ConfigError

    monkeypatch.setitem(sys.modules, "psycopg2", None)  # `import psycopg2` now fails
    url = "postgresql+psycopg2://alice@127.0.0.1:1/optuna"
    with pytest.raises(ConfigError) as e:
        study.open_storage(url, tmp_path)
    assert str(e.value) == ("run.storage is a PostgreSQL URL but psycopg2 is not installed: "
                            "pip install 'mimic-adversarial-pipeline[postgres]' (or make setup)")
    study.check_driver("postgresql+psycopg://alice@127.0.0.1:1/optuna")  # psycopg 3: not ours to judge
    study.check_driver("")

    assert main(["tune-model", "--run-dir", str(tmp_path / "run"), "--executor", "debug", f"run.storage={url}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "psycopg2" in err and "pip install 'mimic-adversarial-pipeline[postgres]'" in err


# ---- study names: readable, one per run directory and per what the trials depend on ------------------

def test_a_study_name_reads_run_and_stage_and_tells_configs_apart(tmp_path):
    from pipeline.infra.launch import study_name
    from pipeline.infra.rundir import RunDir

    name = study_name(RunDir(tmp_path / "a" / "run1"), "tune-model", {"trials": 8})
    assert re.fullmatch(r"run1-tune-model-[0-9a-f]{8}", name)
    assert name == study_name(RunDir(tmp_path / "a" / "run1"), "tune-model", {"trials": 8})
    assert name != study_name(RunDir(tmp_path / "a" / "run1"), "tune-model", {"trials": 16})
    assert name != study_name(RunDir(tmp_path / "b" / "run1"), "tune-model", {"trials": 8}), \
        "two runs named alike share a database"


def test_a_stage_redone_with_another_search_space_starts_a_study_of_its_own(small_run, tmp_path):
    from pipeline.cli import main
    from tests.support.runs import copy_run

    run = copy_run(small_run, tmp_path)
    args = ["tune-model", "--run-dir", str(run), "--executor", "debug", "--seed", "5", "cv.folds=3",
            "tune-model.trials=2", "tune-model.max_epochs=1", "tune-model.epochs_per_report=1"]
    assert main([*args, "tune-model.max_hidden=32"]) == 0
    first = json.loads((run / "tune-model" / "best.json").read_text())["study"]
    assert main([*args, "--force", "tune-model.max_hidden=64"]) == 0
    second = json.loads((run / "tune-model" / "best.json").read_text())["study"]

    storage = study.open_storage("", run)
    assert first != second and set(optuna.get_all_study_names(storage)) == {first, second}
    new = optuna.load_study(study_name=second, storage=storage)
    assert len(new.trials) == 2 and len(new.get_trials(states=study.DONE)) == 2, "no trial of the old study"
    assert new.user_attrs["search_space"]["hidden"] == [32, 64]
    assert optuna.load_study(study_name=first, storage=storage).user_attrs["search_space"]["hidden"] == [32]


def test_a_torn_last_record_of_the_journal_is_moved_aside_and_tuning_goes_on(tmp_path, caplog):
    """A full disk cut the last record off; the next opening keeps every complete record."""
    n = 4
    s = study.create_study("", tmp_path, "toy", seed=1)
    for _ in range(2):
        s.tell(s.ask({"x": optuna.distributions.FloatDistribution(-5, 5)}), 0.5)
    journal = tmp_path / study.JOURNAL
    complete = journal.read_bytes()
    with open(journal, "a") as f:
        f.write('{"op_code":5,"worker_id":"x","tri')
    with caplog.at_level("WARNING"):
        assert tasks.tuning_worker("", str(tmp_path), "toy", n, 0, 1) > 0
    assert f"{journal}: its last record was cut off (33 bytes)" in caplog.text
    (aside,) = tmp_path.glob("optuna.journal.torn-*")
    assert aside.read_text() == '{"op_code":5,"worker_id":"x","tri'
    assert journal.read_bytes().startswith(complete)
    s = optuna.load_study(study_name="toy", storage=study.open_storage("", tmp_path))
    assert len(s.get_trials(states=study.DONE)) == n


def test_a_journal_broken_before_its_last_record_is_one_line_naming_it(small_run, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copytree(small_run / "dataset.zarr", run / "dataset.zarr")
    (run / study.JOURNAL).write_text('{"op_code":0,"worker_id":"x","study_name":"s","directions":[1]}\n'
                                     '{"op_code":5,"worker_id":"x","tri{"op_code":4}\n')
    code = main(["tune-model", "--run-dir", str(run), "--executor", "debug", "tune-model.trials=1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and f"{run / study.JOURNAL}: record 2 is broken" in err[0], err
