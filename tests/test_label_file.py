"""prepare from a MEDS label file (`prepare.labels`, pipeline/data/label_file.py): the event cohort written as
labels gives the same samples, record and labels as the event rules on the real demo; a damaged, mistyped,
conflicting or foreign label file is one line naming it, and nothing is written."""

import dataclasses

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.config import PrepareConfig
from pipeline.data.meds_export import write_meds
from pipeline.data.prepare import build_dataset
from pipeline.susceptibility.report import data_section
from tests.support.meds_tables import assert_one_line_nothing_written, prepare_meds

pytestmark = pytest.mark.thirdparty  # the meds package's LabelSchema: the floors job runs these (tests/test_floors.py)

RECORD = ("x", "mask", "value", "count", "y")


@pytest.fixture(scope="module")
def demo_meds(demo_dir, tmp_path_factory):
    return write_meds(demo_dir, tmp_path_factory.mktemp("labels-demo") / "meds", shard_subjects=40)


@pytest.fixture(scope="module")
def by_events(demo_meds, tmp_path_factory):
    return build_dataset(demo_meds, PrepareConfig(source="meds", require_chartevents_data=False),
                         work_dir=tmp_path_factory.mktemp("events"))


def labels_of(ds, path, **columns):
    """The samples of `ds` as a MEDS label file: predicted at the end of their window."""
    intime = ds.intime.values.astype("datetime64[s]").astype("datetime64[us]")
    table = {"subject_id": ds.subject_id.values.astype(np.int64),
             "prediction_time": intime + np.timedelta64(48, "h"), "boolean_value": ds.y.values.astype(bool)}
    pq.write_table(pa.table({**table, **columns}), path)
    return path


def test_the_event_cohort_as_a_label_file_gives_the_same_samples_and_record(demo_meds, by_events, tmp_path):
    labels = labels_of(by_events, tmp_path / "labels.parquet")
    cfg = PrepareConfig(source="meds", labels=str(labels), require_chartevents_data=False)
    ds = build_dataset(demo_meds, cfg, work_dir=tmp_path)
    assert ds.sizes["sample"] == by_events.sizes["sample"] > 90
    order = np.argsort(ds.hadm_id.values)  # labels come by subject and time, events by admission
    ds = ds.isel(sample=order)
    for name in (*RECORD, "hadm_id", "icustay_id", "subject_id", "intime", "p5", "median", "p95"):
        np.testing.assert_array_equal(ds[name].values, by_events[name].values, err_msg=name)
    assert ds.attrs["label_from"] == {"label_file": ds.sizes["sample"]}
    assert ds.attrs["counts"]["labels"] == ds.attrs["counts"]["in_an_icu_stay"] == ds.sizes["sample"]
    assert ds.attrs["input_sha256"]["labels/labels.parquet"]
    assert ds.attrs["sample_order"].startswith("label file")
    assert f"- {ds.sizes['sample']} samples (rows of the label file `{labels}`), 26 labelled true (27.1%); " \
        in "\n".join(data_section(ds))


def test_a_label_outside_any_stay_is_a_sample_with_no_stay_and_duplicates_are_dropped(demo_meds, by_events,
                                                                                      tmp_path):
    """A prediction a year after the data (no stay holds its window) is still a sample, with ids −1 and an empty
    record; a row written twice is one sample."""
    some = by_events.isel(sample=[*range(30), 0])
    path = labels_of(some, tmp_path / "labels.parquet")
    table = pq.read_table(path).to_pandas()
    table.loc[1, "prediction_time"] += pd.Timedelta(days=3650)
    pq.write_table(pa.Table.from_pandas(table, preserve_index=False), path)
    ds = build_dataset(demo_meds, PrepareConfig(source="meds", labels=str(path)), work_dir=tmp_path)
    assert ds.sizes["sample"] == 30 and ds.attrs["duplicates_dropped"]["labels"] == 1
    late = int(np.flatnonzero(ds.subject_id.values == int(by_events.subject_id[1]))[0])
    assert ds.hadm_id.values[late] == ds.icustay_id.values[late] == -1 and not ds["mask"][late].any()


def bad_labels(tmp_path, frame_or_bytes):
    path = tmp_path / "labels.parquet"
    if isinstance(frame_or_bytes, bytes):
        path.write_bytes(frame_or_bytes)
    else:
        pq.write_table(pa.table(frame_or_bytes), path)
    return path


T = np.array(["2101-01-01T00:00"], dtype="datetime64[us]")
BAD = {
    "not parquet": (b"subject_id,prediction_time\n1,2\n", "not a readable Parquet file"),
    "no label column": ({"subject_id": [10006], "prediction_time": T}, "no column 'boolean_value'"),
    "no label": ({"subject_id": [10006], "prediction_time": T, "boolean_value": pa.array([None], pa.bool_())},
                 "should have no nulls but do: boolean_value"),
    "text subject ids": ({"subject_id": ["a"], "prediction_time": T, "boolean_value": [True]},
                         "not a MEDS label file"),
    "no time": ({"subject_id": [10006], "prediction_time": np.array(["NaT"], "datetime64[us]"),
                 "boolean_value": [True]}, "should have no nulls but do: prediction_time"),
    "both labels": ({"subject_id": [10006, 10006], "prediction_time": np.repeat(T, 2),
                     "boolean_value": [True, False]}, "labelled both true and false"),
    "another dataset": ({"subject_id": [999999999], "prediction_time": T, "boolean_value": [True]},
                        "have no birth or admission in the MEDS data (first: 999999999)"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_label_file_is_one_line_naming_it(case, demo_meds, tmp_path, capsys):
    content, needle = BAD[case]
    path = bad_labels(tmp_path, content)
    run = tmp_path / "run"
    assert prepare_meds(demo_meds, run, f"prepare.labels={path}") == 1
    err = assert_one_line_nothing_written(capsys, run, needle)
    assert str(path) in err


def test_a_missing_label_file_or_an_empty_folder_is_one_line(demo_meds, tmp_path, capsys):
    run = tmp_path / "run"
    assert prepare_meds(demo_meds, run, f"prepare.labels={tmp_path / 'nowhere.parquet'}") == 1
    assert_one_line_nothing_written(capsys, run, "nowhere.parquet': no such file or folder")
    (tmp_path / "empty").mkdir()
    assert prepare_meds(demo_meds, run, f"prepare.labels={tmp_path / 'empty'}") == 1
    assert_one_line_nothing_written(capsys, run, "a folder with no .parquet label file")


def test_labels_need_the_meds_source(demo_dir, tmp_path):
    cfg = dataclasses.replace(PrepareConfig(), labels=str(tmp_path / "labels.parquet"))
    with pytest.raises(Exception, match='set source = "meds"'):
        build_dataset(demo_dir, cfg, work_dir=tmp_path)
