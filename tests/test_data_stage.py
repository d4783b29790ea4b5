"""synth → prepare through the CLI: determinism for a seed, and the synthetic data passing the rules."""

import numpy as np
import pytest
import xarray as xr

from pipeline.cli import main


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three synthetic runs: seed 1 twice, seed 2 once."""
    out = {}
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        run = tmp_path_factory.mktemp(f"run-{name}")
        assert main(["synth", "--run-dir", str(run), "--seed", str(seed), "--admissions", "400"]) == 0
        assert main(["prepare", "--run-dir", str(run), "--seed", str(seed)]) == 0
        out[name] = run
    return out


def test_same_seed_same_tables_and_same_x(runs):
    a, b, c = (xr.open_zarr(runs[k] / "dataset.zarr", consolidated=False) for k in "abc")
    for table in ("PATIENTS", "ADMISSIONS", "ICUSTAYS", "LABEVENTS", "CHARTEVENTS", "D_ITEMS", "D_LABITEMS"):
        name = f"{table}.csv.gz"
        assert (runs["a"] / "raw" / name).read_bytes() == (runs["b"] / "raw" / name).read_bytes(), name
    assert a.attrs["input_sha256"] == b.attrs["input_sha256"] != c.attrs["input_sha256"]
    np.testing.assert_array_equal(a.x.values, b.x.values)
    np.testing.assert_array_equal(a["mask"].values, b["mask"].values)
    assert a.sizes["sample"] != c.sizes["sample"] or not np.array_equal(a.x.values, c.x.values)


def test_every_rule_removes_something_from_synthetic_data(runs):
    ds = xr.open_zarr(runs["a"] / "dataset.zarr", consolidated=False)
    counts = list(ds.attrs["counts"].items())
    for (prev_rule, before), (rule, after) in zip(counts[1:-2], counts[2:-1], strict=True):
        assert after < before, f"rule {rule} removed nothing after {prev_rule} ({before} → {after})"
    for table, c in ds.attrs["event_counts"].items():
        steps = ["rows", "feature_items", "with_key", "with_valuenum", "in_range"]
        if table == "CHARTEVENTS":
            steps.insert(3, "not_error")
        values = [c[s] for s in steps]
        assert all(after < before for before, after in zip(values, values[1:], strict=False)), (table, c)
    positive_rate = float(ds.y.mean())
    assert 0.04 < positive_rate < 0.3
    x = ds.x.values
    assert x.dtype == np.float32 and not np.isnan(x).any() and x.min() >= 0 and x.max() <= 1
