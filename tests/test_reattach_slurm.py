"""A restarted driver reattaches to its array; `pipeline cancel` cancels one run's jobs (real Slurm)."""

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from pipeline.infra.executor import job_name
from tests.support.runs import ROOT, TEST_PROFILE, TINY, copy_run

pytestmark = pytest.mark.slurm


def driver(run, *extra):
    """`pipeline cv` on Slurm in a process of its own (killable like a login-node session)."""
    args = [sys.executable, "-m", "pipeline", "cv", "--run-dir", str(run), "--executor", "slurm", "--seed", "5",
            f"run.slurm_profile={TEST_PROFILE}", "cv.folds=3", *TINY, *extra]
    return subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def wait_for(path, seconds=120):
    deadline = time.time() + seconds
    while not path.exists():
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.1)


def jobs_named(name):
    """(job id, state) of every array task Slurm accounted with this job name."""
    out = subprocess.run(["sacct", "--name", name, "-X", "-n", "-P", "-o", "JobID,State"], capture_output=True,
                         text=True, check=True).stdout.splitlines()
    return [tuple(line.split("|")) for line in out if line]


def test_a_restarted_driver_waits_for_its_array_instead_of_submitting_another(slurm_cluster, small_run, shared_tmp):
    run = copy_run(small_run, shared_tmp / "reattach")
    first = driver(run, "cv.epochs=6")
    wait_for(run / "jobs" / "cv" / "array.json")
    os.killpg(first.pid, signal.SIGKILL)  # the driver dies; its array keeps running
    first.wait()
    second = driver(run, "cv.epochs=6")
    assert second.wait(timeout=600) == 0, second.stderr.read()
    assert "reattached to 3 task(s)" in second.stderr.read()
    arrays = {job.split("_")[0] for job, _ in jobs_named(job_name("cv", run))}
    assert len(arrays) == 1, f"a second array was submitted: {arrays}"
    assert len(json.loads((run / "cv" / "summary.json").read_text())["per_fold"]) == 3


def sacct_times(name):
    """{task id: (state, start, end)} of the array tasks named `name`, times as Slurm's ISO strings. Tasks
    cancelled before they started share one line in sacct (``55_[2-3]``): expanded to one id each."""
    out = subprocess.run(["sacct", "--name", name, "-X", "-n", "-P", "-o", "JobID,State,Start,End"],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    times = {}
    for job, state, start, end in (line.split("|") for line in out if line):
        for task in task_ids(job):
            times[task] = (state, start, end)
    return times


def task_ids(job: str) -> list[str]:
    """``55_3`` → [55_3]; ``55_[2-3,5%4]`` → [55_2, 55_3, 55_5]."""
    array, _, tasks = job.partition("_")
    if not tasks.startswith("["):
        return [job]
    ids = []
    for part in tasks.strip("[]").split("%")[0].split(","):
        lo, _, hi = part.partition("-")
        ids += [f"{array}_{k}" for k in range(int(lo), int(hi or lo) + 1)]
    return ids


def test_a_restarted_driver_with_other_work_stops_and_with_force_ends_the_old_array_first(slurm_cluster, small_run,
                                                                                          shared_tmp):
    """The old array kept writing into the new run's output (46 of 198 attack targets differed)."""
    run = copy_run(small_run, shared_tmp / "other-work")
    first = driver(run, "cv.epochs=100000")  # cannot end by itself
    wait_for(run / "jobs" / "cv" / "array.json")
    old = set(json.loads((run / "jobs" / "cv" / "array.json").read_text())["tasks"])
    os.killpg(first.pid, signal.SIGKILL)  # the driver dies; its array keeps running
    first.wait()

    refused = driver(run, "cv.epochs=2")
    assert refused.wait(timeout=300) == 1
    line = refused.stderr.read().strip().splitlines()[-1]
    array = next(iter(old)).split("_")[0]
    assert f"Slurm array {array} of an earlier run" in line and "pipeline cancel --run-dir" in line, line
    assert json.loads((run / "jobs" / "cv" / "array.json").read_text())["tasks"] == sorted(old, key=lambda t:
                                                                                              int(t.split("_")[1]))
    assert not (run / "cv" / "summary.json").exists()

    forced = driver(run, "cv.epochs=2", "--force")
    assert forced.wait(timeout=600) == 0, forced.stderr.read()
    times = sacct_times(job_name("cv", run))
    assert all(times[t][0].startswith("CANCELLED") for t in old), times
    new = set(times) - old
    assert len(new) == 3, times
    ended = max(times[t][2] for t in old)
    assert all(times[t][1] >= ended for t in new), f"a new task started before the old array ended: {times}"
    for fold in range(3):  # only the new work's epochs
        assert len(pd.read_csv(run / "cv" / f"fold-{fold}" / "metrics.csv")) == 2


def test_cancel_stops_one_run_and_leaves_the_other(slurm_cluster, small_run, shared_tmp):
    runs = [copy_run(small_run, shared_tmp / f"cancel-{k}") for k in range(2)]
    drivers = [driver(run, "cv.epochs=100000") for run in runs]  # neither array can end before its cancel
    for run in runs:
        wait_for(run / "jobs" / "cv" / "array.json")
    out = subprocess.run([sys.executable, "-m", "pipeline", "cancel", "--run-dir", str(runs[0])], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 0 and "cancelled Slurm job(s)" in out.stdout, out.stderr
    assert drivers[0].wait(timeout=120) == 1  # its tasks were cancelled: the stage fails
    deadline = time.time() + 60
    while not all(state.startswith("CANCELLED") for _, state in jobs_named(job_name("cv", runs[0]))):
        assert time.time() < deadline
        time.sleep(0.5)
    others = jobs_named(job_name("cv", runs[1]))
    assert others and not any(state.startswith("CANCELLED") for _, state in others)
    os.killpg(drivers[1].pid, signal.SIGKILL)
    subprocess.run([sys.executable, "-m", "pipeline", "cancel", "--run-dir", str(runs[1])], cwd=ROOT, check=True)


def test_cancel_of_a_job_slurm_does_not_know_cancels_nothing(slurm_cluster, tmp_path):
    """It printed "cancelled 99999" for a job Slurm never had."""
    record = tmp_path / "run" / "jobs" / "cv" / "array.json"
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"calls_sha256": "x", "name": "pipeline-cv-x", "tasks": ["99999_0", "99999_1"]}))
    out = subprocess.run([sys.executable, "-m", "pipeline", "cancel", "--run-dir", str(tmp_path / "run")], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 0 and "no Slurm array of this run is pending or running" in out.stdout, out


def test_cancel_without_scancel_is_one_line(tmp_path):
    record = tmp_path / "run" / "jobs" / "cv" / "array.json"
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"calls_sha256": "x", "name": "pipeline-cv-x", "tasks": ["7_0"]}))
    out = subprocess.run([sys.executable, "-m", "pipeline", "cancel", "--run-dir", str(tmp_path / "run")], cwd=ROOT,
                         capture_output=True, text=True, env={**os.environ, "PATH": str(tmp_path)})
    assert out.returncode == 1 and out.stderr.strip().splitlines() == [
        "error: scancel: not found on PATH (run `pipeline cancel` where Slurm's commands are)"], out
