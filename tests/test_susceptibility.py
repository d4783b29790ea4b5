"""Susceptibility scores on hand-made perturbation stores whose answers are worked out by hand.

Four targets, 4 hours, the 19 features; perturbations (scaled units) in a few cells:

    target  pred  first (found)                 best (found)
    t0      0     K@h0 +0.2, Na@h1 −0.4 (yes)    K@h0 +0.1 (yes)
    t1      0     K@h0 −0.6 (yes)                K@h0 −0.3, Na@h2 +0.2 (yes)
    t2      0     K@h0 +0.9 (no: must not count) same (no)
    t3      1     Glc@h3 +0.5 (yes)              nothing (no)
"""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr

from pipeline.attack.shards import allocate
from pipeline.config import PipelineConfig
from pipeline.data import prepare
from pipeline.features import NAMES
from pipeline.figures import plt, suptitle
from pipeline.infra import layout
from pipeline.infra.rundir import RunDir, consolidated_zarr_v3
from pipeline.infra.stages import run_stage
from pipeline.susceptibility import analyze
from pipeline.susceptibility.scores import norms, scores
from tests.support.runs import ROOT

pytestmark = pytest.mark.thirdparty  # the floors job runs these (tests/test_floors.py)


def load_summary(run_dir) -> list[dict]:
    """analyze's summary table (tables/summary.json), one row per direction and kind."""
    return json.loads(RunDir(run_dir).table(layout.SUMMARY).read_text())


K, NA, GLC = NAMES.index("potassium"), NAMES.index("sodium"), NAMES.index("glucose")
HOURS = 4
CELLS = {  # (target, kind) → {(hour, feature): P}
    (0, 0): {(0, K): 0.2, (1, NA): -0.4}, (0, 1): {(0, K): 0.1},
    (1, 0): {(0, K): -0.6}, (1, 1): {(0, K): -0.3, (2, NA): 0.2},
    (2, 0): {(0, K): 0.9}, (2, 1): {(0, K): 0.9},
    (3, 0): {(3, GLC): 0.5},
}
FOUND = np.array([[True, True], [True, True], [False, False], [True, False]])
PRED = np.array([0, 0, 0, 1])


def perturbations() -> np.ndarray:
    p = np.zeros((4, 2, HOURS, len(NAMES)), np.float32)
    for (n, k), cells in CELLS.items():
        for (i, j), v in cells.items():
            p[n, k, i, j] = v
    return p


def attack_like() -> xr.Dataset:
    return xr.Dataset(
        {"perturbation": (("sample", "kind", "time", "feature"), perturbations()),
         "found": (("sample", "kind"), FOUND)},
        coords={"kind": ["first", "best"], "feature": list(NAMES), "pred": ("sample", PRED)})


def at(ds, name, d, k, hour, feature):
    return float(ds[name].sel(direction=d, kind=k).isel(time=hour, feature=feature))


def test_every_score_by_hand():
    a = attack_like()
    s = scores(a.perturbation, a.found, xr.where(a.pred == 0, "0to1", "1to0"))
    # 0to1, first: N = 2 (t2 did not succeed and must not count)
    assert int(s.n.sel(direction="0to1", kind="first")) == 2
    assert at(s, "gmp", "0to1", "first", 0, K) == pytest.approx(0.6)
    assert at(s, "gap", "0to1", "first", 0, K) == pytest.approx(0.4)
    assert at(s, "gpp", "0to1", "first", 0, K) == pytest.approx(1.0)
    assert at(s, "s", "0to1", "first", 0, K) == pytest.approx(0.6)
    assert at(s, "ganzp", "0to1", "first", 0, K) == pytest.approx(0.4)
    assert at(s, "sensitivity", "0to1", "first", 0, K) == pytest.approx(2.5)
    # GAP per cell: sodium at hour 1 is 0.4 / 2, not a sum over all cells (the published bug)
    assert at(s, "gap", "0to1", "first", 1, NA) == pytest.approx(0.2)
    assert at(s, "gpp", "0to1", "first", 1, NA) == pytest.approx(0.5)
    assert at(s, "s", "0to1", "first", 1, NA) == pytest.approx(0.2)
    assert at(s, "sensitivity", "0to1", "first", 1, NA) == pytest.approx(1.25)
    s_j = s.s_j.sel(direction="0to1", kind="first")
    assert float(s_j.sel(feature="potassium")) == pytest.approx(0.6)
    assert float(s_j.sel(feature="sodium")) == pytest.approx(0.2)
    assert float(s_j.sel(feature="glucose")) == 0.0
    sens_j = s.sensitivity_j.sel(direction="0to1", kind="first")
    assert float(sens_j.sel(feature="potassium")) == pytest.approx(2.5)
    assert float(sens_j.sel(feature="glucose")) == 0.0  # never perturbed: 0, not NaN
    # GANZP is NaN where nothing was perturbed, and so is sensitivity there
    assert math.isnan(at(s, "ganzp", "0to1", "first", 2, K))
    assert math.isnan(at(s, "sensitivity", "0to1", "first", 0, GLC))
    assert at(s, "gmp", "0to1", "first", 2, K) == 0.0 and at(s, "gpp", "0to1", "first", 2, K) == 0.0
    # 0to1, best
    assert at(s, "gmp", "0to1", "best", 0, K) == pytest.approx(0.3)
    assert at(s, "gap", "0to1", "best", 0, K) == pytest.approx(0.2)
    assert at(s, "sensitivity", "0to1", "best", 0, K) == pytest.approx(5.0)
    assert at(s, "s", "0to1", "best", 2, NA) == pytest.approx(0.1)
    # 1to0: one success among one target for first, none for best
    assert at(s, "s", "1to0", "first", 3, GLC) == pytest.approx(0.5)
    assert float(s.success_rate.sel(direction="0to1", kind="first")) == pytest.approx(2 / 3)
    assert float(s.success_rate.sel(direction="1to0", kind="first")) == 1.0
    empty = s.sel(direction="1to0", kind="best")
    assert int(empty.n) == 0 and float(empty.success_rate) == 0.0
    for name in ("gmp", "gap", "gpp", "s", "s_j", "ganzp", "sensitivity", "sensitivity_j"):
        assert bool(empty[name].isnull().all()), f"{name} must be NaN for a group without examples"


def test_norms_by_hand():
    n = norms(attack_like().perturbation)
    assert n.l0.values[0].tolist() == [2, 1]
    assert n.l1.values[0] == pytest.approx([0.6, 0.1])
    assert n.linf.values[1] == pytest.approx([0.6, 0.3])


def write_run(run: RunDir) -> None:
    """dataset.zarr (4 samples, 4 hours) and attack.zarr holding the table above."""
    rng = np.random.default_rng(0)
    x = rng.random((4, HOURS, len(NAMES))).astype(np.float32)
    cohort = pd.DataFrame({"y": PRED.astype(np.int8), "hadm_id": [10, 11, 12, 13], "icustay_id": [20, 21, 22, 23],
                           "subject_id": [1, 2, 3, 4],
                           "intime": pd.to_datetime(["2100-01-01"] * 4)})
    p5 = np.arange(len(NAMES), dtype=float)
    stats = {"p5": p5, "median": p5 + 1, "p95": p5 + 2 + np.arange(len(NAMES))}  # range of feature j: 2 + j
    record = {"x": x, "mask": np.ones_like(x, bool), "value": np.zeros(x.shape), "count": np.ones(x.shape, np.int32)}
    # as a store made before the record was kept (no model here to re-derive examples with)
    ds = prepare.to_dataset(record, cohort, stats, {"counts": {"hand_made": 4}}).drop_vars(["value", "count"])
    prepare.write_store(ds, run / "dataset.zarr", chunk_samples=2)
    targets = pd.DataFrame({"dataset_index": np.arange(4), "y": PRED, "pred": PRED})
    attrs = {"attack_config": {"max_iter": 10}, "space": "tensor", "seed": 7, "targets": "test",
             "params_source": "hand-made"}
    allocate(run / "attack.zarr", targets, HOURS, chunk=2, attrs=attrs)
    store = zarr.open_group(run / "attack.zarr", mode="r+")  # written as the attack's shards write it
    store["perturbation"][:] = perturbations()
    store["found"][:] = FOUND
    store["iteration"][:] = np.where(FOUND, [[3, 7]], -1).astype(np.int32)
    with consolidated_zarr_v3():
        zarr.consolidate_metadata(str(run / "attack.zarr"))


@pytest.fixture
def hand_made_run(tmp_path) -> RunDir:
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    write_run(run)
    return run


def test_store_scores_and_clinical_units(hand_made_run):
    s = analyze.compute(*analyze.open_run(hand_made_run.path))
    assert s.gmp.dims == ("direction", "kind", "time", "feature")
    assert at(s, "gmp", "0to1", "first", 0, K) == pytest.approx(0.6)
    assert at(s, "gap", "0to1", "first", 1, NA) == pytest.approx(0.2)
    # clinical units: × (p95 − p5) = 2 + j for feature j
    assert at(s, "gmp_clinical", "0to1", "first", 0, K) == pytest.approx(0.6 * (2 + K))
    assert at(s, "ganzp_clinical", "1to0", "first", 3, GLC) == pytest.approx(0.5 * (2 + GLC))
    assert str(s.unit.sel(feature="sodium").values) == "mEq/L"
    assert s.attrs["seed"] == 7


def test_stage_writes_store_tables_figures_report(hand_made_run):
    assert run_stage("analyze", PipelineConfig(), hand_made_run)
    path = hand_made_run.path
    saved = xr.open_zarr(path / "susceptibility.zarr")
    assert set(saved.dims) == {"direction", "kind", "time", "feature"}
    assert float(saved.s_j.sel(direction="0to1", kind="best", feature="potassium")) == pytest.approx(0.3)
    ranked = pd.read_csv(path / "tables" / "susceptibility_0to1.csv")
    assert ranked.feature[:2].tolist() == ["potassium", "sodium"]
    assert ranked.s_j_best[:2].tolist() == pytest.approx([0.3, 0.1])
    clinical = pd.read_csv(path / "tables" / "clinical_0to1.csv").set_index("feature")
    assert clinical.loc["potassium", "cells_changed"] == 2
    assert clinical.loc["potassium", "max_abs_change"] == pytest.approx(0.3 * (2 + K))
    # 4 samples: Sun et al.'s ranking (real MIMIC-III) is not set beside this one, and the report says why
    assert "sodium 0.64" not in (path / "tables" / "susceptibility_0to1.md").read_text()
    assert "sodium 0.64" in analyze.ranking_markdown(ranked, "0to1", 5, compare=True)
    assert "published ranking (real MIMIC-III) is not set beside these" in (path / "report.md").read_text()
    figures = {p.name for p in (path / "figures").glob("*.png")}
    assert {"gpp_heatmap.png", "s_heatmap.png", "gap_heatmap.png", "s_j_ranking.png", "norms.png",
            "iteration_cdf.png"} <= figures
    report = (path / "report.md").read_text()
    for name in figures:
        assert f"(figures/{name})" in report
    assert "| 0→1 | first | 3 | 2 | 66.7% (20.8–93.9) |" in report  # success rate per direction and kind, 95% CI
    summary = {(r["direction"], r["kind"]): r for r in load_summary(path)}
    assert summary[("0to1", "best")]["share_l0_le_10"] == pytest.approx(2 / 3)  # t2 failed: not sparse
    # every changed cell of the best examples, in clinical units (× (p95 − p5) = 2 + j)
    changes = pd.read_csv(path / "tables" / "changes_best.csv")
    assert sorted(zip(changes["sample"], changes.feature, changes.hour, strict=True)) == [
        (0, "potassium", 0), (1, "potassium", 0), (1, "sodium", 2)]
    assert (changes.after - changes.before).tolist() == pytest.approx(
        [0.1 * (2 + K), -0.3 * (2 + K), 0.2 * (2 + NA)], rel=1e-5)
    assert "hadm_id" in changes and (changes.direction == "0to1").all()
    assert "(0→1, 1 cell): potassium at hour 0" in report  # the sparsest example spelled out
    summary = {(r["direction"], r["kind"]): r for r in load_summary(path)}
    assert summary[("0to1", "best")]["median_l0"] == 1.5
    assert summary[("0to1", "first")]["median_iteration"] == 3


def script(name: str, *args, cwd) -> subprocess.CompletedProcess:
    """Run analysis/<name> without the package on the path: the scripts need only the run directory."""
    env = {**os.environ, "PYTHONPATH": ""}
    return subprocess.run([sys.executable, str(ROOT / "analysis" / name), *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True)


def test_patient_heatmap_script_in_clinical_units(hand_made_run, tmp_path):
    out = script("patient_heatmap.py", hand_made_run.path, "--target", "0", "--kind", "first",
                 "--out", tmp_path / "patient.png", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    rows = {line.split()[0]: line.split() for line in out.stdout.splitlines()[2:4]}
    # sodium at hour 1 lowered by 0.4 scaled = 0.4 × (2 + j) mEq/L; potassium at hour 0 raised by 0.2 × 2
    assert rows["sodium"][1] == "1" and float(rows["sodium"][4]) == pytest.approx(-0.4 * (2 + NA), rel=1e-3)
    assert rows["potassium"][1] == "0" and float(rows["potassium"][4]) == pytest.approx(0.4, rel=1e-3)
    assert rows["sodium"][-1] == "mEq/L"
    assert (tmp_path / "patient.png").stat().st_size > 10_000
    bad = script("patient_heatmap.py", hand_made_run.path, "--target", "9", cwd=tmp_path)
    assert bad.returncode != 0 and "--target 9" in bad.stderr
    missing = script("patient_heatmap.py", tmp_path / "nope", cwd=tmp_path)
    assert missing.returncode != 0 and "attack.zarr not found" in missing.stderr


def test_compare_runs_script(hand_made_run, tmp_path):
    assert run_stage("analyze", PipelineConfig(), hand_made_run)
    out = script("compare_runs.py", hand_made_run.path, hand_made_run.path, "--kind", "first",
                 "--out", tmp_path / "compare.png", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "direction 0→1: Spearman rank correlation 1.000" in out.stdout  # a run against itself
    assert (tmp_path / "compare.png").stat().st_size > 10_000


def test_a_long_figure_title_is_wrapped_inside_the_figure():
    """A one-column heatmap's title of 80 characters is wrapped to the figure's width, not set on one line
    wider than the panels (pipeline/figures.py)."""
    fig = plt.figure(figsize=(6.2, 9.2), constrained_layout=True)
    suptitle(fig, "how large the smallest flipping edit of one value is (median over the targets)")
    fig.canvas.draw()
    title, whole = fig._suptitle.get_window_extent(), fig.bbox
    plt.close(fig)
    assert "\n" in fig._suptitle.get_text()
    assert whole.x0 <= title.x0 and title.x1 <= whole.x1 and title.y1 <= whole.y1
