"""prepare's MEDS source against hostile inputs (issue #36, cases 4, 5, 6, 16, 22, 23): ids shared by two
subjects, events without a time, a one-class held_out split, ids of the wrong type, a subject in two splits,
map rules that capture what is no item id, a bad map found before anything is written, a full disk naming
the file it was writing. Each bad input is one line naming the file, nothing written."""

import resource
import shutil
import signal
import subprocess

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import xarray as xr

from pipeline.cli import main
from pipeline.data.meds import FeatureMap
from pipeline.data.meds_export import write_meds
from pipeline.features import CHART, LAB
from tests.support.chains import pipeline_cmd
from tests.support.meds_tables import assert_one_line_nothing_written, prepare_meds
from tests.support.runs import ROOT, TINY

MIMIC_IV = FeatureMap.load("mimic-iv")


@pytest.fixture(scope="module")
def meds_demo(demo_dir, tmp_path_factory):
    """The demo as MEDS, and the dataset prepared from it as it is."""
    where = tmp_path_factory.mktemp("meds-hostile")
    root = write_meds(demo_dir, where / "meds", shard_subjects=40)
    assert prepare_meds(root, where / "run") == 0
    return root, xr.open_zarr(where / "run" / "dataset.zarr", consolidated=False).load()


def shards(root):
    return sorted((root / "data").rglob("*.parquet"))


def events_of(root) -> pd.DataFrame:
    return pd.concat([pq.read_table(p).to_pandas().assign(shard=k) for k, p in enumerate(shards(root))],
                     ignore_index=True)


def rewritten(meds_demo, tmp_path, change) -> object:
    """A copy of the demo's MEDS root with every shard's events (a DataFrame, column `shard` its file) changed
    by `change`, written back with the original schema."""
    root = shutil.copytree(meds_demo[0], tmp_path / "meds")
    events = change(events_of(root))
    schema = pq.read_schema(shards(root)[0])
    for k, path in enumerate(shards(root)):
        part = events[events.shard == k].drop(columns="shard")
        pq.write_table(pa.Table.from_pandas(part, schema=schema, preserve_index=False), path)
    return root


def is_feature(code: str, table: str) -> bool:
    info = MIMIC_IV.classify(code)
    return isinstance(info, tuple) and info[2] == table


def assert_same_dataset(a: xr.Dataset, b: xr.Dataset) -> None:
    for name in ("x", "mask", "value", "count", "y", "hadm_id", "icustay_id", "subject_id", "intime"):
        np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)


# ---- case 4: an admission or ICU stay id of two subjects ----------------------------------------

@pytest.mark.parametrize("column", ["hadm_id", "icustay_id"])
def test_an_id_of_two_subjects_is_refused_naming_it(column, meds_demo, tmp_path, capsys):
    """The second subject's admission (or stay) renamed to the first's: groupby().first() gave it to one
    subject and lost a sample, exit 0. The CSV path refuses a key on two different rows."""
    ids = {}

    def share(events):
        owners = events.dropna(subset=[column]).groupby(column).subject_id.first()
        first, second = owners.index[0], owners[owners != owners.iloc[0]].index[0]
        ids.update(id=int(first), subjects={int(owners[first]), int(owners[second])})
        events.loc[events[column] == second, column] = first
        return events

    root = rewritten(meds_demo, tmp_path, share)
    run = tmp_path / "run"
    assert prepare_meds(root, run) == 1
    err = assert_one_line_nothing_written(capsys, run, f"{column} {ids['id']} ")
    assert all(str(s) in err for s in ids["subjects"]) and any(str(p) in err for p in shards(root)), err


# ---- case 5: feature events without a time; duplicates of cohort events -------------------------

def test_feature_events_without_a_time_are_dropped_and_counted(meds_demo, tmp_path):
    """MEDS allows a null time (static events); a feature event without one cannot be binned. Each of 50
    chart events copied twice with no time: the dataset is unchanged, the 100 copies are counted as dropped
    by the `with_time` rule, and neither in range nor as duplicates (they were counted kept, and 50 of them
    as duplicates of each other)."""
    def timeless_copies(events):
        chart = events[[is_feature(c, CHART) for c in events.code]].head(50).assign(time=pd.NaT)
        return pd.concat([events, chart, chart], ignore_index=True)

    root = rewritten(meds_demo, tmp_path, timeless_copies)
    run = tmp_path / "run"
    assert prepare_meds(root, run) == 0
    ds = xr.open_zarr(run / "dataset.zarr", consolidated=False).load()
    before = meds_demo[1].attrs["event_counts"][CHART]
    after = ds.attrs["event_counts"][CHART]
    assert after["with_key"] - after["with_time"] == 100 == after["with_key"] - before["with_key"]
    for rule in ("with_time", "in_range", "duplicates", "per_feature"):
        assert after[rule] == before[rule], rule
    assert_same_dataset(meds_demo[1], ds)


def test_duplicate_cohort_events_are_counted_per_table(meds_demo, tmp_path):
    """A cohort event identical to an earlier one (a shard's rows written twice) is dropped and counted as the
    CSV path counts a doubled row of PATIENTS, ADMISSIONS or ICUSTAYS: never 0 whatever the input."""
    def doubled(events):
        births = events[events.code == "MEDS_BIRTH"].head(2)
        admissions = events[events.code.str.startswith("HOSPITAL_ADMISSION//")].head(3)
        stays = events[events.code.str.startswith("ICU_")].head(4)
        return pd.concat([events, births, admissions, stays], ignore_index=True)

    root = rewritten(meds_demo, tmp_path, doubled)
    run = tmp_path / "run"
    assert prepare_meds(root, run) == 0
    ds = xr.open_zarr(run / "dataset.zarr", consolidated=False).load()
    dropped = ds.attrs["duplicates_dropped"]
    assert (dropped["PATIENTS"], dropped["ADMISSIONS"], dropped["ICUSTAYS"]) == (2, 3, 4)
    assert meds_demo[1].attrs["duplicates_dropped"]["ADMISSIONS"] == 0
    assert_same_dataset(meds_demo[1], ds)


# ---- case 6: a held_out split of one class -------------------------------------------------------

def test_a_one_class_held_out_split_is_refused(meds_demo, tmp_path, capsys):
    """Every held_out subject survived: the test AUROC was NaN and the report said "nan%", exit 0."""
    root = shutil.copytree(meds_demo[0], tmp_path / "meds")
    ds = meds_demo[1]
    survivors = np.unique(ds.subject_id.values[ds.y.values == 0])
    died = set(ds.subject_id.values[ds.y.values == 1])
    held_out = [s for s in survivors if s not in died][:10]
    subjects = np.unique(events_of(root).subject_id)
    split = np.where(np.isin(subjects, held_out), "held_out", "train")
    pq.write_table(pa.table({"subject_id": pa.array(subjects, pa.int64()), "split": split}),
                   root / "metadata" / "subject_splits.parquet")
    run = tmp_path / "run"
    assert prepare_meds(root, run) == 0
    capsys.readouterr()
    code = main(["train", "--run-dir", str(run), "--executor", "debug", "cv.folds=3", "train.epochs=2", *TINY])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("error: [cv] meds_split = true") and "held_out" in err and "one class" in err, err
    assert not (run / "split.json").exists() and not (run / "model").exists()


# ---- case 16: a subject in two splits, ids of the wrong type, map rules capturing no item id ----

def test_a_subject_in_two_splits_is_one_line(meds_demo, tmp_path, capsys):
    root = shutil.copytree(meds_demo[0], tmp_path / "meds")
    path = root / "metadata" / "subject_splits.parquet"
    splits = pq.read_table(path)
    subject = splits["subject_id"][0].as_py()
    again = pa.table({"subject_id": pa.array([subject], pa.int64()),
                      "split": ["held_out" if splits["split"][0].as_py() != "held_out" else "train"]})
    pq.write_table(pa.concat_tables([splits, again.cast(splits.schema)]), path)
    run = tmp_path / "run"
    assert prepare_meds(root, run) == 1
    assert_one_line_nothing_written(capsys, run, f"{path}: subject {subject} is in two splits")


def as_text(column, prefix=""):
    return (prefix + column.astype("Int64").astype(str)).where(column.notna(), None)


def last_id(column):
    return column == column.dropna().iloc[-1]


BAD_IDS = {  # column, its new values (the events' DataFrame → a column), the message
    "hadm_id as text that is no number": ("hadm_id", lambda e: as_text(e.hadm_id, "H"),
                                          "'H"),
    "icustay_id as text that is no number": ("icustay_id", lambda e: as_text(e.icustay_id, "icu-"), "'icu-"),
    "a fractional hadm_id": ("hadm_id", lambda e: e.hadm_id.where(~last_id(e.hadm_id), e.hadm_id + 0.5), ".5"),
    "a date as hadm_id": ("hadm_id", lambda e: e.time, "holds timestamp[us], not integer ids"),
}


@pytest.mark.parametrize("case", sorted(BAD_IDS))
def test_ids_that_are_not_integers_are_one_line_naming_file_and_column(case, meds_demo, tmp_path, capsys):
    """Text, fractional ids (154289.5) and NaN gave ArrowInvalid, ValueError or InvalidIndexError tracebacks,
    or (a text id on a cohort event) were read by pandas' astype."""
    column, values, needle = BAD_IDS[case]
    root = shutil.copytree(meds_demo[0], tmp_path / "meds")
    path = shards(root)[-1]  # the last shard: its cohort events and feature events alike
    events = pq.read_table(path).to_pandas()
    events[column] = values(events)
    pq.write_table(pa.Table.from_pandas(events, preserve_index=False), path)
    run = tmp_path / "run"
    assert prepare_meds(root, run) == 1
    err = assert_one_line_nothing_written(capsys, run, f"{path}: ")
    assert needle in err and f"column '{column}'" in err, err


def whole_floats_with_nan(column: pa.ChunkedArray) -> pa.Array:
    """An integer id column as float64 with NaN (not null) where an event has none."""
    ids = column.to_numpy(zero_copy_only=False).astype(np.float64)  # nulls become NaN
    return pa.array(ids, pa.float64(), from_pandas=False)


def digit_text(column: pa.ChunkedArray) -> pa.ChunkedArray:
    return pa.compute.cast(column, pa.string())


@pytest.mark.parametrize("change", [whole_floats_with_nan, digit_text])
def test_float_ids_with_nan_and_digit_text_give_the_same_dataset(change, meds_demo, tmp_path):
    """Id columns written as float64 with NaN where an event has none (pandas writes an integer column with
    gaps so), or as text of digits: the same dataset as int64 ids (float NaN gave an ArrowInvalid traceback)."""
    root = shutil.copytree(meds_demo[0], tmp_path / "meds")
    for path in shards(root):
        table = pq.read_table(path)
        for column in ("hadm_id", "icustay_id"):
            table = table.set_column(table.schema.get_field_index(column), column, change(table[column]))
        pq.write_table(table, path)
    run = tmp_path / "run"
    assert prepare_meds(root, run) == 0
    assert_same_dataset(meds_demo[1], xr.open_zarr(run / "dataset.zarr", consolidated=False).load())


def user_map(tmp_path, rule: str):
    text = (ROOT / "pipeline" / "data" / "maps" / "mimic-iv.toml").read_text()
    path = tmp_path / "my-map.toml"
    path.write_text(text.replace("(?P<itemid>[0-9]+)", rule))
    assert rule in path.read_text()
    return path


def test_a_map_rule_capturing_no_item_id_is_one_line(meds_demo, tmp_path, capsys):
    """`(?P<itemid>.*)` captured text: int() raised a ValueError traceback."""
    fmap = user_map(tmp_path, "(?P<itemid>.*)")
    run = tmp_path / "run"
    assert prepare_meds(meds_demo[0], run, f"prepare.feature_map={fmap}") == 1
    err = assert_one_line_nothing_written(capsys, run, f"{fmap}: the rule '^LAB//(?:RESULT//)?(?P<itemid>.*)//'")
    assert "not an item id" in err and "[0-9]" in err


def test_fullwidth_digits_are_no_item_id():
    """Python's \\d matches any Unicode digit and int() reads '５０８２２' as 50822: the shipped map reads only
    ASCII digits, and a user's rule that captures other digits is refused."""
    assert MIMIC_IV.classify("LAB//５０８２２//mEq/L") is None
    assert MIMIC_IV.classify("LAB//50822//mEq/L")[:3] == (0, 50822, LAB)


def test_a_user_rule_with_backslash_d_on_fullwidth_digits_is_one_line(meds_demo, tmp_path, capsys):
    root = rewritten(meds_demo, tmp_path, lambda e: e.assign(code=e.code.str.replace(
        "LAB//50822//", "LAB//５０８２２//", regex=False)))
    fmap = tmp_path / "backslash-d.toml"
    fmap.write_text((ROOT / "pipeline" / "data" / "maps" / "mimic-iv.toml").read_text()
                    .replace("(?P<itemid>[0-9]+)", r"(?P<itemid>\d+)"))
    run = tmp_path / "run"
    assert prepare_meds(root, run, f"prepare.feature_map={fmap}") == 1
    err = assert_one_line_nothing_written(capsys, run, f"{fmap}: ")
    assert "'５０８２２'" in err and "[0-9]" in err


# ---- case 22: a bad map regex is found in preflight ----------------------------------------------

@pytest.mark.parametrize("stage", ["prepare", "run"])
def test_a_bad_map_regex_stops_before_anything_is_written(stage, meds_demo, tmp_path, capsys):
    fmap = user_map(tmp_path, "(?P<itemid>[0-9+)")
    run = tmp_path / "run"
    code = main([stage, "--run-dir", str(run), "prepare.source=meds", f"prepare.meds_dir={meds_demo[0]}",
                 f"prepare.feature_map={fmap}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith(f"error: {fmap}: ") and len(err.splitlines()) == 1, err
    assert not run.exists()


# ---- case 23: a full disk names the file being written -------------------------------------------

def test_a_full_disk_names_the_chart_events_file_it_was_writing(meds_demo, tmp_path):
    """Lab events kept few, so that the chart events' scratch file is the one past the limit: the error named
    LABEVENTS.parquet whatever the file."""
    root = rewritten(meds_demo, tmp_path, lambda e: pd.concat([
        e[[not is_feature(c, LAB) for c in e.code]], e[[is_feature(c, LAB) for c in e.code]].head(20)]))

    def small_files():  # as on a full disk: writes past 20 kB fail (EFBIG rather than ENOSPC)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    run = tmp_path / "run"
    done = subprocess.run(pipeline_cmd("prepare", "--run-dir", str(run), "prepare.source=meds",
                                       f"prepare.meds_dir={root}"),
                          cwd=ROOT, capture_output=True, text=True, timeout=300, preexec_fn=small_files)
    assert done.returncode == 1, done.stderr[-2000:]
    error = "error: " + done.stderr.rsplit("error: ", 1)[-1].strip()
    assert error.startswith(f"error: {run}/prepare-events-") and "cannot write (file size limit reached" in error
    assert "/CHARTEVENTS" in error.split(": cannot write")[0], error
    assert not (run / "dataset.zarr").exists() and not list(run.glob("prepare-events-*"))


def test_a_meds_root_that_lost_shards_after_prepare_is_not_skipped(meds_demo, tmp_path, capsys):
    """Half the subjects' shards removed after prepare: `prepare: complete, skipped`, and every stage after it
    went on describing data that are no longer there (dataset.zarr's input_sha256 was never compared)."""
    root = shutil.copytree(meds_demo[0], tmp_path / "meds")
    assert prepare_meds(root, tmp_path / "run") == 0
    gone = shards(root)[::2]
    for path in gone:
        path.unlink()
    capsys.readouterr()
    assert prepare_meds(root, tmp_path / "run") == 1
    [line] = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error: ")]
    assert line.startswith("error: prepare: complete, but the files it read changed since ("), line
    assert f"{gone[0].relative_to(root)} is gone" in line and "`python -m pipeline prepare --force`" in line
    assert prepare_meds(root, tmp_path / "run", "--force") == 0
