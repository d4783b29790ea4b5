"""Helpers for tests that run stages on the small synthetic run (the `small_run` fixture)."""

import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEST_PROFILE = ROOT / "slurm" / "profiles" / "test-cluster.toml"
# a tiny model: the tests check plumbing and discipline, not accuracy
TINY = ["model.hidden=8", "model.fc=8", "model.batch_size=64", "model.bidirectional=true"]


def copy_run(small_run: Path, where: Path) -> Path:
    """A fresh run directory holding small_run's dataset.zarr."""
    run = where / "run"
    run.mkdir(parents=True)
    shutil.copytree(small_run / "dataset.zarr", run / "dataset.zarr")
    return run


def copy_trained(trained_run: Path, where: Path) -> Path:
    """A fresh run directory with trained_run's dataset, split and model."""
    run = copy_run(trained_run, where)
    shutil.copy(trained_run / "split.json", run / "split.json")
    shutil.copytree(trained_run / "model", run / "model")
    return run


def worker_reports(run: Path, stage: str) -> dict[int, int]:
    """{worker: finished trials in the study when it left}, from the tuning workers' task logs (local:
    task-K.log; Slurm: <job>/<job>_0_log.err). Which worker ran which trial depends on timing; that
    every worker took part and stayed until the study was full does not."""
    import re

    reports = {}
    for log in [*(run / "jobs" / stage).glob("task-*.log"), *(run / "jobs" / stage).glob("*/*_log.err")]:
        for worker, held in re.findall(r"worker (\d+) ran \d+ trial\(s\); study \S+ holds (\d+) finished",
                                       log.read_text()):
            reports[int(worker)] = int(held)
    return reports
