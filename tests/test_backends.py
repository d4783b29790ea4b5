"""The three executor backends behind one interface, in the same three scenarios.

All tasks succeed; one task fails (the others still run, the failure names the task and its log);
one task is interrupted and the array is run again (it resumes from its checkpoint and ends with
what an uninterrupted run gives). Slurm runs on the real test cluster.
"""

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from pipeline.infra.executor import CheckpointableTask, ExecutorSpec, TaskFailed, run_tasks
from tests.support import tasks

ROOT = Path(__file__).resolve().parent.parent
PROFILE = ROOT / "slurm" / "profiles" / "test-cluster.toml"
BACKENDS = ["debug", "local", pytest.param("slurm", marks=pytest.mark.slurm)]
N_STEPS = 12
HOLD_AFTER = 3  # task 0 waits there while the test kills it
TOTAL = sum(i * i for i in range(N_STEPS))


def spec(kind: str) -> ExecutorSpec:
    return ExecutorSpec(kind, workers=3, slurm_profile=PROFILE)


@pytest.mark.parametrize("kind", BACKENDS)
def test_all_tasks_succeed(kind, where):
    calls = [(i, 123) for i in range(4)]
    assert run_tasks(tasks.noisy_sum, calls, spec=spec(kind), jobs_dir=where / "jobs" / "s", stage="s") == \
        [tasks.noisy_sum(*c) for c in calls]


@pytest.mark.parametrize("kind", BACKENDS)
def test_one_task_fails_after_the_others_ran_and_its_log_is_named(kind, where):
    calls = [(i, 1, str(where)) for i in range(3)]
    with pytest.raises(TaskFailed, match=r"f: task 1 \(1, 1, .*\) failed; log: (\S+)") as e:
        run_tasks(tasks.fail_on_after, calls, spec=spec(kind), jobs_dir=where / "jobs" / "f", stage="f")
    assert "told to fail" in str(e.value)
    assert sorted(p.name for p in where.glob("ran-*.json")) == ["ran-0.json", "ran-1.json", "ran-2.json"]
    log = Path(str(e.value).split("log: ")[1].split("\n")[0])
    assert log.exists() and "told to fail" in log.read_text()


def interrupt(kind: str, checkpoint: Path, calls: list[tuple], jobs_dir: Path) -> None:
    """Run the array until task 0 is interrupted mid-way (debug: KeyboardInterrupt in the task; local and
    Slurm: its process killed while it waits after step HOLD_AFTER), leaving its checkpoint behind."""
    if kind == "debug":
        interrupted = [(*calls[0], 4)] + calls[1:]
        with pytest.raises(KeyboardInterrupt):
            run_tasks(CheckpointableTask(tasks.sum_of_squares_or_interrupt), interrupted, spec=spec(kind),
                      jobs_dir=jobs_dir, stage="r")
        return
    hold = checkpoint.with_suffix(".hold")
    hold.touch()  # task 0 cannot finish before the test has killed it
    outcome = []
    driver = threading.Thread(target=lambda: outcome.append(_try(run_tasks, CheckpointableTask(tasks.sum_of_squares),
                                                                 calls, spec=spec(kind), jobs_dir=jobs_dir, stage="r")))
    driver.start()
    deadline = time.time() + 120
    while not (checkpoint.exists() and json.loads(checkpoint.read_text())["next"] == HOLD_AFTER + 1):
        assert time.time() < deadline and driver.is_alive(), "task 0 never reached its hold"
        time.sleep(0.05)
    # killed as the OOM killer or a node failure would (the single-node test cluster runs its tasks here)
    os.kill(json.loads(checkpoint.read_text())["pid"], signal.SIGKILL)
    driver.join(timeout=300)
    hold.unlink()
    assert isinstance(outcome[0], TaskFailed), outcome


def _try(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except Exception as e:
        return e


@pytest.mark.parametrize("kind", BACKENDS)
def test_an_interrupted_task_resumes_from_its_checkpoint_when_the_stage_is_run_again(kind, where):
    checkpoints = [where / f"ckpt-{k}.json" for k in range(2)]
    calls = [(str(c), N_STEPS, 0.3, HOLD_AFTER) for c in checkpoints]
    jobs_dir = where / "jobs" / "r"
    interrupt(kind, checkpoints[0], calls, jobs_dir)
    stopped_at = json.loads(checkpoints[0].read_text())["next"]
    assert 0 < stopped_at < N_STEPS
    before = json.loads((jobs_dir / "array.json").read_text())["tasks"] if kind == "slurm" else None
    first, second = run_tasks(CheckpointableTask(tasks.sum_of_squares), calls, spec=spec(kind), jobs_dir=jobs_dir,
                              stage="r")
    if kind == "slurm":  # only the killed task was submitted again (an array of one); the finished one reattached
        folders = [p.name for p in jobs_dir.iterdir() if p.name[0].isdigit()]  # <job>[_<task>] of each submission
        first_array = before[0].split("_")[0]
        assert sorted(f for f in folders if f.startswith(first_array + "_")) == [f"{first_array}_0", f"{first_array}_1"]
        assert len([f for f in folders if f.split("_")[0] != first_array]) == 1
        assert not (jobs_dir / "array.json").exists()  # all succeeded: the record is gone
    assert first["total"] == second["total"] == TOTAL  # what an uninterrupted run gives
    assert first["done"] == list(range(N_STEPS)), "a finished step was redone or skipped"
    assert first["starts"][-1] == stopped_at  # resumed from the checkpoint
