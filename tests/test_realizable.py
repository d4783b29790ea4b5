"""Record-space examples are edits of the record: recorded cells only, plausible values, and — end to end
on the real demo — raw tables edited accordingly and prepared again flip the model's prediction."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from pipeline.attack.core import margin
from pipeline.checks.limits import caught
from pipeline.cli import main
from pipeline.data.record import derive, feature_stats
from pipeline.features import FEATURES
from pipeline.model import load_model
from pipeline.susceptibility import checks_report
from tests.support.runs import prepare_again, trained_on_demo

pytestmark = pytest.mark.thirdparty  # the floors job runs these (tests/test_floors.py)

RECORD_ATTACK = ["--executor", "debug", "--seed", "5", "cv.folds=3", "attack.targets=all", "attack.max_iter=200",
                 "attack.batch_size=64", "attack.chunk_samples=32", "attack.lam=0.003", "attack.lr=0.05"]


@pytest.fixture(scope="module")
def demo_attacked(demo_run, tmp_path_factory):
    """The demo, a tiny model trained on it and a record-space attack of every correctly classified sample."""
    run = trained_on_demo(demo_run, tmp_path_factory.mktemp("demo-attacked"))
    assert main(["attack", "--run-dir", str(run), *RECORD_ATTACK]) == 0
    return run


def test_every_edit_is_of_a_recorded_value_and_stays_plausible(demo_attacked):
    attack = xr.open_zarr(demo_attacked / "attack.zarr", consolidated=False).load()
    data = xr.open_zarr(demo_attacked / "dataset.zarr", consolidated=False).load()
    assert attack.attrs["space"] == "record" and attack.found.sel(kind="best").any()
    index = attack.dataset_index.values
    recorded = data["mask"].values[index][:, None]
    edit = attack["edit"].values
    assert not (edit[~np.broadcast_to(recorded, edit.shape)] != 0).any(), "an imputed cell was edited"
    after = data["value"].values[index][:, None] + attack["edit_clinical"].values
    lo, hi = np.array([f.lo for f in FEATURES]), np.array([f.hi for f in FEATURES])
    edited = edit != 0
    feature = np.broadcast_to(np.arange(len(FEATURES)), edit.shape)
    assert ((after[edited] > lo[feature[edited]]) & (after[edited] <= hi[feature[edited]])).all()
    # the change of the model's input is zero wherever no edit reaches
    assert (attack.perturbation.values[~attack.found.values] == 0).all()


def test_analyze_proves_every_record_space_example_realizable(demo_attacked, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(demo_attacked, run)
    assert main(["analyze", "--run-dir", str(run), "--executor", "debug", "--seed", "5", "cv.folds=3"]) == 0
    rows = json.loads((run / "tables" / "summary.json").read_text())
    assert any(r["successes"] for r in rows)
    for r in rows:
        assert r["realizable"] == r["successes"], r  # every found example re-derives to a flip
        assert 0 <= r["share_edits_le_1"] <= r["share_edits_le_3"] <= r["share_edits_le_10"] <= 1
    report = (run / "report.md").read_text()
    assert "recorded at hour" in report and "re-derive from the edited record" in report
    edits = pd.read_csv(run / "tables" / "edits_best.csv")
    assert (edits.reaches_from <= edits.hour).all() and (edits.hour <= edits.reaches_to).all()
    assert edits.range_check.dtype == bool and edits.delta_check.dtype == bool  # which check flags each edit
    unnoticed = pd.read_csv(run / "tables" / "edits_undetected.csv")
    assert not unnoticed.empty and "## Would the checks catch it?" in report


def test_every_undetected_example_flips_and_no_check_flags_it(demo_attacked):
    """The check-aware searches (docs/methods.md §11) on the real demo: their examples are edits of recorded
    values that flip the prediction once re-derived, pass every check with the stored limits, and are never
    behind the stored examples that no check flags."""
    attack = xr.open_zarr(demo_attacked / "attack.zarr", consolidated=False).load()
    data = xr.open_zarr(demo_attacked / "dataset.zarr", consolidated=False).load()
    limits = checks_report.limits_of(attack, "attack.zarr")
    assert limits is not None and attack.attrs["checks"]["source"] == "training records"
    found = checks_report.undetected_found(attack)
    assert found.any()
    rows = np.flatnonzero(found)
    edited = checks_report.undetected_values(attack, data, rows)
    assert not caught(checks_report.clean(attack, data)[rows], edited, limits)["any"].any()
    index = attack.dataset_index.values[rows]
    x = derive(edited, data["mask"].values[index], feature_stats(data))
    with torch.no_grad():
        m = margin(load_model(demo_attacked)(torch.from_numpy(x)), torch.from_numpy(attack.y.values[rows].astype(int)))
    assert (m.numpy() > 0).all()
    delta = attack["undetected_edit"].values
    assert not (delta[~data["mask"].values[attack.dataset_index.values]] != 0).any(), "an imputed cell was edited"
    k = checks_report.k_table(attack, data, limits, 3)
    for j in (1, 2, 3):
        assert (k[f"undetected_le_{j}"] >= k[f"unflagged_best_le_{j}"]).all()
    one = attack["one_edit_undetected"].values
    assert ((~np.isnan(one)).any(axis=(1, 2)) == (checks_report.edits_of(attack, "undetected") == 1)).all()


def test_an_undetected_example_that_lost_its_edit_fails_analyze_and_the_advice_works(demo_attacked, tmp_path,
                                                                                        capsys):
    """Its chunk lost under a marker that does not list the store's files: the example reads as no edit at
    all, which flips nothing; analyze must say so rather than count it."""
    run = tmp_path / "run"
    shutil.copytree(demo_attacked, run)
    marker = run / ".stages" / "attack.json"
    marker.write_text(json.dumps({k: v for k, v in json.loads(marker.read_text()).items() if k != "outputs"}))
    attack = xr.open_zarr(run / "attack.zarr", consolidated=False)
    first = int(np.flatnonzero(attack.undetected_method.values >= 0)[0]) // attack.undetected_edit.chunks[0][0]
    (run / "attack.zarr" / "undetected_edit" / "c" / str(first) / "0" / "0").unlink()
    analyze = ["analyze", "--run-dir", str(run), "--executor", "debug", "--seed", "5", "cv.folds=3"]
    assert main(analyze) == 1
    [line] = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error: ")]
    assert "attack.zarr" in line and "undetected examples do not re-derive to a flip" in line, line
    assert "`python -m pipeline attack --force`" in line
    # the advice is the subject: a smaller attack (the test set, one edit) makes a store analyze accepts
    assert main(["attack", "--run-dir", str(run), *RECORD_ATTACK, "attack.targets=test", "attack.max_iter=20",
                 "attack.max_edits=1", "--force"]) == 0
    assert main(analyze) == 0


def test_edits_written_into_the_raw_tables_flip_the_re_prepared_sample(demo_dir, demo_attacked, tmp_path):
    attack = xr.open_zarr(demo_attacked / "attack.zarr", consolidated=False).load()
    data = xr.open_zarr(demo_attacked / "dataset.zarr", consolidated=False).load()
    best = attack.sel(kind="best")
    edits = (best["edit"] != 0).sum(("time", "feature")).values
    found = np.flatnonzero(best.found.values)
    chosen = found[np.argsort(edits[found], kind="stable")][:3]  # the three sparsest examples
    assert len(chosen), "the attack found no example on the demo"
    stays = pd.read_csv(demo_dir / "ICUSTAYS.csv.gz", parse_dates=["intime"]).set_index("icustay_id")
    cells = []
    for target in chosen:
        sample = int(attack.dataset_index.values[target])
        icustay = int(data.icustay_id.values[sample])
        after = data["value"].values[sample] + best["edit_clinical"].values[target]
        for hour, feature in zip(*np.nonzero(best["edit"].values[target]), strict=True):
            cells.append({"table": FEATURES[feature].table, "hadm_id": int(data.hadm_id.values[sample]),
                          "icustay_id": icustay, "intime": stays.loc[icustay, "intime"], "feature": int(feature),
                          "hour": int(hour), "after": float(after[hour, feature])})
    prepared = prepare_again(demo_dir, pd.DataFrame(cells), tmp_path, demo_attacked / "dataset.zarr")
    assert (prepared.hadm_id.values == data.hadm_id.values).all(), "the cohort is the same"
    samples = attack.dataset_index.values[chosen]
    model = load_model(demo_attacked)
    with torch.no_grad():
        before = model(torch.from_numpy(data.x.values[samples]))
        after = model(torch.from_numpy(prepared.x.values[samples]))
    target = torch.from_numpy(attack.y.values[chosen].astype(np.int64))
    assert (margin(before, target) < 0).all(), "correctly classified before the edit"
    assert (margin(after, target) > 0).all(), "flipped after the edit went through the raw tables and prepare"


@pytest.mark.parametrize("stage", ["attack", "errors"])
def test_a_store_without_the_record_says_to_prepare_again_and_that_works(stage, demo_dir, demo_attacked, tmp_path,
                                                                        capsys):
    """The record space and the entry-error search read the record: a dataset.zarr made before it was kept
    is one line advising `prepare --force`, which makes a store they run on."""
    run = tmp_path / "run"
    shutil.copytree(demo_attacked, run, ignore=shutil.ignore_patterns("attack.zarr", ".stages"))
    old = xr.open_zarr(run / "dataset.zarr", consolidated=False).load().drop_vars(["value", "count"])
    shutil.rmtree(run / "dataset.zarr")
    old.to_zarr(run / "dataset.zarr", zarr_format=3, consolidated=False)
    args = [*RECORD_ATTACK, "attack.targets=test", "attack.max_iter=20", "attack.max_edits=1", "errors.beam=1",
            "errors.max_errors=1"]  # the advice is the subject: the test set, one edit or error
    code = main([stage, "--run-dir", str(run), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "holds no recorded values" in err[0] and "prepare --force" in err[0], err
    assert not (run / f"{stage}.zarr").exists()
    assert main(["prepare", "--run-dir", str(run), "--mimic-dir", str(demo_dir), "--force"]) == 0
    assert main([stage, "--run-dir", str(run), *args]) == 0
