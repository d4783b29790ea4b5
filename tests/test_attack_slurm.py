"""The attack stage on the real Slurm cluster: shards as one array, and a requeued shard resuming."""

import json
import os
import signal
import threading

import numpy as np
import pytest
import xarray as xr

from pipeline.cli import main
from tests.support.chains import ATTACK
from tests.support.runs import TEST_PROFILE, copy_trained, worker_reports
from tests.support.slurm_control import resume, signal_pending, suspend, wait_until

pytestmark = pytest.mark.slurm
VARIABLES = ("perturbation", "found", "iteration", "margin", "lam", "logits", "dataset_index", "y", "pred")


def slurm(*extra):
    return ["--executor", "slurm", "--workers", "3", f"run.slurm_profile={TEST_PROFILE}", *extra]


def attack(run, *extra):
    assert main(["attack", "--run-dir", str(run), *ATTACK, *extra]) == 0
    return xr.open_zarr(run / "attack.zarr", consolidated=False)


def assert_same_store(a, b):
    for name in VARIABLES:
        np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)


def test_three_slurm_shards_equal_one_debug_shard(slurm_cluster, trained_run, tmp_path):
    one = attack(copy_trained(trained_run, tmp_path / "one"), "--executor", "debug", "attack.shards=1")
    run = copy_trained(trained_run, tmp_path / "three")
    three = attack(run, *slurm("attack.shards=3"))
    assert_same_store(one, three)
    arrays = {p.name.split("_")[0] for p in (run / "jobs" / "attack").iterdir()
              if p.name[0].isdigit() and "_" in p.name}
    assert len(arrays) == 1, "the shards ran as one array"


def test_a_requeued_shard_resumes_and_writes_each_batch_once(slurm_cluster, trained_run, tmp_path):
    # batches of 32 targets slow enough to hold shard 0 between its first batch and its last
    slow = ["attack.max_iter=150", "attack.targets=all", "attack.batch_size=32", "attack.max_edits=2"]
    reference = attack(copy_trained(trained_run, tmp_path / "ref"), "--executor", "debug", "attack.shards=2", *slow)
    run = copy_trained(trained_run, tmp_path / "requeued")
    outcome = []
    driver = threading.Thread(target=lambda: outcome.append(
        main(["attack", "--run-dir", str(run), *ATTACK, *slurm("attack.shards=2", *slow)])))
    driver.start()
    progress = run / "attack-shards" / "shard-0.json"

    def batches_done():
        return progress.exists() and json.loads(progress.read_text())["state"]["done"]

    wait_until(lambda: batches_done() or not driver.is_alive(), "shard 0 finished a batch", 300)
    assert driver.is_alive(), outcome
    task = json.loads((run / "jobs" / "attack" / "array.json").read_text())["tasks"][0]
    # preempt it as Slurm does — USR2 makes submitit checkpoint the task and requeue it — at a known
    # point: held by Slurm, the shard is checked to have work left, and the signal waits until it resumes
    pid = suspend(task)
    assert not json.loads(progress.read_text())["state"].get("complete"), "shard 0 ended before it was held"
    os.kill(pid, signal.SIGUSR2)
    assert signal_pending(pid, signal.SIGUSR2)
    resume(task)
    driver.join(timeout=600)
    assert outcome == [0]
    state = json.loads(progress.read_text())["state"]
    assert state["complete"] and len(state["writes"]) == len({tuple(w) for w in state["writes"]}) >= 2
    log = (run / "jobs" / "attack" / task / f"{task}_0_log.err").read_text()  # logging: stderr
    starts = (run / "jobs" / "attack" / task / f"{task}_0_log.out").read_text()
    assert starts.count("Starting with JobEnvironment") == 2, "shard 0 ran twice: before and after the requeue"
    assert log.count("shard 0: targets 0–31 done") == 1, "the first batch was not redone after the requeue"
    assert_same_store(reference, xr.open_zarr(run / "attack.zarr", consolidated=False))


@pytest.mark.postgres
def test_tune_attack_with_two_array_workers_on_postgresql(slurm_cluster, fresh_pg_url, trained_run, tmp_path):
    import optuna

    from pipeline.infra import study

    run = copy_trained(trained_run, tmp_path)
    assert main(["tune-attack", "--run-dir", str(run), *ATTACK, "--executor", "slurm", "--workers", "2",
                 f"run.slurm_profile={TEST_PROFILE}", f"run.storage={fresh_pg_url}", "tune-attack.trials=6",
                 "tune-attack.targets=40"]) == 0
    best = json.loads((run / "tune-attack" / "best.json").read_text())
    s = optuna.load_study(study_name=best["study"], storage=study.open_storage(fresh_pg_url, run))
    done = s.get_trials(states=study.DONE)
    assert len(done) == 6
    # any other trial is FAIL, none left running or waiting: given back when two workers asked for the last
    # slot at once, or failed for a heartbeat missed on a busy machine and retried (pipeline/infra/study/)
    assert all(t.state.name == "FAIL" for t in s.trials if t not in done), [t.state for t in s.trials]
    assert {t.user_attrs["worker"] for t in done} <= {0, 1}
    assert worker_reports(run, "tune-attack") == {0: 6, 1: 6}, "both workers took part until the study was full"
