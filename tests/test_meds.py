"""prepare's MEDS source (pipeline/data/meds.py): the real demo through MEDS equals the CSV path, bad MEDS
inputs are one clear line, and a whole run on synthetic MEDS data uses the MEDS split and writes
predictions that meds-evaluation scores as we do."""

import dataclasses
import json
import shutil

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import xarray as xr

from pipeline.cli import main
from pipeline.config import PrepareConfig
from pipeline.data.meds_export import write_meds
from pipeline.data.prepare import build_dataset
from pipeline.features import CHART, FEATURES, LAB
from tests.support.chains import TINY_CHAIN, assert_complete
from tests.support.meds_tables import as_eicu, assert_one_line_nothing_written, prepare_meds, rounded_copy

pytestmark = pytest.mark.thirdparty  # the floors job runs these (tests/test_floors.py)

RECORD = ("x", "mask", "value", "count", "y", "p5", "median", "p95")
IDS = ("hadm_id", "icustay_id", "subject_id", "intime")


@pytest.fixture(scope="module")
def demo_pair(demo_dir, tmp_path_factory):
    """The demo as CSV tables with VALUENUM rounded to float32 (as MEDS stores it) and as MEDS."""
    where = tmp_path_factory.mktemp("meds-demo")
    return rounded_copy(demo_dir, where / "csv"), write_meds(demo_dir, where / "meds", shard_subjects=40)


def both(demo_pair, tmp_path, **rules):
    csv, meds = demo_pair
    cfg = PrepareConfig(**rules)
    return (build_dataset(csv, cfg, work_dir=tmp_path),
            build_dataset(meds, dataclasses.replace(cfg, source="meds"), work_dir=tmp_path))


def assert_same_samples(a: xr.Dataset, b: xr.Dataset) -> None:
    for name in (*RECORD, *IDS):
        assert a[name].dtype == b[name].dtype, name
        np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)  # NaN equals NaN here


def test_the_demo_through_meds_equals_the_csv_tables_bit_for_bit(demo_pair, tmp_path):
    """MIMIC-III has_chartevents_data has no MEDS counterpart (next test); without that rule every sample,
    label, cell and statistic is the same, bit for bit."""
    csv, meds = both(demo_pair, tmp_path, require_chartevents_data=False)
    assert csv.sizes["sample"] == meds.sizes["sample"] > 90
    assert_same_samples(csv, meds)
    assert meds.attrs["source"] == "meds" and csv.attrs["source"] == "mimic3"
    label_from = {"csv": csv.attrs["label_from"], "meds": meds.attrs["label_from"]}
    assert meds.attrs["counts"] == csv.attrs["counts"]
    # every label from what the hospital recorded: the flag of ADMISSIONS, the discharge code in MEDS
    chosen = csv.attrs["counts"]["first_icu_stay"]  # counted over the stays chosen, before the span rule
    assert label_from == {"csv": {"hospital_expire_flag": chosen}, "meds": {"discharge_disposition": chosen}}
    for table in ("LABEVENTS", "CHARTEVENTS"):  # the same events kept, feature by feature
        assert meds.attrs["event_counts"][table]["per_feature"] == csv.attrs["event_counts"][table]["per_feature"]
    assert set(meds.meds_split.values) <= {0, 1, 2} and "meds_split" not in csv


def test_has_chartevents_data_is_the_one_named_difference(demo_pair, demo_dir, tmp_path):
    """The default cohort keeps admissions flagged has_chartevents_data = 1. MEDS has no such flag: the MEDS
    source says an admission has chart data when one of its ICU stays has an event of its own. The demo's
    ADMISSIONS flags some admissions that have no CHARTEVENTS row: exactly those are not in the MEDS cohort."""
    csv, meds = both(demo_pair, tmp_path)
    admissions = pd.read_csv(demo_dir / "ADMISSIONS.csv.gz")
    charted = set(pd.read_csv(demo_dir / "CHARTEVENTS.csv.gz", usecols=["hadm_id"]).hadm_id.dropna().astype(int))
    flagged_without_rows = set(admissions.hadm_id[admissions.has_chartevents_data == 1]) - charted
    only_csv = set(csv.hadm_id.values) - set(meds.hadm_id.values)
    assert only_csv and only_csv == flagged_without_rows & set(csv.hadm_id.values)
    assert set(meds.hadm_id.values) <= set(csv.hadm_id.values)
    same = csv.isel(sample=np.flatnonzero(np.isin(csv.hadm_id.values, meds.hadm_id.values)))
    for name in ("mask", "value", "count", "y", *IDS):  # the record of every other sample is the same
        np.testing.assert_array_equal(same[name].values, meds[name].values, err_msg=name)
    # x is scaled by the cohort's percentiles, which the left-out samples' events moved a little


# ---- bad MEDS inputs: one line, exit 1 or 2, nothing written -------------------------------------

def rewrite_shard(root, change):
    path = sorted((root / "data").rglob("*.parquet"))[0]
    pq.write_table(change(pq.read_table(path)), path)


BAD = {
    "missing column": (lambda t: t.drop_columns(["code"]), 1, "not MEDS data: Missing required columns: code"),
    # times written as text that is no time (text that is one, MEDS's schema casts)
    "wrong dtype": (lambda t: t.set_column(t.schema.get_field_index("time"), "time",
                                           pa.array(["at noon"] * t.num_rows)), 1,
                    "Columns with incorrect types: time (want timestamp[us], got string)"),
    "empty shard": (lambda t: t.slice(0, 0), 1, "an empty shard"),
    "no ids": (lambda t: t.drop_columns(["hadm_id", "icustay_id"]), 1, "missing column 'hadm_id'"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_meds_shard_is_one_line_naming_the_file(case, demo_pair, tmp_path, capsys):
    change, code, needle = BAD[case]
    root = shutil.copytree(demo_pair[1], tmp_path / "meds")
    rewrite_shard(root, change)
    run = tmp_path / "run"
    assert prepare_meds(root, run) == code
    err = assert_one_line_nothing_written(capsys, run, needle)
    assert str(sorted((root / "data").rglob("*.parquet"))[0]) in err


def test_an_unknown_feature_map_is_a_config_error(demo_pair, tmp_path, capsys):
    run = tmp_path / "run"
    assert prepare_meds(demo_pair[1], run, "prepare.feature_map=hirid-v9") == 2
    err = assert_one_line_nothing_written(capsys, run, "[prepare] feature_map = 'hirid-v9': no such map")
    assert "mimic-iv" in err  # the shipped maps are named


def test_a_bad_feature_map_names_the_file_and_key(demo_pair, tmp_path, capsys):
    bad = tmp_path / "my-map.toml"
    bad.write_text('description = "no ids"\n[cohort]\nbirth = "^MEDS_BIRTH$"\n')
    run = tmp_path / "run"
    assert prepare_meds(demo_pair[1], run, f"prepare.feature_map={bad}") == 2
    assert_one_line_nothing_written(capsys, run, f"{bad}: missing key")


def test_a_subject_splits_file_of_the_wrong_form_is_one_line(demo_pair, tmp_path, capsys):
    root = shutil.copytree(demo_pair[1], tmp_path / "meds")
    pq.write_table(pa.table({"subject": [1], "split": ["train"]}), root / "metadata" / "subject_splits.parquet")
    run = tmp_path / "run"
    assert prepare_meds(root, run) == 1
    assert_one_line_nothing_written(capsys, run, "subject_splits.parquet: not MEDS subject splits")


def test_a_meds_testing_helpers_dataset_is_one_clear_line(tmp_path, capsys):
    """The MEDS project's own sample dataset: valid MEDS, but no hospital admission or ICU stay ids (it has
    no ICU stays at all), so the MIMIC-IV map cannot tie its events to stays — said in one line."""
    from meds_testing_helpers.dataset import MEDSDataset
    from meds_testing_helpers.static_sample_data import SIMPLE_STATIC_SHARDED_BY_SPLIT

    root = tmp_path / "sample"
    MEDSDataset.from_yaml(SIMPLE_STATIC_SHARDED_BY_SPLIT).write(root)
    run = tmp_path / "run"
    assert prepare_meds(root, run) == 1
    assert_one_line_nothing_written(capsys, run, "missing column 'hadm_id'")


def test_a_folder_without_data_is_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    run = tmp_path / "run"
    assert prepare_meds(tmp_path / "empty", run) == 1
    assert_one_line_nothing_written(capsys, run, "not a MEDS root (no data/ folder)")


# ---- the whole chain on synthetic MEDS data -------------------------------------------------------

@pytest.mark.heavy
def test_a_whole_run_on_synthetic_meds_data_uses_its_split_and_meds_evaluation_agrees(tmp_path):
    import polars as pl
    from meds_evaluation.evaluate import evaluate_binary_classification

    run = tmp_path / "run"
    assert main(["run", "--run-dir", str(run), "--seed", "2", "synth.admissions=300", "synth.meds=true",
                 "prepare.source=meds", *TINY_CHAIN]) == 0
    assert_complete(run)
    ds = xr.open_zarr(run / "dataset.zarr")
    assert ds.attrs["source"] == "meds" and ds.attrs["mimic_dir"] == "raw/meds"
    split = json.loads((run / "split.json").read_text())
    held_out = np.flatnonzero(ds.meds_split.values == 2)
    assert split["test_from"] == "meds" and split["test"] == held_out.tolist() and len(held_out) > 10
    assert "the MEDS dataset's own split" in (run / "report.md").read_text()

    predictions = pq.read_table(run / "model" / "test_predictions.parquet")
    ours = json.loads((run / "model" / "test_metrics.json").read_text())
    theirs = evaluate_binary_classification(pl.from_arrow(predictions), samples_per_subject=1)
    assert predictions.num_rows == len(held_out)
    assert theirs["samples_equally_weighted"]["roc_auc_score"] == pytest.approx(ours["auroc"], abs=1e-6)


# ---- the shipped eICU map on the demo rewritten in the eICU ETL's shape --------------------------

def test_the_demo_in_eicu_shape_through_the_eicu_map_gives_the_csv_samples(demo_pair, tmp_path):
    """eICU's subject is a hospital stay and its lab and vital events name no ICU stay (eicu.toml): the
    demo rewritten so (tests/meds_tables.as_eicu) and read with the shipped `eicu` map gives the CSV path's
    samples, labels and lab record bit for bit. Two differences of the rewrite, named: eICU stores °C, so
    the °F temperatures are converted before float32 (tempc within float32 rounding); and two MIMIC items
    of one vital (CareVue's 615 and 618) become one eICU code, so a value both recorded at one time is one
    event there (a few counts lower, the cell observed alike)."""
    csv_root, meds_root = demo_pair
    cfg = PrepareConfig(require_chartevents_data=False)
    csv = build_dataset(csv_root, cfg, work_dir=tmp_path)
    eicu = build_dataset(as_eicu(meds_root, tmp_path / "eicu"),
                         dataclasses.replace(cfg, source="meds", feature_map="eicu"), work_dir=tmp_path)
    assert eicu.sizes["sample"] == csv.sizes["sample"] > 80
    for name in ("hadm_id", "intime", "y"):
        np.testing.assert_array_equal(csv[name].values, eicu[name].values, err_msg=name)
    np.testing.assert_array_equal(eicu.hadm_id.values, eicu.subject_id.values)  # the subject: a hospital stay
    labs = [f.name for f in FEATURES if f.table == LAB]
    for name in ("mask", "value", "count"):
        np.testing.assert_array_equal(csv[name].sel(feature=labs).values, eicu[name].sel(feature=labs).values,
                                      err_msg=name)
    vitals = [f.name for f in FEATURES if f.table == CHART]
    a, b = (d.sel(feature=vitals) for d in (csv, eicu))
    np.testing.assert_array_equal(a["mask"].values, b["mask"].values)
    lost = a["count"].values - b["count"].values
    assert (lost >= 0).all() and 0 < (lost > 0).mean() < 0.01
    alike = lost == 0
    exact = alike & (np.array(vitals) != "tempc")  # every vital but temperature: bit for bit where alike
    np.testing.assert_array_equal(a.value.values[exact], b.value.values[exact])
    np.testing.assert_allclose(a.value.values[alike], b.value.values[alike], rtol=1e-6)


def test_an_unknown_unit_spelling_is_counted_and_said_and_magnesium_in_meq_is_converted(demo_pair, tmp_path,
                                                                                         caplog):
    """eICU-shaped data where the BUN results of even subjects are spelled 'mg/dl' (a spelling no rule reads) and every
    magnesium result is in mEq/L: the BUN events are dropped, counted per code and warned of, never silently;
    magnesium is converted (1 mEq/L = 1.2153 mg/dL) and gives the mg/dL record."""
    root = as_eicu(demo_pair[1], tmp_path / "eicu")
    bun, magnesium = "LAB//RESULT//BUN//mg/dL", "LAB//RESULT//magnesium//mg/dL"
    n_bun = 0
    for path in sorted((root / "data").rglob("*.parquet")):
        frame = pq.read_table(path).to_pandas()
        odd = (frame.code == bun) & (frame.subject_id % 2 == 0)
        n_bun += int(odd.sum())
        frame.loc[odd, "code"] = "LAB//RESULT//BUN//mg/dl"
        mg = frame.code == magnesium
        frame.loc[mg, "numeric_value"] = (frame.numeric_value[mg].astype(np.float64) / 1.21525).astype(np.float32)
        frame.loc[mg, "code"] = "LAB//RESULT//magnesium//mEq/L"
        pq.write_table(pa.Table.from_pandas(frame, schema=pq.read_schema(path), preserve_index=False), path)
    cfg = PrepareConfig(require_chartevents_data=False, source="meds", feature_map="eicu")
    with caplog.at_level("WARNING"):
        changed = build_dataset(root, cfg, work_dir=tmp_path)
    assert n_bun > 0
    assert changed.attrs["event_counts"]["LABEVENTS"]["unit_dropped"] == {"bun": {"LAB//RESULT//BUN//mg/dl": n_bun}}
    assert f"{n_bun} bun events dropped: unit spelling(s) the map eicu does not read" in caplog.text
    even = changed.subject_id.values % 2 == 0
    assert int(changed["count"].sel(feature="bun").values[even].sum()) == 0
    plain = build_dataset(as_eicu(demo_pair[1], tmp_path / "plain"), cfg, work_dir=tmp_path)
    assert plain.attrs["event_counts"]["LABEVENTS"]["unit_dropped"] == {}
    assert int(plain["count"].sel(feature="bun").values[even].sum()) > 0
    same = plain.hadm_id.values == changed.hadm_id.values
    assert same.all()  # BUN dropped for some stays: the cohort is the same
    np.testing.assert_array_equal(changed["count"].sel(feature="magnesium").values,
                                  plain["count"].sel(feature="magnesium").values)
    np.testing.assert_allclose(changed.value.sel(feature="magnesium").values,
                               plain.value.sel(feature="magnesium").values, rtol=1e-6)
