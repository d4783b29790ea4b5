"""The record kept in dataset.zarr and the one transform from it to the model's input."""

import numpy as np
import pytest
import torch
import xarray as xr

from pipeline.cli import main
from pipeline.data.record import Transform, derive
from pipeline.features import FEATURES

pytestmark = pytest.mark.thirdparty  # the floors job runs these (tests/test_floors.py)


def stats_of(ds: xr.Dataset) -> dict[str, np.ndarray]:
    return {k: ds[k].values for k in ("p5", "median", "p95")}


@pytest.mark.parametrize("run", ["demo_run", "small_run"])
def test_the_stored_input_is_the_transform_of_the_stored_record(run, request):
    ds = xr.open_zarr(request.getfixturevalue(run) / "dataset.zarr", consolidated=False).load()
    value, mask, count = ds["value"].values, ds["mask"].values, ds["count"].values
    assert (mask == (count > 0)).all() and (mask == ~np.isnan(value)).all()
    lo, hi = np.array([f.lo for f in FEATURES]), np.array([f.hi for f in FEATURES])
    recorded = value[mask]
    feature = np.broadcast_to(np.arange(len(FEATURES)), mask.shape)[mask]
    assert ((recorded > lo[feature]) & (recorded <= hi[feature])).all(), "a recorded mean is a plausible value"
    np.testing.assert_array_equal(derive(value, mask, stats_of(ds)), ds.x.values)  # bit for bit
    v = torch.from_numpy(np.where(mask, value, 0.0))
    np.testing.assert_array_equal(Transform(mask, stats_of(ds))(v).numpy(), ds.x.values)  # the attack's: the same


def test_the_torch_transform_moves_interpolated_and_carried_cells_with_their_record():
    value = np.full((1, 6, 1), np.nan)
    value[0, [1, 3], 0] = [20.0, 40.0]
    mask = ~np.isnan(value)
    stats = {"p5": np.array([0.0]), "median": np.array([50.0]), "p95": np.array([100.0])}
    v = torch.from_numpy(np.where(mask, value, 0.0)).requires_grad_(True)
    x = Transform(mask, stats)(v)
    assert x[0, :, 0].tolist() == pytest.approx([0.2, 0.2, 0.3, 0.4, 0.4, 0.4])
    (grad,) = torch.autograd.grad(x[0, :, 0].sum(), v)
    # hour 1's value reaches hours 0, 1 and half of 2; hour 3's the other half of 2 and hours 3-5
    assert (grad[0, :, 0] * 100).tolist() == pytest.approx([0, 2.5, 0, 3.5, 0, 0])  # per unit: 1/100


def test_prepare_with_frozen_statistics_uses_them(demo_dir, demo_run, small_run, tmp_path):
    run = tmp_path / "run"
    frozen = small_run / "dataset.zarr"
    assert main(["prepare", "--run-dir", str(run), "--mimic-dir", str(demo_dir), f"prepare.stats_from={frozen}"]) == 0
    ds = xr.open_zarr(run / "dataset.zarr", consolidated=False)
    theirs, own = xr.open_zarr(frozen, consolidated=False), xr.open_zarr(demo_run / "dataset.zarr", consolidated=False)
    for k in ("p5", "median", "p95"):
        np.testing.assert_array_equal(ds[k].values, theirs[k].values)
    np.testing.assert_array_equal(ds["value"].values, own["value"].values)  # the record is the demo's
    assert ds.attrs["stats_from"] == str(frozen)
    np.testing.assert_array_equal(ds.x.values, derive(own["value"].values, own["mask"].values, stats_of(theirs)))


@pytest.mark.parametrize(("make", "message"), [
    (lambda src, tmp: tmp / "nowhere.zarr", "not a dataset.zarr"),
    (lambda src, tmp: src, "made with other window settings: window_hours = 48 there, 24 here"),
])
def test_frozen_statistics_from_a_mismatched_store_stop_prepare(make, message, demo_dir, demo_run, tmp_path, capsys):
    run = tmp_path / "run"
    store = make(demo_run / "dataset.zarr", tmp_path)
    code = main(["prepare", "--run-dir", str(run), "--mimic-dir", str(demo_dir), f"prepare.stats_from={store}",
                 "prepare.window_hours=24"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0] and "stats_from" in err[0], err
    assert not (run / "dataset.zarr").exists() and not list(run.glob(".dataset.zarr*"))
