"""`pipeline run` end to end: on the real demo data, again (everything skipped), and on Slurm vs locally.

Tiny settings: these tests check that every stage hands the next what it needs and that the report
is complete, not the quality of the model.
"""

import shutil

import numpy as np
import pytest
import xarray as xr

from pipeline.cli import main
from pipeline.infra.stages import CHAIN
from tests.support.chains import TINY_CHAIN, assert_complete
from tests.support.runs import TEST_PROFILE


def demo_args(run, demo_dir, *extra):
    # the demo's tiny model means little, and `run` says so (exit 3) unless analyze.weak_run = "warn"
    chain = [a for a in TINY_CHAIN if not a.startswith("analyze.weak_run=")]
    return ["run", "--run-dir", str(run), "--mimic-dir", str(demo_dir), "--seed", "1", *chain, *extra]


@pytest.fixture(scope="module")
def demo_run(demo_dir, tmp_path_factory):
    """The whole chain once on the real demo data (the tests below only read it or re-run it)."""
    run = tmp_path_factory.mktemp("demo") / "run"
    assert main(demo_args(run, demo_dir)) == 3  # complete, and its report says it means little
    return run


def test_run_on_the_demo_then_again_skips_everything(demo_run, demo_dir, capsys, caplog):
    run = demo_run
    assert not (run / "raw").exists()  # real tables: no synthetic data
    assert_complete(run)
    assert xr.open_zarr(run / "dataset.zarr").sizes["sample"] == 95
    report = (run / "report.md").read_text().splitlines()
    top = "\n".join(report[:16])
    assert report[4].startswith("> **This run means little.**") and "too few successful examples" in top.lower()
    assert "MIMIC-III tables" in top and "only 95 samples" in top
    unchanging = ("manifest.json", ".manifest.lock")
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file() and p.name not in unchanging}
    capsys.readouterr()
    with caplog.at_level("INFO"):
        assert main(demo_args(run, demo_dir)) == 3
    assert f"report: {run / 'report.md'}" in capsys.readouterr().out
    assert "this run means little: too few successful examples" in caplog.text
    for stage in set(CHAIN) - {"synth"}:
        assert f"{stage}: complete, skipped" in caplog.text
    assert main(demo_args(run, demo_dir, "analyze.weak_run=warn")) == 0  # the exit only: nothing is redone
    after = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file() and p.name not in unchanging}
    assert after == before  # nothing redone, nothing rewritten


@pytest.mark.slurm
def test_slurm_run_gives_the_same_susceptibility_as_local(slurm_cluster, small_run, tmp_path):
    """Same seed, same tiny chain: the arrays on Slurm and the local processes give the same numbers."""
    # One worker: the trial order of a parallel Optuna study depends on timing, and so could the
    # tuned parameters. Two CPUs per task on Slurm: torch then uses as many threads as locally.
    profile = tmp_path / "two-cpus.toml"
    profile.write_text(TEST_PROFILE.read_text().replace("cpus_per_task = 1", "cpus_per_task = 2"))
    runs = {}
    for executor in ("local", "slurm"):
        run = tmp_path / executor
        shutil.copytree(small_run, run)  # synth (300 admissions) + prepare done (seed 3): the same config, kept
        assert main(["run", "--run-dir", str(run), "--executor", executor, "--workers", "1", "--seed", "3",
                     "synth.admissions=300", f"run.slurm_profile={profile}", *TINY_CHAIN]) == 0
        runs[executor] = assert_complete(run)
    local, slurm = runs["local"], runs["slurm"]
    assert (tmp_path / "slurm" / "jobs" / "attack").is_dir()  # it did go through Slurm
    assert int(local.n.sel(kind="best").sum()) > 0  # there are scores to compare
    for name in ("n", "targets", "gmp", "gap", "gpp", "s", "s_j", "ganzp", "sensitivity", "sensitivity_j"):
        np.testing.assert_array_equal(local[name].values, slurm[name].values, err_msg=name)
    assert (tmp_path / "slurm" / "jobs" / "errors").is_dir()
    errors = {e: xr.open_zarr(tmp_path / e / "errors.zarr", consolidated=False).load() for e in runs}
    for name in ("flipped", "n_errors", "hour", "feature", "kind", "erroneous", "margin"):
        np.testing.assert_array_equal(errors["local"][name].values, errors["slurm"][name].values, err_msg=name)
