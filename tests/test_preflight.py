"""Preflight and dry run: a broken cluster setup fails before anything runs; a dry run shows
each stage's config and sbatch script and submits nothing."""

import os
import re
import shutil
import subprocess
import time
import venv
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.infra.executor import job_name

pytestmark = pytest.mark.thirdparty  # the floors job runs these (tests/test_floors.py)

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).parent / "golden"
EXAMPLE = ROOT / "slurm" / "profiles" / "example-gpu-cluster.toml"
TEST_PROFILE = ROOT / "slurm" / "profiles" / "test-cluster.toml"


def one_line_error(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize("profile,message", [
    ("missing.toml", r"run\.slurm_profile: .*missing\.toml not found"),
    ("[default]\npartiton = 'gpu'\n", r"p\.toml: \[stages\.tune-model\]: unknown key 'partiton'"),
    ("[default]\npython = '/nonexistent/venv/bin/python'\n",
     r"\[stages\.tune-model\] python: /nonexistent/venv/bin/python does not exist or is not executable"),
    ("[default]\npython = 'apptainer exec --nv pipeline.sif python'\n",
     r"container image .*/pipeline\.sif not found"),
    ("[stages.attack]\ngpus_per_node = 1\npython = 'apptainer exec ./p.toml python'\n",
     r"\[stages\.attack\] python: the stage requests 1 GPU\(s\) but runs apptainer without --nv"),
])
def test_a_broken_profile_fails_in_preflight_before_synth_runs(tmp_path, capsys, profile, message):
    path = tmp_path / "missing.toml" if profile == "missing.toml" else tmp_path / "p.toml"
    if profile != "missing.toml":
        path.write_text(profile.replace("./p.toml", str(tmp_path / "p.toml")))
    run = tmp_path / "run"
    assert main(["run", "--run-dir", str(run), "--executor", "slurm", f"run.slurm_profile={path}"]) == 2
    assert re.search(message, one_line_error(capsys))
    assert not run.exists(), "nothing ran, nothing was written"


def test_a_profile_python_without_the_pipeline_fails_in_preflight(tmp_path, capsys):
    """It passed preflight and failed 19 s later in every task ("No module named 'submitit'")."""
    bare = tmp_path / "bare"
    venv.create(bare, with_pip=False)  # a Python without this package or its dependencies
    (tmp_path / "p.toml").write_text(f"[default]\npython = '{bare / 'bin' / 'python'}'\n")
    run = tmp_path / "run"
    assert main(["cv", "--run-dir", str(run), "--executor", "slurm", f"run.slurm_profile={tmp_path / 'p.toml'}"]) == 2
    assert re.search(r"\[stages\.cv\] python: .*bare/bin/python cannot run the pipeline's tasks \(ModuleNotFoundError: "
                     r"No module named '(submitit|torch|pipeline)'\)", one_line_error(capsys))
    assert not run.exists()


@pytest.mark.slurm
def test_a_partition_slurm_does_not_know_fails_in_preflight(slurm_cluster, tmp_path, capsys):
    """It passed preflight and failed at submission with submitit's traceback."""
    (tmp_path / "p.toml").write_text("[default]\npartition = 'nosuchpartition'\n")
    run = tmp_path / "run"
    assert main(["cv", "--run-dir", str(run), "--executor", "slurm", f"run.slurm_profile={tmp_path / 'p.toml'}"]) == 2
    error = one_line_error(capsys)
    assert "[stages.cv]: sbatch --test-only rejects the stage's array" in error and "partition" in error.lower()
    assert not run.exists(), "no pickles in jobs/, nothing written"


def test_a_profile_resolves_its_paths_against_its_own_folder(tmp_path, monkeypatch, capsys):
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "pipeline.sif").write_bytes(b"")
    (tmp_path / "site" / "cluster.toml").write_text(
        "[default]\npython = 'apptainer exec --nv pipeline.sif python'\n")
    monkeypatch.chdir(ROOT)  # elsewhere: a relative image would be looked for here
    assert main(["cv", "--dry-run", "--run-dir", str(tmp_path / "run"), "--executor", "slurm",
                 f"run.slurm_profile={tmp_path / 'site' / 'cluster.toml'}"]) in (0, 2)
    image = tmp_path / "site" / "pipeline.sif"
    assert f"apptainer exec --nv {image} python -P -u -m pipeline.infra.executor.guard" in capsys.readouterr().out


def test_an_unreachable_database_fails_in_preflight(tmp_path, capsys):
    pytest.importorskip("psycopg2")
    url = "postgresql+psycopg2://alice:S3cr3t@127.0.0.1:1/optuna"  # nothing listens on port 1
    assert main(["tune-model", "--run-dir", str(tmp_path / "run"), f"run.storage={url}"]) == 2
    error = one_line_error(capsys)
    assert error.startswith("error: run.storage postgresql+psycopg2://alice:***@127.0.0.1:1/optuna: cannot connect")
    assert "S3cr3t" not in error and not (tmp_path / "run").exists()


def test_a_run_directory_that_cannot_be_made_fails_in_preflight(tmp_path, capsys):
    (tmp_path / "a-file").write_text("")
    assert main(["synth", "--run-dir", str(tmp_path / "a-file" / "run")]) == 2
    assert f"run directory {tmp_path}/a-file/run: {tmp_path}/a-file is not a writable folder" in one_line_error(capsys)


def test_the_dry_run_prints_each_stage_and_matches_the_golden_attack_stage(tmp_path, capsys):
    """The attack stage as the example GPU cluster's profile would submit it (paths normalized)."""
    site = tmp_path / "site"
    site.mkdir()
    shutil.copy(EXAMPLE, site / "cluster.toml")
    (site / "pipeline.sif").write_bytes(b"")
    run = tmp_path / "run"
    code = main(["attack", "--dry-run", "--run-dir", str(run), "--executor", "slurm",
                 f"run.slurm_profile={site / 'cluster.toml'}", "attack.shards=8"])
    out = capsys.readouterr().out
    assert code == (2 if "REJECTED" in out else 0)  # the test cluster has no partition "gpu"
    assert not run.exists()
    printed = "\n".join(line for line in out.replace(str(tmp_path), "/scratch").splitlines()
                        if not line.startswith(("sbatch --test-only", "  sbatch")))  # the verdict is the site's
    assert f"#SBATCH --job-name={job_name('attack', run)}" in out
    golden = GOLDEN / "dry-run-attack-example-gpu-cluster.txt"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.write_text(printed.replace(job_name("attack", run), "pipeline-attack-TAG") + "\n")
    assert printed.replace(job_name("attack", run), "pipeline-attack-TAG") + "\n" == golden.read_text()


def test_the_dry_run_on_the_test_cluster_submits_nothing(slurm_cluster, shared_tmp, capsys):
    run = shared_tmp / "dry"
    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    assert main(["run", "--dry-run", "--run-dir", str(run), "--executor", "slurm",
                 f"run.slurm_profile={TEST_PROFILE}"]) == 0
    out = capsys.readouterr().out
    for stage in ("tune-model", "cv", "train", "tune-attack", "attack", "errors"):
        assert f"## {stage}:" in out and f"#SBATCH --job-name={job_name(stage, run)}" in out
    assert out.count("sbatch --test-only: accepted:") == 6
    assert "## synth:" in out and out.count("runs in the driver (no array)") == 3  # synth, prepare, analyze
    queued = subprocess.run(["squeue", "-h", "-o", "%j"], capture_output=True, text=True, check=True).stdout
    accounted = subprocess.run(["sacct", "-n", "-X", "-S", started, "-o", "JobName%60"], capture_output=True,
                               text=True, check=True).stdout
    for stage in ("tune-model", "cv", "train", "tune-attack", "attack"):
        assert job_name(stage, run) not in queued and job_name(stage, run) not in accounted
    assert not run.exists()


def test_print_config_prints_the_resolved_toml_and_runs_nothing(tmp_path, capsys):
    import tomllib

    url = "postgresql+psycopg2://alice:S3cr3t@db/optuna"
    assert main(["cv", "--print-config", "--run-dir", str(tmp_path / "run"), "cv.folds=3",
                 f"run.storage={url}"]) == 0
    config = tomllib.loads(capsys.readouterr().out)
    assert config["cv"]["folds"] == 3 and config["run"]["storage"] == "postgresql+psycopg2://alice:***@db/optuna"
    assert set(config) >= {"run", "model", "synth", "prepare", "tune-model", "cv", "train", "tune-attack", "attack"}
    assert not (tmp_path / "run").exists()
