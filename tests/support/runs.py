"""Helpers for tests that run stages on the small synthetic run (the `small_run` fixture)."""

import contextlib
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TEST_PROFILE = ROOT / "slurm" / "profiles" / "test-cluster.toml"
# a tiny model: the tests check plumbing and discipline, not accuracy
TINY = ["model.hidden=8", "model.fc=8", "model.batch_size=64", "model.bidirectional=true"]
# a coarser one-edit scan and two edits at most: plumbing tests need the searches to run, not to be fine
# (tests/test_fewest_edits.py checks what they find)
FEWEST_QUICK = ["attack.scan_points=1", "attack.max_edits=2"]


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


def trained_on_demo(demo_run: Path, where: Path) -> Path:
    """A run directory with the demo's dataset.zarr and a tiny model trained on it (split made by train)."""
    from pipeline.cli import main

    run = copy_run(demo_run, where)
    assert main(["train", "--run-dir", str(run), "--executor", "debug", "--seed", "5", "cv.folds=3",
                 "train.epochs=30", *TINY, "model.hidden=16", "model.lr=0.01"]) == 0
    return run


def prepare_again(demo_dir: Path, cells, where: Path, stats_from: Path):
    """The demo's raw tables with `cells` edited (tests/support/mimic_tables.py: write_edited_tables), prepared
    again with the statistics of `stats_from` (a dataset.zarr); the new dataset, loaded."""
    import xarray as xr

    from pipeline.cli import main
    from tests.support.mimic_tables import write_edited_tables

    write_edited_tables(demo_dir, where / "edited-mimic", cells)
    assert main(["prepare", "--run-dir", str(where / "again"), "--mimic-dir", str(where / "edited-mimic"),
                 f"prepare.stats_from={stats_from}"]) == 0
    return xr.open_zarr(where / "again" / "dataset.zarr", consolidated=False).load()


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


def quick_tuning(run: Path, seed: int, folds: int, *settings: str):
    """tune-model on `run` in the driver (debug executor), one epoch a trial at hidden 32 with `settings`;
    its best.json and its study's trials."""
    import json

    import optuna

    from pipeline.cli import main
    from pipeline.infra import study

    assert main(["tune-model", "--run-dir", str(run), "--executor", "debug", "--seed", str(seed),
                 f"cv.folds={folds}", "tune-model.max_epochs=1", "tune-model.epochs_per_report=1",
                 "tune-model.max_hidden=32", *settings]) == 0
    best = json.loads((run / "tune-model" / "best.json").read_text())
    return best, optuna.load_study(study_name=best["study"], storage=study.open_storage("", run)).trials


@contextlib.contextmanager
def stage_held(run: Path, stage: str):
    """Another process holding `stage`'s lock in `run` (as a running copy of the stage would); yields it."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pipeline.infra.rundir import RunDir\n"
                               "with RunDir(sys.argv[1]).stage_lock(sys.argv[2]):\n"
                               "    print('locked', flush=True); time.sleep(600)", str(run), stage],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield holder
    finally:
        holder.kill()
        holder.wait()


def script(name: str):
    """An analysis script as a module (they are files, not a package; each needs only the run directory)."""
    import importlib.util  # only the tests of analysis/ load its scripts

    spec = importlib.util.spec_from_file_location(f"analysis_{name}", ROOT / "analysis" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
