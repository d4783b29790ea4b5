"""The real MIMIC-IV MEDS ETL (`mimic-iv-meds` 0.2.0 from PyPI, tests/support/real_etl.py), run as a MIMIC-IV
user runs it on the demo rewritten as MIMIC-IV tables (tests/support/mimic_iv_tables.py), then `prepare` on
its output with the shipped `mimic-iv` map: the same cohort, labels and record as `prepare` from the CSV
tables (VALUENUM rounded to float32, as MEDS stores it), differences only where named below, and every
one of the 19 features read (an ETL release that renames a code fails here)."""

import dataclasses

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipeline.config import PrepareConfig
from pipeline.data.mimic import find_table
from pipeline.data.prepare import build_dataset
from pipeline.features import CHART, FEATURES, LAB
from tests.support.meds_tables import rounded_copy
from tests.support.mimic_iv_tables import write_mimic_iv
from tests.support.real_etl import run_mimic_iv_etl

pytestmark = [pytest.mark.tools]

RECORD = ("x", "mask", "value", "count", "p5", "median", "p95")
COHORT = ("hadm_id", "icustay_id", "subject_id", "intime", "y")


@pytest.fixture(scope="module")
def etl_root(demo_dir, tmp_path_factory):
    """The ETL's MEDS root, run once, every lab stored an hour after its draw (storetime = charttime + 60 min):
    read with lab_time = "draw", the labs are back at the CSV path's times (last test)."""
    where = tmp_path_factory.mktemp("real-etl")
    return run_mimic_iv_etl(write_mimic_iv(demo_dir, where / "tables", lab_delay_minutes=60), where / "meds")


@pytest.fixture(scope="module")
def csv_root(demo_dir, tmp_path_factory):
    """The demo's CSV tables with VALUENUM rounded to float32, as MEDS stores it."""
    return rounded_copy(demo_dir, tmp_path_factory.mktemp("real-etl-csv") / "csv")


@pytest.fixture(scope="module")
def pair(csv_root, etl_root, tmp_path_factory):
    """prepare from the rounded CSV tables and from the ETL's output, without the has_chartevents_data rule
    (MEDS has no such flag; last test)."""
    where = tmp_path_factory.mktemp("real-etl-prepare")
    cfg = PrepareConfig(require_chartevents_data=False)
    csv = build_dataset(csv_root, cfg, work_dir=where)
    meds = build_dataset(etl_root, dataclasses.replace(cfg, source="meds", feature_map="mimic-iv", lab_time="draw"),
                         work_dir=where)
    return csv, meds


def events(root, codes: str) -> pd.DataFrame:
    frames = [pq.read_table(p, columns=["subject_id", "time", "code", "numeric_value"]).to_pandas()
              for p in sorted((root / "data").rglob("*.parquet"))]
    frame = pd.concat(frames, ignore_index=True)
    return frame[frame.code.str.match(codes)]


def test_prepare_on_the_real_etl_output_equals_the_csv_path(pair):
    """Same samples, labels, cells and statistics, bit for bit; the label from the discharge code DIED."""
    csv, meds = pair
    assert csv.sizes["sample"] == meds.sizes["sample"] > 90
    for name in (*COHORT, *RECORD):
        assert csv[name].dtype == meds[name].dtype, name
        np.testing.assert_array_equal(csv[name].values, meds[name].values, err_msg=name)  # NaN equals NaN here
    assert meds.attrs["counts"] == csv.attrs["counts"]
    chosen = csv.attrs["counts"]["first_icu_stay"]
    assert meds.attrs["label_from"] == {"discharge_disposition": chosen}
    assert set(np.unique(meds.meds_split.values)) <= {0, 1, 2}  # the ETL's own subject splits
    for table in (LAB, CHART):
        assert meds.attrs["event_counts"][table]["per_feature"] == csv.attrs["event_counts"][table]["per_feature"]


def test_the_differences_of_the_etl_output_are_the_named_ones(pair, etl_root, demo_dir):
    """What the ETL writes differently from the CSV tables, none of which changes a sample:

    - birth: MIMIC-IV has no DOB; the ETL writes MEDS_BIRTH on Jan 1 of anchor_year − anchor_age (the DOB's
      year here), so every age is older by less than a year — and the adult rule keeps the same stays;
    - chart rows flagged ERROR = 1: MIMIC-IV has no such column, the rewrite leaves them out, so the ETL's
      chart feature events are the CSV path's minus those (which the CSV path drops as errors);
    - labs: each result at its storetime (an hour after charttime here) plus a value-less
      LAB//SPECIMEN_COLLECTED event at charttime, which lab_time = "draw" pairs it with; a result without a
      storetime is not written (none here);
    - an event identical to another in every MEDS column is written once: the demo's two results of one
      item drawn at one time give one specimen event (7 such pairs), and one chart row is doubled (item 76,
      no feature's). Identical feature events the CSV path drops too (`duplicates`, the same count);
    - `rows` in event_counts: the CSV path counts its table's rows, the MEDS source every MEDS event.
    """
    csv, meds = pair
    dob = pd.read_csv(find_table(demo_dir, "PATIENTS"), usecols=["subject_id", "dob"], parse_dates=["dob"])
    births = events(etl_root, "^MEDS_BIRTH$").set_index("subject_id").time
    jan1 = pd.to_datetime(dob.dob.dt.year.astype(str) + "-01-01")
    assert len(births) == len(dob)
    np.testing.assert_array_equal(births.loc[dob.subject_id].to_numpy(), jan1.to_numpy())
    earlier = dob.dob.to_numpy() - births.loc[dob.subject_id].to_numpy()
    assert (earlier >= np.timedelta64(0)).all() and (earlier < np.timedelta64(366, "D")).all()
    assert meds.attrs["counts"]["adult"] == csv.attrs["counts"]["adult"]

    chart_items = [i for f in FEATURES if f.table == CHART for i in f.all_itemids]
    chart = pd.read_csv(find_table(demo_dir, "CHARTEVENTS"), usecols=["itemid", "error"])
    flagged = int(((chart.error == 1) & chart.itemid.isin(chart_items)).sum())
    a, b = csv.attrs["event_counts"][CHART], meds.attrs["event_counts"][CHART]
    assert flagged > 0 and a["feature_items"] - b["feature_items"] == flagged
    assert b["not_error"] == b["feature_items"] == a["not_error"]
    for rule in ("with_valuenum", "in_range", "duplicates"):
        assert a[rule] == b[rule], rule
    a, b = csv.attrs["event_counts"][LAB], meds.attrs["event_counts"][LAB]
    assert {k: v for k, v in a.items() if k not in ("rows", "draw_time")} == \
        {k: v for k, v in b.items() if k not in ("rows", "draw_time")}  # draw_time: the last test

    labs = pd.read_csv(find_table(demo_dir, "LABEVENTS"), usecols=["subject_id", "hadm_id", "itemid", "charttime"])
    assert len(events(etl_root, "^LAB//RESULT//")) == len(labs)  # every result: no two alike in the demo
    drawn = len(labs.drop_duplicates())
    assert len(events(etl_root, "^LAB//SPECIMEN_COLLECTED//")) == drawn == len(labs) - 7


def test_every_feature_has_events_through_the_shipped_map(pair):
    """All 19 features are read from the ETL's codes: a renamed code (an ETL release) fails here by name."""
    _, meds = pair
    read = {**meds.attrs["event_counts"][LAB]["per_feature"], **meds.attrs["event_counts"][CHART]["per_feature"]}
    missing = [f.name for f in FEATURES if read.get(f.name, 0) == 0]
    assert not missing, f"no events of {missing} in the ETL's output through the map mimic-iv"
    assert meds.attrs["event_counts"][LAB]["unit_dropped"] == meds.attrs["event_counts"][CHART]["unit_dropped"] == {}


def test_the_default_cohort_differs_only_by_has_chartevents_data(demo_dir, csv_root, etl_root, tmp_path):
    """With the default rule, the admissions the demo flags has_chartevents_data = 1 without a chart row are
    out of the MEDS cohort (the MEDS source derives the flag from the stays' events), as in tests/test_meds.py;
    every other sample is the CSV path's (x aside: the left-out samples moved the cohort's percentiles)."""
    csv = build_dataset(csv_root, PrepareConfig(), work_dir=tmp_path)
    meds = build_dataset(etl_root, PrepareConfig(source="meds", lab_time="draw"), work_dir=tmp_path)
    admissions = pd.read_csv(find_table(demo_dir, "ADMISSIONS"), usecols=["hadm_id", "has_chartevents_data"])
    charted = set(pd.read_csv(find_table(demo_dir, "CHARTEVENTS"), usecols=["hadm_id"]).hadm_id.dropna().astype(int))
    flagged_without_rows = set(admissions.hadm_id[admissions.has_chartevents_data == 1]) - charted
    only_csv = set(csv.hadm_id.values) - set(meds.hadm_id.values)
    assert only_csv and only_csv == flagged_without_rows & set(csv.hadm_id.values)
    assert set(meds.hadm_id.values) <= set(csv.hadm_id.values)
    same = csv.isel(sample=np.flatnonzero(np.isin(csv.hadm_id.values, meds.hadm_id.values)))
    for name in ("mask", "value", "count", *COHORT):
        np.testing.assert_array_equal(same[name].values, meds[name].values, err_msg=name)


def test_labs_stored_an_hour_late_are_back_at_their_draw_with_lab_time_draw(pair, etl_root, tmp_path):
    """prepare.lab_time = "draw" pairs the ETL's results with its LAB//SPECIMEN_COLLECTED events (the map's
    lab_draw): the CSV path's record again, bit for bit, every result paired with a draw (the ETL's doubled
    draws, above, are of no feature's item). At result time (the default) thousands of cells move."""
    csv, _ = pair
    cfg = PrepareConfig(source="meds", require_chartevents_data=False)
    at_draw = pair[1]
    found = at_draw.attrs["event_counts"][LAB]["draw_time"]
    assert found["no_draw"] == found["unused_draws"] == 0 and found["ambiguous"] > 0, found
    assert found["paired"] + found["ambiguous"] == at_draw.attrs["event_counts"][LAB]["with_key"]
    for name in (*COHORT, *RECORD):
        np.testing.assert_array_equal(at_draw[name].values, csv[name].values, err_msg=name)
    at_result = build_dataset(etl_root, cfg, work_dir=tmp_path)
    assert int((at_result["count"].values != csv["count"].values).sum()) > 1000
