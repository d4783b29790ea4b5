"""ACES run as a user runs it (tests/support/aces.py) with the shipped task config on the demo's MEDS export:
the label file is MEDS's, one row a first ICU stay predicted at intime + 48 h; its samples are the project's
cohort rules (pipeline/data/cohort.py) less the admissions that end within the 48 h, with the same labels;
prepare from it (`prepare.labels`) gives the event rules' record and labels on the admissions both hold; a
failing ACES run raises with the tail of its log and leaves no label file."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.config import PrepareConfig
from pipeline.data import mimic
from pipeline.data.cohort import build_cohort
from pipeline.data.meds_export import write_meds
from pipeline.data.prepare import build_dataset, write_store
from tests.support.aces import TASK, aces_labels

pytestmark = [pytest.mark.tools]

WINDOW = pd.Timedelta(hours=48)
# what es-aces 0.7.3 writes: MEDS's LabelSchema, the unused value columns all null
ACES_LABELS = pa.schema([("subject_id", pa.int64()), ("prediction_time", pa.timestamp("us")),
                         ("boolean_value", pa.bool_()), ("integer_value", pa.int64()),
                         ("float_value", pa.float32()), ("categorical_value", pa.string())])


@pytest.fixture(scope="module")
def small(demo_dir):
    return {name: mimic.read_table(mimic.find_table(demo_dir, name), name)
            for name in ("PATIENTS", "ADMISSIONS", "ICUSTAYS")}


@pytest.fixture(scope="module")
def demo_meds(demo_dir, tmp_path_factory):
    return write_meds(demo_dir, tmp_path_factory.mktemp("aces-meds") / "meds", shard_subjects=40)


@pytest.fixture(scope="module")
def demo_labels(demo_meds, tmp_path_factory):
    """ACES's label file for the demo written as MEDS in three shards (ACES reads the data/ folder whole)."""
    return aces_labels(demo_meds, tmp_path_factory.mktemp("aces-out"))


def labelled_stays(path, icustays: pd.DataFrame) -> pd.DataFrame:
    """The label rows with the ICU stay whose intime is prediction_time − 48 h."""
    labels = pd.read_parquet(path)
    labels["intime"] = labels.prediction_time - WINDOW
    return labels.merge(icustays[["subject_id", "hadm_id", "icustay_id", "intime"]], how="left",
                        on=["subject_id", "intime"])


def test_the_label_file_is_meds_one_row_a_stay_predicted_48h_after_intime(demo_labels, small):
    assert demo_labels.name == f"{TASK.stem}.parquet"
    assert sorted(p.name for p in demo_labels.parent.iterdir()) == ["aces-logs", demo_labels.name]
    table = pq.read_table(demo_labels)
    assert table.schema.remove_metadata().equals(ACES_LABELS)
    for name in ("subject_id", "prediction_time", "boolean_value"):
        assert table[name].null_count == 0, name
    for name in ("integer_value", "float_value", "categorical_value"):
        assert table[name].null_count == table.num_rows, name
    stays = labelled_stays(demo_labels, small["ICUSTAYS"])
    assert stays.icustay_id.notna().all()  # prediction_time is intime + 48 h exactly
    assert stays.hadm_id.is_unique and len(stays) > 90  # one stay per admission
    assert stays.boolean_value.any() and not stays.boolean_value.all()


def test_the_samples_are_the_cohort_rules_less_admissions_that_end_within_48h(demo_labels, small, demo_dir):
    """The project's rules before the span rule (which needs the events' features; ACES sees codes only)
    and without has_chartevents_data (MEDS has no such flag). What ACES leaves out is exactly the admissions
    discharged or dead by intime + 48 h: the task's stand-in for the span rule."""
    cohort, _ = build_cohort(small["PATIENTS"], small["ADMISSIONS"], small["ICUSTAYS"],
                             PrepareConfig(require_chartevents_data=False))
    admissions = small["ADMISSIONS"].set_index("hadm_id")
    raw = pd.read_csv(mimic.find_table(demo_dir, "ADMISSIONS")).rename(columns=str.lower)  # read_table leaves
    deathtime = pd.to_datetime(raw.set_index("hadm_id").deathtime)  # out DEATHTIME
    end = pd.concat([cohort.hadm_id.map(admissions.dischtime), cohort.hadm_id.map(deathtime)], axis=1).min(axis=1)
    lasting = cohort[(end > cohort.intime + WINDOW).to_numpy()]
    assert 0 < len(lasting) < len(cohort)
    stays = labelled_stays(demo_labels, small["ICUSTAYS"])
    both = lasting.merge(stays, on="hadm_id", how="outer", suffixes=("", "_aces"), indicator=True)
    assert (both._merge == "both").all(), both[both._merge != "both"]
    assert (both.icustay_id == both.icustay_id_aces).all()
    assert (both.y.astype(bool) == both.boolean_value).all()  # DEAD/EXPIRED at discharge ⇔ hospital_expire_flag


def test_prepare_from_the_aces_labels_equals_prepare_from_events_on_the_shared_admissions(demo_meds, demo_labels,
                                                                                          tmp_path):
    """The issue's acceptance: the same record, cell for cell, and the same labels. The statistics that scale x
    are the event cohort's (prepare.stats_from), since the two cohorts differ in who else they hold."""
    by_events = build_dataset(demo_meds, PrepareConfig(source="meds", require_chartevents_data=False),
                              work_dir=tmp_path)
    write_store(by_events, tmp_path / "events.zarr", 64)
    by_labels = build_dataset(demo_meds, PrepareConfig(source="meds", labels=str(demo_labels),
                                                       stats_from=str(tmp_path / "events.zarr")), work_dir=tmp_path)
    assert by_labels.sizes["sample"] == pq.read_metadata(demo_labels).num_rows
    shared = np.intersect1d(by_events.hadm_id.values, by_labels.hadm_id.values)
    assert len(shared) >= 90 and set(by_events.hadm_id.values) == set(shared)  # every event sample is labelled
    a = by_events.isel(sample=np.flatnonzero(np.isin(by_events.hadm_id.values, shared)))
    b = by_labels.isel(sample=np.flatnonzero(np.isin(by_labels.hadm_id.values, shared)))
    b = b.isel(sample=np.argsort(b.hadm_id.values))
    for name in ("x", "mask", "value", "count", "y", "hadm_id", "icustay_id", "subject_id", "intime"):
        np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)


def test_a_failing_aces_run_raises_with_its_log_and_writes_no_label_file(tmp_path):
    task = tmp_path / "no_inclusive.yaml"  # ACES needs start_inclusive and end_inclusive on every window
    task.write_text("predicates:\n  icu_admission:\n    code: {regex: '^ICU_ADMISSION//'}\n"
                    "trigger: icu_admission\nwindows:\n  input:\n    start: trigger\n    end: start + 48h\n")
    (tmp_path / "meds" / "data").mkdir(parents=True)  # the config fails before the data is read
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match=r"aces-cli \(no_inclusive.yaml on .*\) failed, exit 1") as failure:
        aces_labels(tmp_path / "meds", out, task)
    assert "start_inclusive" in str(failure.value)
    assert not list(out.glob("*.parquet"))
