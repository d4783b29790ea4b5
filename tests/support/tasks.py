"""Task functions the executor tests launch (importable by name in Slurm jobs and spawned workers)."""

import json
import os
import time
from pathlib import Path

import numpy as np
import optuna

from pipeline.infra import rundir, study


def noisy_sum(index: int, seed: int) -> dict:
    """A deterministic, seed-dependent result, to compare executors."""
    draws = np.random.default_rng(seed + index).normal(size=1000)
    return {"index": index, "sum": float(draws.sum()), "max": float(draws.max())}


def record_interval(index: int, seconds: float, log_dir: str) -> int:
    """Sleep and record [start, end] so that a test can count how many ran at once."""
    start = time.time()
    time.sleep(seconds)
    rundir.write_json(Path(log_dir) / f"{index}.json", {"start": start, "end": time.time(), "pid": os.getpid()})
    return index


def fail_on(index: int, bad: int) -> int:
    if index == bad:
        raise ValueError(f"task {index} was told to fail")
    return index


def write_past_the_limit(path: str, limit: int) -> None:
    """Writes `limit` + 1 bytes to `path` with the file size limit at `limit`: the write fails as on a full
    disk (EFBIG), and the task says which file in one line."""
    import resource
    import signal

    from pipeline.errors import blaming

    before, handler = resource.getrlimit(resource.RLIMIT_FSIZE), signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, before[1]))
    try:  # the debug executor runs it in the test's own process: the limit is undone
        with blaming(path), open(path, "wb", buffering=0) as f:
            f.write(b"x" * (limit + 1))
            f.write(b"x")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, before)
        signal.signal(signal.SIGXFSZ, handler)


def sum_of_squares(checkpoint: str, n_steps: int, step_s: float, hold_after: int = -1) -> dict:
    """Adds i² for i < n_steps, one step at a time, saving progress after each step.

    A requeued call resumes from the saved step; `starts` lists the step each run began at and
    `done` every step that was finished (a step finished twice would show up twice). After finishing
    step `hold_after` the task waits as long as the file ``<checkpoint>.hold`` exists: a test that
    interrupts it there knows it has not finished.
    """
    path = Path(checkpoint)
    hold = path.with_suffix(".hold")
    state = json.loads(path.read_text()) if path.exists() else {"next": 0, "total": 0, "done": [], "starts": []}
    state["starts"].append(state["next"])
    for step in range(state["next"], n_steps):
        time.sleep(step_s)
        state["total"] += step * step
        state["done"].append(step)
        state["next"] = step + 1
        state["pid"] = os.getpid()
        rundir.write_json(path, state)
        while step == hold_after and hold.exists():
            time.sleep(0.05)
    rundir.write_json(path, state)
    return state


def quadratic(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", -5, 5)
    time.sleep(0.05)
    return -((x - 2.0) ** 2)


def quadratic_once_all_met(trial: optuna.Trial, workers: int) -> float:
    """quadratic, but no trial ends before every one of `workers` workers has started a trial of the
    study: each worker runs at least one, however late it starts (a barrier, not a slow objective)."""
    deadline = time.monotonic() + 300
    while len({t.user_attrs.get("worker") for t in trial.study.get_trials(deepcopy=False)} - {None}) < workers:
        if time.monotonic() > deadline:
            raise TimeoutError(f"not every one of {workers} workers started a trial within 300 s")
        time.sleep(0.1)
    return quadratic(trial)


def tuning_worker(url: str, run_dir: str, name: str, n_trials: int, worker: int, workers: int) -> int:
    return study.run_worker(url, Path(run_dir), name, lambda t: quadratic_once_all_met(t, workers), n_trials,
                            worker, poll_s=0.5)


def fail_on_after(index: int, bad: int, log_dir: str) -> int:
    """Like fail_on, but every task records that it ran (to see that a failure stops no other task)."""
    time.sleep(0.2 * index)
    rundir.write_json(Path(log_dir) / f"ran-{index}.json", {"index": index})
    if index == bad:
        raise ValueError(f"task {index} was told to fail")
    return index


def sum_of_squares_or_interrupt(checkpoint: str, n_steps: int, step_s: float, hold_after: int,
                                interrupt_at: int) -> dict:
    """sum_of_squares that is interrupted (KeyboardInterrupt, as a debugger's Ctrl-C or a dying
    driver) after step `interrupt_at` the first time it runs; the checkpoint holds the progress."""
    path = Path(checkpoint)
    flag = path.with_suffix(".interrupted")
    if not flag.exists():
        state = {"next": 0, "total": 0, "done": [], "starts": [0]}
        for step in range(interrupt_at + 1):
            state["total"] += step * step
            state["done"].append(step)
            state["next"] = step + 1
            rundir.write_json(path, state)
        flag.touch()
        raise KeyboardInterrupt(f"interrupted after step {interrupt_at}")
    return sum_of_squares(checkpoint, n_steps, step_s, hold_after)
