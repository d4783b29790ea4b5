"""The entry-error search: the error model on hand-picked values, the search on models whose answer is
known, the stage and its store, and — on the real demo — errors written into the raw tables and prepared
again flip the prediction."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from pipeline.attack.core import Margins, margin
from pipeline.attack.errors_stage import errors_shard
from pipeline.attack.fewest_errors import fewest_errors
from pipeline.cli import main
from pipeline.config import ERROR_KINDS
from pipeline.data.entry_errors import KIND_CODE, candidates, erroneous_values
from pipeline.data.record import derive, feature_stats
from pipeline.features import BY_NAME, FEATURES, NAMES
from pipeline.infra.rundir import RunDir
from pipeline.model import load_model
from tests.support.linear import OneCell
from tests.support.runs import copy_trained, prepare_again, trained_on_demo

pytestmark = pytest.mark.thirdparty  # the floors job runs these (tests/test_floors.py)

ALL = list(ERROR_KINDS)  # every registered kind, in the order of their codes


def errors_of(name: str, v: float, n: int = 1) -> dict[tuple[str, float], tuple[bool, float]]:
    """{(kind, typed value rounded): (dropped, the cell's mean after)} for one cell of `name`."""
    value = np.full((48, len(FEATURES)), np.nan)
    count = np.zeros((48, len(FEATURES)), int)
    f = NAMES.index(name)
    value[10, f], count[10, f] = v, n
    c = candidates(value, count, ALL)
    kinds = {code: kind for kind, code in KIND_CODE.items()}
    return {(kinds[int(k)], round(float(e), 4)): (bool(d), float(a))
            for k, e, d, a in zip(c.kind, c.erroneous, c.dropped, c.after, strict=True)}


def test_the_error_model_on_hand_picked_values():
    potassium = errors_of("potassium", 4.1)
    assert potassium[("decimal", 0.41)] == (False, pytest.approx(0.41))
    assert potassium[("decimal", 41.0)][0] is True  # above 30 mEq/L: prepare drops it, the cell is imputed
    assert np.isnan(potassium[("decimal", 41.0)][1])
    assert potassium[("transpose", 1.4)] == (False, pytest.approx(1.4))
    sodium = errors_of("sodium", 138)
    assert {e for (k, e) in sodium if k == "transpose"} == {183.0, 318.0}
    assert sodium[("transpose", 183.0)] == (False, 183.0) and sodium[("transpose", 318.0)][0] is True  # > 200
    ph = errors_of("ph", 7.35)
    assert {e for (k, e) in ph if k == "transpose"} == {3.75, 7.53}
    assert ph[("transpose", 7.53)][0] is False and ph[("transpose", 3.75)][0] is True  # pH ≤ 6 is dropped
    temperature = errors_of("tempc", 37.0)
    assert temperature[("unit", 98.6)][0] is True  # 98.6 typed into a °C field: out of range, dropped
    glucose = errors_of("glucose", 180)
    assert glucose[("unit", round(180 / 18.016, 4))] == (False, pytest.approx(180 / 18.016))
    assert any(k == "delete" for k, _ in glucose)  # its only event lost: imputed again


def test_an_error_kind_is_a_registered_function_and_config_offers_its_name(monkeypatch):
    """A new kind is one function with @kind: the search tries it, under the next store code; config's
    choices are the registry's names in order."""
    from pipeline import config, error_kinds
    from pipeline.data import entry_errors

    assert config.ERROR_KINDS == tuple(error_kinds.KINDS) == tuple(KIND_CODE)
    monkeypatch.setattr(error_kinds, "KINDS", dict(error_kinds.KINDS))
    monkeypatch.setattr(error_kinds, "SUMMARY", dict(error_kinds.SUMMARY))
    monkeypatch.setattr(entry_errors, "KINDS", error_kinds.KINDS)
    error_kinds.kind("sign", "the sign flipped")(lambda feature, v: [-v])
    assert ("sign", -7.35) in erroneous_values(BY_NAME["ph"], 7.35, [*config.ERROR_KINDS, "sign"])
    assert error_kinds.SUMMARY["sign"] == "the sign flipped" and set(error_kinds.SUMMARY) == set(error_kinds.KINDS)
    with pytest.raises(ValueError, match="'decimal' registered twice"):
        error_kinds.kind("decimal", "again")(lambda feature, v: [])


def test_an_error_on_one_of_several_events_moves_the_mean_by_its_share():
    two = errors_of("potassium", 4.0, n=2)
    assert two[("decimal", 0.4)] == (False, pytest.approx(4.0 + (0.4 - 4.0) / 2))
    assert ("decimal", 40.0) not in two  # dropped among two events: the other keeps the mean, nothing changes
    assert not any(k == "delete" for k, _ in two)


def test_erroneous_values_leave_out_no_change_and_keep_the_first_kind_of_a_repeat():
    albumin = erroneous_values(BY_NAME["albumin"], 2.0, ALL)
    assert ("decimal", 20.0) in albumin and all(e != 2.0 for _, e in albumin)
    assert erroneous_values(BY_NAME["sodium"], 111.0, ["transpose"]) == []  # equal digits: no transposition


def record(cells: dict[tuple[int, str], float]) -> tuple[np.ndarray, np.ndarray, dict]:
    value = np.full((48, len(FEATURES)), np.nan)
    count = np.zeros((48, len(FEATURES)), int)
    for (hour, name), v in cells.items():
        value[hour, NAMES.index(name)], count[hour, NAMES.index(name)] = v, 1
    stats = {"p5": np.zeros(len(FEATURES)), "median": np.full(len(FEATURES), 5.0), "p95": np.full(len(FEATURES), 100.0)}
    return value, count, stats


@pytest.mark.parametrize("beam", [1, 4])
def test_the_search_finds_the_one_decimal_slip_a_linear_model_needs(beam):
    # survived (y = 0) unless the BUN of hour 40 reads above 60: the ×10 slip of 12 → 120 flips it
    value, count, stats = record({(40, "bun"): 12.0, (20, "sodium"): 140.0, (30, "potassium"): 4.0})
    model = OneCell(40, NAMES.index("bun"), 10.0, 0.6)
    found = fewest_errors(Margins(model, 64), value, count, 0, stats, ALL, 3, beam)
    assert found.flipped and found.margin0 < 0
    (error,) = found.errors
    assert (error["hour"], NAMES[error["feature"]], error["kind"], error["erroneous"]) == \
        (40, "bun", KIND_CODE["decimal"], 120.0)
    assert error["margin"] == pytest.approx(10.0 * ((100.0 - 0.0) / 100.0 - 0.6))  # 120 winsorized to p95 = 100


def test_a_target_no_three_errors_can_flip_is_reported_as_not_flipped():
    value, count, stats = record({(40, "bun"): 12.0, (20, "sodium"): 140.0})
    model = OneCell(40, NAMES.index("bun"), 10.0, 5.0)  # x ≤ 1 < 5: nothing flips it
    found = fewest_errors(Margins(model, 64), value, count, 0, stats, ALL, 3, 2)
    assert not found.flipped and found.margin0 < 0 and found.passes > 1
    assert all(e["margin"] <= 0 for e in found.errors)


@pytest.mark.parametrize("override,message", [
    ('errors.kinds=["decimal", "typo"]', r"\[errors\] kinds: 'typo' is not one of decimal, transpose, unit, delete"),
    ("errors.max_errors=0", r"errors.*max_errors.*0"),
])
def test_bad_errors_config_is_one_line_and_exit_2(tmp_path, capsys, override, message):
    import re

    assert main(["errors", "--run-dir", str(tmp_path / "run"), override]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(message, err[0]), err


ERRORS = ["--executor", "debug", "--seed", "5", "cv.folds=3", "errors.targets=all", "errors.beam=1"]


@pytest.fixture(scope="module")
def demo_errors(demo_run, tmp_path_factory):
    """The demo, a tiny model trained on it, and the entry-error search of every correctly classified sample."""
    run = trained_on_demo(demo_run, tmp_path_factory.mktemp("demo-errors"))
    assert main(["errors", "--run-dir", str(run), *ERRORS]) == 0
    return run


def test_the_store_names_every_error_and_every_flip_is_verified(demo_errors):
    from pipeline.susceptibility import entry_report

    store = xr.open_zarr(demo_errors / "errors.zarr", consolidated=False).load()
    data = xr.open_zarr(demo_errors / "dataset.zarr", consolidated=False).load()
    assert store.attrs["Conventions"].startswith("CF-") and store.kind.attrs["flag_meanings"] == " ".join(ALL)
    assert store.flipped.any(), "no target flipped on the demo"
    made = store.n_errors.values[:, None] > np.arange(store.sizes["error"])
    assert ((store.feature.values >= 0) == made).all() and ((store.hour.values >= 0) == made).all()
    assert (store.margin.values[store.flipped.values, store.n_errors.values[store.flipped.values] - 1] > 0).all()
    verified = entry_report.verify(store, data, load_model(demo_errors))
    assert (verified == store.flipped.values).all()


def recoded(var: xr.DataArray, order: list[int]) -> xr.DataArray:
    """`var` as a store written with its choices listed in another order: code c becomes order.index(c)."""
    meanings = var.attrs["flag_meanings"].split()
    new = np.array([order.index(c) for c in range(len(meanings))])
    values = np.where(var.values >= 0, new[np.clip(var.values, 0, None)], var.values).astype(var.dtype)
    attrs = {**var.attrs, "flag_values": list(range(len(meanings))),
             "flag_meanings": " ".join(meanings[c] for c in order)}
    return var.copy(data=values).assign_attrs(attrs)


def test_an_errors_store_is_read_with_its_own_codes(demo_errors):
    """A store written when ERROR_KINDS or the features were listed in another order is read right: the
    table names the same kinds and features, and every flip still verifies."""
    from pipeline.susceptibility import entry_report

    store = xr.open_zarr(demo_errors / "errors.zarr", consolidated=False).load()
    data = xr.open_zarr(demo_errors / "dataset.zarr", consolidated=False).load()
    other = store.copy()
    other["kind"] = recoded(store.kind, list(range(len(ALL)))[::-1])
    other["feature"] = recoded(store.feature, list(range(len(NAMES)))[::-1])
    assert not np.array_equal(other.kind.values, store.kind.values)
    pd.testing.assert_frame_equal(entry_report.errors_table(other), entry_report.errors_table(store))
    assert (entry_report.verify(other, data, load_model(demo_errors)) == store.flipped.values).all()


def test_analyze_reports_the_k_error_table_and_the_simplest_flips(demo_errors, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(demo_errors, run)
    assert main(["attack", "--run-dir", str(run), "--executor", "debug", "--seed", "5", "cv.folds=3",
                 "attack.max_iter=20", "attack.batch_size=64", "attack.chunk_samples=32"]) == 0
    assert main(["analyze", "--run-dir", str(run), "--executor", "debug", "--seed", "5", "cv.folds=3"]) == 0
    k = pd.read_csv(run / "tables" / "errors_k.csv")
    assert (k.verified == k.flipped).all() and (k.share_le_1 <= k.share_le_2).all()
    report = (run / "report.md").read_text()
    assert "## Plausible data-entry errors" in report and (" entered as " in report or " lost" in report)
    assert (run / "figures" / "errors_heatmap.png").stat().st_size > 0


def test_a_shard_resumes_from_its_saved_targets(demo_errors, tmp_path):
    run = copy_trained(demo_errors, tmp_path)
    store = xr.open_zarr(demo_errors / "errors.zarr", consolidated=False).load()
    index, y = store.dataset_index.values[:20].tolist(), store.y.values[:20].astype(int).tolist()
    params = {"kinds": ALL, "max_errors": 2, "beam": 1, "batch_size": 512}
    whole = errors_shard(str(run), 0, index, y, params)
    saved = json.loads(RunDir(run).shard_progress("errors", 0).read_text())
    saved["state"]["rows"] = saved["state"]["rows"][:7]  # as if requeued after 7 targets
    RunDir(run).shard_progress("errors", 0).write_text(json.dumps(saved))
    assert errors_shard(str(run), 0, index, y, params) == whole


def test_errors_written_into_the_raw_tables_flip_the_re_prepared_sample(demo_dir, demo_errors, tmp_path):
    """End to end: each erroneous value typed into LABEVENTS/CHARTEVENTS (cells of one event, where the error
    model is exact), `prepare` with the model's statistics, and the model's prediction flips."""
    store = xr.open_zarr(demo_errors / "errors.zarr", consolidated=False).load()
    data = xr.open_zarr(demo_errors / "dataset.zarr", consolidated=False).load()
    stays = pd.read_csv(demo_dir / "ICUSTAYS.csv.gz", parse_dates=["intime"]).set_index("icustay_id")
    chosen, cells = [], []
    for i in np.flatnonzero(store.flipped.values):
        sample = int(store.dataset_index.values[i])
        made = range(int(store.n_errors.values[i]))
        where = [(int(store.hour.values[i, j]), int(store.feature.values[i, j])) for j in made]
        if any(data["count"].values[sample, h, f] != 1 for h, f in where) or \
                any(store.kind.values[i, j] == KIND_CODE["delete"] for j in made):
            continue  # several events in the hour (the model takes their mean), or a deletion (no value to type)
        chosen.append(i)
        icustay = int(data.icustay_id.values[sample])
        for j, (h, f) in zip(made, where, strict=True):
            cells.append({"table": FEATURES[f].table, "hadm_id": int(data.hadm_id.values[sample]),
                          "icustay_id": icustay, "intime": stays.loc[icustay, "intime"], "feature": f, "hour": h,
                          "after": float(store.erroneous.values[i, j])})
        if len(chosen) == 3:
            break
    assert chosen, "no flip on the demo made of single-event cells"
    prepared = prepare_again(demo_dir, pd.DataFrame(cells), tmp_path, demo_errors / "dataset.zarr")
    assert (prepared.hadm_id.values == data.hadm_id.values).all(), "the cohort is the same"
    samples = store.dataset_index.values[chosen]
    with torch.no_grad():
        after = load_model(demo_errors)(torch.from_numpy(prepared.x.values[samples]))
    assert (margin(after, torch.from_numpy(store.y.values[chosen].astype(np.int64))) > 0).all()


def test_a_value_pushed_out_of_range_is_dropped_and_imputed_as_prepare_does(demo_dir, demo_run, tmp_path):
    """A potassium slip 4.x → 4x mEq/L (above 30) typed into LABEVENTS: prepare drops the event, and the
    re-prepared input equals the record with that cell unrecorded, derived again — bit for bit."""
    data = xr.open_zarr(demo_run / "dataset.zarr", consolidated=False).load()
    f = NAMES.index("potassium")
    sample, hour = next((s, h) for s, h in zip(*np.nonzero((data["count"].values[:, :, f] == 1)
                                                           & (data["value"].values[:, :, f] > 3.0)), strict=True)
                        if data["count"].values[s, :, f].sum() > 1)  # another potassium of the stay remains
    v = float(data["value"].values[sample, hour, f])
    c = candidates(data["value"].values[sample], data["count"].values[sample], ["decimal"])
    slip = np.flatnonzero((c.hour == hour) & (c.feature == f) & (c.erroneous > 30))
    assert len(slip) == 1 and c.dropped[slip[0]] and np.isnan(c.after[slip[0]])
    stays = pd.read_csv(demo_dir / "ICUSTAYS.csv.gz", parse_dates=["intime"]).set_index("icustay_id")
    icustay = int(data.icustay_id.values[sample])
    prepared = prepare_again(demo_dir, pd.DataFrame([{
        "table": FEATURES[f].table, "hadm_id": int(data.hadm_id.values[sample]), "icustay_id": icustay,
        "intime": stays.loc[icustay, "intime"], "feature": f, "hour": int(hour), "after": 10 * v}]), tmp_path,
        demo_run / "dataset.zarr")
    erroneous = data["value"].values[sample].copy()
    erroneous[hour, f] = np.nan
    expected = derive(erroneous[None], ~np.isnan(erroneous)[None], feature_stats(data))[0]
    assert np.isnan(prepared["value"].values[sample, hour, f])
    assert np.array_equal(prepared.x.values[sample], expected)
