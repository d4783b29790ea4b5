"""The executor layer on the real Slurm test cluster (slurm/test-cluster.sh)."""

import json
import subprocess
import time
from pathlib import Path

import pytest
import submitit

from pipeline.infra.executor import (
    CheckpointableTask,
    ExecutorSpec,
    SlurmExecutor,
    TaskFailed,
    job_name,
    load_profile,
    preview_submission,
    run_tasks,
)
from tests.support import tasks

ROOT = Path(__file__).resolve().parent.parent
PROFILE = ROOT / "slurm" / "profiles" / "test-cluster.toml"
CALLS = [(i, 123) for i in range(4)]

pytestmark = pytest.mark.slurm


def slurm_spec(workers=4):
    return ExecutorSpec("slurm", workers=workers, slurm_profile=PROFILE)


def test_array_of_4_tasks_returns_the_same_results_as_local_and_debug(slurm_cluster, shared_tmp):
    jobs_dir = shared_tmp / "jobs" / "demo"
    on_slurm = run_tasks(tasks.noisy_sum, CALLS, spec=slurm_spec(), jobs_dir=jobs_dir, stage="demo")
    in_process = run_tasks(tasks.noisy_sum, CALLS, spec=ExecutorSpec("debug"), jobs_dir=jobs_dir, stage="demo")
    local = run_tasks(tasks.noisy_sum, CALLS, spec=ExecutorSpec("local", 2), jobs_dir=jobs_dir, stage="demo")
    assert on_slurm == in_process == local

    # one sbatch --array: four task folders <array>_<k> of one array job, in the run directory
    folders = sorted(p.name for p in jobs_dir.iterdir() if p.name[0].isdigit() and "_" in p.name)
    array_ids = {name.split("_")[0] for name in folders}
    assert len(array_ids) == 1 and [f.split("_")[1] for f in folders] == ["0", "1", "2", "3"]

    # what Slurm received is exactly the script our generator (and the golden test) describes
    (array_id,) = array_ids
    submitted = subprocess.run(["scontrol", "write", "batch_script", array_id, "-"],
                               capture_output=True, text=True, check=True).stdout
    expected = preview_submission(load_profile(PROFILE, "demo"), job_name("demo", shared_tmp), jobs_dir, n_tasks=4)
    assert submitted == expected.script and expected.accepted  # and sbatch --test-only accepts it
    deadline = time.time() + 30  # accounting records arrive a moment after the jobs end
    while (states := sacct_states(array_id)) != ["COMPLETED"] * 4 and time.time() < deadline:
        time.sleep(0.5)
    assert states == ["COMPLETED"] * 4


def sacct_states(job_id: str) -> list[str]:
    return subprocess.run(["sacct", "-j", job_id, "-X", "-n", "-o", "State", "--parsable2"],
                          capture_output=True, text=True, check=True).stdout.split()


def test_failed_array_task_is_named_with_its_log(slurm_cluster, shared_tmp):
    with pytest.raises(TaskFailed, match=r"bad: task 1 \(1, 1\) failed; log: .*\n\(Slurm job \d+_1\)") as e:
        run_tasks(tasks.fail_on, [(i, 1) for i in range(3)], spec=slurm_spec(), jobs_dir=shared_tmp / "j",
                  stage="bad")
    assert "told to fail" in str(e.value)


def test_a_task_that_cannot_write_is_one_line_naming_the_file(slurm_cluster, shared_tmp):
    """A Slurm task's failure comes back as its traceback's text; the driver finds the task's
    own one-line message in it."""
    target = shared_tmp / "big.bin"
    with pytest.raises(TaskFailed) as e:
        run_tasks(tasks.write_past_the_limit, [(str(target), 1000)], spec=slurm_spec(), jobs_dir=shared_tmp / "w",
                  stage="write")
    assert "\n" not in str(e.value)
    assert str(e.value).startswith(f"write: task 0 failed: {target}: cannot write (file size limit reached"), e.value


def test_requeued_checkpointable_task_resumes_from_its_checkpoint(slurm_cluster, shared_tmp):
    n_steps, step_s, hold_after = 16, 0.2, 3
    checkpoints = [shared_tmp / f"ckpt-{k}.json" for k in range(2)]
    calls = [(str(c), n_steps, step_s, hold_after) for c in checkpoints]
    hold = checkpoints[0].with_suffix(".hold")
    hold.touch()  # task 0 waits after step 3 until the test has preempted it
    executor = SlurmExecutor("requeue", shared_tmp / "jobs" / "requeue", 2, load_profile(PROFILE, "requeue"))
    executor.submit(CheckpointableTask(tasks.sum_of_squares), calls)
    jobs = executor.jobs

    # wait until task 0 holds after step 3, then preempt it (SIGTERM + USR2, as Slurm does)
    deadline = time.time() + 120
    while not (checkpoints[0].exists() and json.loads(checkpoints[0].read_text())["next"] == hold_after + 1):
        assert time.time() < deadline, "task 0 never reached its hold"
        time.sleep(0.1)
    jobs[0]._interrupt()  # the requeued run resumes at step 4: it does not hold again
    executor.wait(progress=False)
    hold.unlink()
    results = executor.results()
    expected_total = sum(i * i for i in range(n_steps))
    first, second = results
    assert first["total"] == second["total"] == expected_total
    assert first["starts"] == [0, hold_after + 1], "it resumed where it was preempted"
    assert first["done"] == list(range(n_steps)), "a finished step was redone or skipped"
    assert second["starts"] == [0]
    assert isinstance(jobs[0], submitit.Job)
    log = Path(str(jobs[0].paths.stdout)).read_text() + Path(str(jobs[0].paths.stderr)).read_text()
    assert "requeued" in log.lower() or "checkpoint" in log.lower()
