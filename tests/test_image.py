"""The Apptainer image itself (containers/): the demo chain run inside it equals the same chain run outside
it, and a Slurm array whose tasks run inside it gives the stores the local executor gives.

The image is PIPELINE_IMAGE (default pipeline-cpu.sif in the repository root, from `make container-cpu`);
apptainer is run through containers/apptainer.sh (the host's, or sid's in a Debian 13 root). Without an
image these tests skip — unless PIPELINE_REQUIRE_IMAGE=1 (CI), where that is a failure.
"""

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from pipeline.cli import main
from tests.support.runs import FEWEST_QUICK, TEST_PROFILE, TINY, copy_run
from tests.support.slurm_control import wait_until

ROOT = Path(__file__).resolve().parent.parent
IMAGE = Path(os.environ.get("PIPELINE_IMAGE", ROOT / "pipeline-cpu.sif")).resolve()
APPTAINER = ROOT / "containers" / "apptainer.sh"
TRAIN = ["--executor", "debug", "--seed", "5", "cv.folds=3", "train.epochs=10", *TINY, "model.hidden=16",
         "model.lr=0.01"]
ATTACK = ["--seed", "5", "attack.targets=all", "attack.max_iter=40", "attack.batch_size=32", "attack.chunk_samples=8",
          *FEWEST_QUICK]
ERRORS = ["--seed", "5", "errors.targets=all", "errors.max_errors=2"]
STORES = ("dataset.zarr", "attack.zarr", "errors.zarr", "susceptibility.zarr")
# what may differ between two runs of the same chain: where and when they ran, and by which interpreter
PROVENANCE = {"run_dir", "created", "python", "executable", "host", "hostname", "written", "mimic_dir"}


@pytest.fixture(scope="module")
def image() -> Path:
    if os.environ.get("PIPELINE_FLOORS") == "1":
        pytest.skip("the floors venv holds the lowest versions, the image the lock's: their stores differ")
    if not IMAGE.is_file():
        if os.environ.get("PIPELINE_REQUIRE_IMAGE") == "1":
            pytest.fail(f"no image at {IMAGE} (PIPELINE_REQUIRE_IMAGE=1): make container-cpu")
        pytest.skip(f"no image at {IMAGE}: make container-cpu")
    root = Path(os.environ.get("PIPELINE_APPTAINER_ROOT", "/var/tmp/pipeline-apptainer-root"))
    if shutil.which("apptainer") is None and not (root / "usr" / "bin" / "apptainer").exists():
        if os.environ.get("PIPELINE_REQUIRE_IMAGE") == "1":
            pytest.fail("Apptainer is not installed (PIPELINE_REQUIRE_IMAGE=1): make container-cpu makes one")
        pytest.skip(f"Apptainer is not installed (no apptainer on PATH, no {root}): make container-cpu makes one")
    return IMAGE


def in_image(image: Path, *args: str, bind: tuple[Path, ...] = ()) -> subprocess.CompletedProcess:
    """`python -m pipeline ARGS` inside the image, the given folders bound at their own paths."""
    binds = [a for p in bind for a in ("--bind", str(p))]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # as a user's job would run it
    return subprocess.run(["bash", str(APPTAINER), "exec", "--no-privs", *binds, str(image), "python", "-m",
                           "pipeline", *args], capture_output=True, text=True, env=env, cwd="/")


def chain(run: Path, demo: Path, runner) -> None:
    """prepare on the real demo → a tiny train → a short attack and errors stage → analyze."""
    for stage, *args in (["prepare", "--mimic-dir", str(demo), "--seed", "5"], ["train", *TRAIN],
                         ["attack", "--executor", "local", *ATTACK], ["errors", "--executor", "local", *ERRORS],
                         ["analyze", "--seed", "5"]):
        runner(stage, "--run-dir", str(run), *args)


def differences(a: Path, b: Path) -> list[str]:
    """Every difference between two run directories' stores (values bit for bit, attributes but
    provenance), model weights and report (but its run-directory line)."""
    found = []
    for name in STORES:
        x, y = (xr.open_zarr(r / name, consolidated=False) for r in (a, b))
        for var in sorted(set(x.variables) | set(y.variables)):
            if var not in x.variables or var not in y.variables:
                found.append(f"{name}/{var}: only in one")
            elif not np.array_equal(x[var].values, y[var].values, equal_nan=x[var].dtype.kind == "f"):
                found.append(f"{name}/{var}: values differ")
        keys = (set(x.attrs) | set(y.attrs)) - PROVENANCE
        found += [f"{name} attribute {k}" for k in sorted(keys) if x.attrs.get(k) != y.attrs.get(k)]
    weights = [json.loads((r / "model" / "model.json").read_text()).get("weights_sha256") for r in (a, b)]
    if weights[0] != weights[1]:
        found.append("model weights")
    reports = [(r / "report.md").read_text().split("\n", 4)[4] for r in (a, b)]  # from after the run line
    if reports[0].replace(str(a), "RUN") != reports[1].replace(str(b), "RUN"):
        found.append("report.md")
    return found


def test_the_demo_chain_inside_the_image_equals_the_chain_outside(image, demo_dir, tmp_path):
    inside, outside = tmp_path / "inside", tmp_path / "outside"

    def run_inside(*args):
        out = in_image(image, *args, bind=(tmp_path, demo_dir))
        assert out.returncode == 0, f"{args[0]} inside the image failed:\n{out.stderr[-3000:]}"

    chain(inside, demo_dir, run_inside)
    chain(outside, demo_dir, lambda *args: main(list(args)) == 0 or pytest.fail(f"{args[0]} outside failed"))
    manifest = json.loads((inside / "manifest.json").read_text())
    assert "/opt/venv" in json.dumps(manifest), "the chain inside ran the image's Python"
    # Every value is the same bit for bit, and so are the model's weights and the report. What differs:
    # dataset.zarr records the interpreter's version, Debian 12's CPython 3.11.2 inside against this
    # venv's 3.11.x, and the later stores record dataset.zarr's fingerprint, which hashes that record.
    assert differences(inside, outside) == ["dataset.zarr attribute versions", "attack.zarr attribute inputs",
                                            "errors.zarr attribute inputs"]
    versions = [xr.open_zarr(r / "dataset.zarr", consolidated=False).attrs["versions"] for r in (inside, outside)]
    assert {k for k in versions[0] if versions[0][k] != versions[1].get(k)} == {"python"}
    assert versions[0]["python"].split(".")[:2] == versions[1]["python"].split(".")[:2] == ["3", "11"]


@pytest.mark.slurm
def test_a_slurm_array_whose_tasks_run_in_the_image_gives_the_local_stores(image, slurm_cluster, demo_run,
                                                                            tmp_path):
    base = tmp_path  # a plain path: the profile's python is a shell command line
    trained = copy_run(demo_run, base / "trained")
    assert main(["train", "--run-dir", str(trained), *TRAIN]) == 0
    runs = {kind: base / kind for kind in ("local", "slurm")}
    for run in runs.values():
        shutil.copytree(trained, run, ignore=shutil.ignore_patterns(".stages", "jobs"))
    profile = base / "image-profile.toml"
    python = f"bash {APPTAINER} exec --no-privs --bind {base} {image} python"
    profile.write_text(TEST_PROFILE.read_text().replace("[default]\n", f"[default]\npython = {json.dumps(python)}\n",
                                                        1))
    slurm = ["--executor", "slurm", f"run.slurm_profile={profile}"]
    for stage, args in (("attack", [*ATTACK, "attack.shards=2"]), ("errors", [*ERRORS, "errors.shards=2"])):
        assert main([stage, "--run-dir", str(runs["local"]), "--executor", "local", *args]) == 0
        assert main([stage, "--run-dir", str(runs["slurm"]), *slurm, *args]) == 0
        [job] = {p.name.split("_")[0] for p in (runs["slurm"] / "jobs" / stage).iterdir()
                 if p.name[0].isdigit() and "_" in p.name}  # one array, its tasks' folders JOB_TASK

        def states(job=job) -> list[str]:
            return subprocess.run(["sacct", "-n", "-X", "-P", "-j", job, "-o", "JobID,State"], capture_output=True,
                                  text=True, check=True).stdout.split()

        # accounting lags the tasks' end by a moment
        wait_until(lambda: len(states()) == 2 and all(s.endswith("|COMPLETED") for s in states()),
                   f"sacct: both tasks of array {job} COMPLETED ({states()})")
        logs = "".join(p.read_text() for p in (runs["slurm"] / "jobs" / stage).rglob("*_log.err"))
        assert logs.count("task runs /opt/venv/bin/python") == 2, "each task ran the image's Python"
    for name in ("attack.zarr", "errors.zarr"):
        x, y = (xr.open_zarr(runs[k] / name, consolidated=False) for k in ("local", "slurm"))
        for var in x.variables:
            np.testing.assert_array_equal(x[var].values, y[var].values, err_msg=f"{name}/{var}")
