"""CF-style metadata of the three stores, read back with plain xarray.

A small run made by the stages themselves (prepare → train → attack → analyze): every variable and
coordinate has a `long_name`, `Conventions` is set, `time` is in hours ("h") and stays an integer
under every decoding, the direction labels are easy to type, and GANZP in clinical units says so.
"""

import json

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from pipeline.attack.shards import allocate, resumable
from pipeline.cli import main
from pipeline.infra import cf
from tests.support.runs import FEWEST_QUICK, copy_trained

pytestmark = pytest.mark.thirdparty  # the floors job runs these (tests/test_floors.py)

STORES = ("dataset.zarr", "attack.zarr", "susceptibility.zarr")
# the stores' metadata does not depend on how many targets there are: the test set's, one edit at most
TINY_ATTACK = ["--seed", "5", "cv.folds=3", "attack.targets=test", "attack.max_iter=12", "attack.batch_size=32",
               "attack.chunk_samples=8", "attack.lam=0.001", "attack.lr=0.1", *FEWEST_QUICK, "attack.max_edits=1"]


@pytest.fixture(scope="module")
def analyzed_run(trained_run, tmp_path_factory):
    """trained_run plus attack.zarr (a tiny attack of the test set) and susceptibility.zarr."""
    run = copy_trained(trained_run, tmp_path_factory.mktemp("metadata"))
    assert main(["attack", "--run-dir", str(run), "--executor", "debug", *TINY_ATTACK]) == 0
    assert main(["analyze", "--run-dir", str(run), "--executor", "debug", *TINY_ATTACK]) == 0
    return run


@pytest.mark.parametrize("store", STORES)
def test_every_variable_and_coordinate_has_a_long_name(analyzed_run, store):
    ds = xr.open_zarr(analyzed_run / store)
    assert ds.attrs["Conventions"] == cf.CONVENTIONS and cf.CONVENTIONS.startswith("CF-")
    missing = [name for name, var in ds.variables.items() if not str(var.attrs.get("long_name", "")).strip()]
    assert not missing, f"{store}: no long_name on {missing}"
    for name, var in ds.variables.items():
        units = var.attrs.get("units")
        assert units in (None, cf.DIMENSIONLESS, cf.HOURS), f"{store}: {name} has units {units!r}"
        if units is None and np.issubdtype(var.dtype, np.floating):  # a float without units: clinical units
            assert "`unit`" in var.attrs["long_name"], f"{store}: {name} has neither units nor a pointer to `unit`"


@pytest.mark.parametrize("store", STORES)
def test_time_is_integer_hours_under_every_decoding(analyzed_run, store):
    path = analyzed_run / store
    for options in ({}, {"decode_timedelta": True}, {"decode_times": True, "decode_timedelta": True},
                    {"decode_cf": False}):
        ds = xr.open_zarr(path, **options)
        assert ds.time.attrs["units"] == "h", (store, options)
        assert np.issubdtype(ds.time.dtype, np.integer), (store, options, ds.time.dtype)  # not timedelta64
        assert ds.time.values.tolist() == list(range(ds.sizes["time"]))


@pytest.mark.parametrize("store", STORES)
def test_cf_decoding_changes_no_value(analyzed_run, store):
    """What xr.open_zarr decodes (units, flags, fill values) equals the raw arrays: nothing mangled."""
    decoded, raw = xr.open_zarr(analyzed_run / store), xr.open_zarr(analyzed_run / store, decode_cf=False)
    assert set(decoded.variables) == set(raw.variables)
    for name in decoded.variables:
        a, b = decoded[name].values, raw[name].values
        if a.dtype.kind in "OUT":  # strings: object or StringDType
            assert [str(v) for v in a.ravel()] == [str(v) for v in b.ravel()], (store, name)
        else:
            assert a.dtype == b.dtype, (store, name, a.dtype, b.dtype)
            np.testing.assert_array_equal(a, b, err_msg=f"{store}: {name}")


def test_direction_labels_are_easy_to_type(analyzed_run):
    sus = xr.open_zarr(analyzed_run / "susceptibility.zarr")
    assert sus.direction.values.tolist() == ["0to1", "1to0"]
    assert "0to1 = true label 0 → predicted 1" in sus.direction.attrs["long_name"]
    assert float(sus.n.sel(direction="0to1", kind="best")) >= 0  # selectable without an arrow
    tables = analyzed_run / "tables"
    assert {p.name for p in tables.glob("susceptibility_*.csv")} == {"susceptibility_0to1.csv",
                                                                      "susceptibility_1to0.csv"}
    assert {r["direction"] for r in json.loads((tables / "summary.json").read_text())} == {"0to1", "1to0"}
    assert set(pd.read_csv(tables / "changes_best.csv").direction) <= {"0to1", "1to0"}
    report = (analyzed_run / "report.md").read_text()
    assert "### Direction 0→1" in report and "### Direction 1→0" in report  # people read arrows


def test_clinical_ganzp_describes_itself(analyzed_run):
    sus = xr.open_zarr(analyzed_run / "susceptibility.zarr")
    for name in ("gmp", "gap", "ganzp"):
        scaled, clinical = sus[name].attrs, sus[f"{name}_clinical"].attrs
        assert scaled["units"] == "1" and "units" not in clinical  # per-feature units: see `unit`
        for key in ("long_name", "description"):
            assert clinical[key] != scaled[key], (name, key)
            assert "clinical unit" in clinical[key] and "scaled units" in scaled[key], (name, key)
    assert sus.unit.attrs["long_name"] and str(sus.unit.sel(feature="sodium").values) == "mEq/L"


def test_time_of_the_attack_store_has_units(analyzed_run):
    """The issue's example: attack.zarr's `time` had no attributes at all."""
    attack = xr.open_zarr(analyzed_run / "attack.zarr")
    assert attack.time.attrs == cf.TIME
    assert attack.y.attrs["flag_meanings"] == "survived died_in_hospital"


def test_the_cf_attribute_does_not_stop_a_partial_store_resuming(tmp_path):
    targets = pd.DataFrame({"dataset_index": [0, 1], "y": [0, 1], "pred": [0, 1]})
    attrs = {"seed": 7, "space": "tensor", "attack_config": {"max_iter": 10}}
    allocate(tmp_path / "partial.zarr", targets, 4, chunk=2, attrs=attrs)
    assert xr.open_zarr(tmp_path / "partial.zarr", consolidated=False).attrs["Conventions"] == cf.CONVENTIONS
    assert resumable(tmp_path / "partial.zarr", attrs)
    assert not resumable(tmp_path / "partial.zarr", {**attrs, "seed": 8})
