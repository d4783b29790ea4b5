"""A task checks at its start that it runs the driver's versions (pipeline/infra/versions.py)."""

import platform
import re
from importlib import metadata
from pathlib import Path

import pytest

from pipeline.infra import versions
from pipeline.infra.executor import CheckpointableTask, ExecutorSpec, TaskFailed, run_tasks
from pipeline.infra.versions import VersionMismatch, check_versions, mismatches, runtime_versions
from tests.support import tasks

ROOT = Path(__file__).resolve().parent.parent
PROFILE = ROOT / "slurm" / "profiles" / "test-cluster.toml"
BACKENDS = ["debug", "local", pytest.param("slurm", marks=pytest.mark.slurm)]


def test_runtime_versions_are_this_interpreters():
    found = runtime_versions()
    assert found["python"] == "{}.{}".format(*platform.python_version_tuple()[:2])
    assert found["mimic-adversarial-pipeline"] == metadata.version("mimic-adversarial-pipeline")
    # the build label is dropped: a CPU login node (2.13.0+cpu) and a CUDA image (2.13.0) agree
    assert found["torch"] == metadata.version("torch").split("+")[0]
    for name in ("numpy", "pandas", "pyarrow", "dask", "xarray", "zarr", "optuna", "submitit"):
        assert found[name] == metadata.version(name), name
    if (ROOT / ".git").exists():
        assert re.fullmatch(r"[0-9a-f]{40}", found["commit"])


def test_the_containers_commit_counts_where_the_source_is_no_checkout(monkeypatch):
    monkeypatch.setattr(versions, "source_commit", lambda: None)
    monkeypatch.setenv(versions.COMMIT_ENV, "c0ffee")
    assert runtime_versions()["commit"] == "c0ffee"
    monkeypatch.setenv(versions.COMMIT_ENV, "unknown")
    assert "commit" not in runtime_versions()
    monkeypatch.delenv(versions.COMMIT_ENV)
    assert "commit" not in runtime_versions()


def test_every_difference_is_listed_and_the_code_counts_not_the_commit():
    """An image built from an earlier commit whose package is the same runs the same code (its image is reused);
    a checkout with uncommitted changes does not."""
    driver = {"python": "3.11", "torch": "2.13.0", "numpy": "2.4.6", "source": "5" * 64, "commit": "a" * 40}
    assert mismatches(driver, dict(driver)) == []
    assert mismatches(driver, {k: v for k, v in driver.items() if k != "commit"}) == []
    assert mismatches(driver, {**driver, "commit": "b" * 40}) == []  # same code, another commit
    task = {**driver, "python": "3.12", "torch": "2.5.1", "source": "6" * 64, "commit": "a" * 40 + "-dirty"}
    del task["numpy"]
    assert mismatches(driver, task) == [
        "numpy: task not recorded but driver 2.4.6",
        "python: task 3.12 but driver 3.11",
        f"pipeline source (sha256 of its files): task {'6' * 12} (commit {'a' * 40}-dirty) but driver {'5' * 12} "
        f"(commit {'a' * 40})",
        "torch: task 2.5.1 but driver 2.13.0",
    ]


def test_the_source_hash_is_of_the_package_files_wherever_they_lie(tmp_path):
    """A copy of the package elsewhere (an image's site-packages) has the driver's hash; a changed file does not."""
    import shutil
    import subprocess
    import sys

    copy = tmp_path / "site"
    shutil.copytree(ROOT / "pipeline", copy / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))

    def hashed() -> str:
        return subprocess.run([sys.executable, "-c", "from pipeline.infra.provenance import source_sha256 as s; "
                               "import pipeline; print(pipeline.__file__, s())"], env={"PYTHONPATH": str(copy)},
                              cwd=tmp_path, capture_output=True, text=True, check=True).stdout.split()

    where, sha = hashed()
    assert where.startswith(str(copy)) and sha == runtime_versions()["source"]
    (copy / "pipeline" / "data" / "maps" / "eicu.toml").write_text("# edited\n", encoding="utf-8")
    assert hashed()[1] != sha


def test_check_versions_names_each_mismatch_and_the_fix():
    here = runtime_versions()
    check_versions(here)  # the same interpreter: no error
    with pytest.raises(VersionMismatch) as e:
        check_versions({**here, "torch": "2.5.1", "zarr": "2.18.0"})
    text = str(e.value)
    assert "2 differences" in text
    assert f"torch: task {here['torch']} but driver 2.5.1" in text
    assert f"zarr: task {here['zarr']} but driver 2.18.0" in text
    assert "make container" in text and "profile's python" in text


@pytest.mark.parametrize("kind", BACKENDS)
def test_a_task_of_the_drivers_versions_runs(kind, where):
    calls = [(i, 7) for i in range(2)]
    results = run_tasks(CheckpointableTask(tasks.noisy_sum), calls, spec=ExecutorSpec(kind, 2, PROFILE),
                        jobs_dir=where / "jobs" / "same", stage="same", progress=False)
    assert results == [tasks.noisy_sum(*c) for c in calls]


@pytest.mark.parametrize("kind", BACKENDS)
def test_a_task_of_other_versions_fails_at_its_start_naming_them(kind, where):
    task = CheckpointableTask(tasks.record_interval)
    # as if the driver had run another torch and Python than the task's environment
    task.driver_versions = {**task.driver_versions, "torch": "2.5.1", "python": "3.10"}
    calls = [(0, 0.0, str(where / "ran"))]
    with pytest.raises(TaskFailed, match="VersionMismatch") as e:
        run_tasks(task, calls, spec=ExecutorSpec(kind, 2, PROFILE), jobs_dir=where / "jobs" / "other", stage="other",
                  progress=False)
    here = runtime_versions()
    for line in (f"torch: task {here['torch']} but driver 2.5.1", f"python: task {here['python']} but driver 3.10"):
        assert line in str(e.value)
        log = Path(str(e.value).split("log: ")[1].split("\n")[0])
        assert line in log.read_text()
    assert not (where / "ran").exists(), "the task function ran despite the mismatch"
