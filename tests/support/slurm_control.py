"""Holding a running array task still so that a test acts on it at a known point of its work.

A test that signals a task "while it is in the middle of X" races the task unless the task cannot move
on in between. Slurm's own suspend (SIGSTOP to every process of the job) holds it; the test then checks
that the task is where it wanted it and acts — a SIGKILL to the task's process, as the OOM killer or a
dying node would send, or a signal that stays pending until the resume. The test cluster has a single
node, this machine, so the task's processes are visible here.
"""

import subprocess
import time
from pathlib import Path


def raw_job_id(task: str) -> str:
    """The job id Slurm gave array task ``<array>_<index>`` (what scontrol listpids takes)."""
    out = subprocess.run(["squeue", "-h", "-j", task, "-o", "%A"], capture_output=True, text=True, check=True)
    return out.stdout.split()[0]


def task_pid(task: str) -> int:
    """The pid of the task's process: step 0, local task 0 (the Python process srun started)."""
    out = subprocess.run(["scontrol", "listpids", raw_job_id(task)], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    rows = [line.split() for line in out[1:]]
    (pid,) = [int(r[0]) for r in rows if len(r) >= 4 and r[2] == "0" and r[3] == "0"]
    return pid


def process_state(pid: int) -> str:
    """The kernel's one-letter state of `pid` (R, S, T, Z, …), or "" once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return ""
    return stat.rsplit(")", 1)[1].split()[0]


def wait_until(condition, what: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {seconds} s"
        time.sleep(0.05)


def suspend(task: str) -> int:
    """``scontrol suspend`` the task and wait until its process is stopped; returns that pid."""
    pid = task_pid(task)
    subprocess.run(["scontrol", "suspend", task], check=True)
    wait_until(lambda: process_state(pid) in ("T", ""), f"task {task} (pid {pid}) stopped")
    return pid


def resume(task: str) -> None:
    subprocess.run(["scontrol", "resume", task], check=True)


def signal_pending(pid: int, signum: int) -> bool:
    """Whether `signum` waits to be delivered to `pid` (thread or process pending set)."""
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    masks = [int(line.split()[1], 16) for line in status if line.startswith(("SigPnd:", "ShdPnd:"))]
    return any(mask >> (signum - 1) & 1 for mask in masks)
