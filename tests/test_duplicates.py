"""Duplicates in the input, on the real demo tables: an exact duplicate row is dropped and counted, a key
on two different rows is an error naming the key and both rows."""

import csv
import gzip
import io
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from pipeline.cli import main
from pipeline.config import PrepareConfig
from pipeline.data import mimic
from pipeline.data.prepare import build_dataset
from pipeline.errors import InputError
from pipeline.susceptibility.report import data_section

CFG = PrepareConfig()
SODIUM, HEARTRATE = "50983", "220045"


def read_rows(path: Path) -> list[list[str]]:
    with gzip.open(path, "rt", newline="") as f:
        return list(csv.reader(f))


def write_rows(path: Path, rows: list[list[str]]) -> None:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    path.chmod(0o644)
    with gzip.open(path, "wt", newline="") as f:
        f.write(out.getvalue())


def column(rows: list[list[str]], name: str) -> int:
    return [c.lower() for c in rows[0]].index(name)


@pytest.fixture
def demo_copy(demo_dir, tmp_path) -> Path:
    folder = tmp_path / "demo"
    shutil.copytree(demo_dir, folder)
    return folder


@pytest.fixture(scope="module")
def demo_ds(demo_dir, tmp_path_factory):
    return build_dataset(demo_dir, CFG, work_dir=tmp_path_factory.mktemp("work"))


def double_events(path: Path, key: str, itemid: str, lo: float, hi: float, n: int) -> int:
    """Append a copy of `n` rows of `itemid` with a `key` and lo < valuenum < hi (kept by every event rule)
    at the end of the table, far from the originals (another block of the stream); returns how many."""
    rows = read_rows(path)
    has_key, item, value = column(rows, key), column(rows, "itemid"), column(rows, "valuenum")
    error = column(rows, "error") if "error" in [c.lower() for c in rows[0]] else None
    picked = [r for r in rows[1:] if r[has_key] and r[item] == itemid and r[value] and lo < float(r[value]) < hi
              and (error is None or r[error] in ("", "0"))]
    copies = picked[:: len(picked) // n][:n]
    write_rows(path, rows + copies)
    return len(copies)


@pytest.mark.parametrize("bucket_rows", [None, 5_000])  # the default: one bucket; 5,000: ~17
def test_exact_duplicates_are_dropped_and_counted(demo_copy, demo_ds, tmp_path, monkeypatch, bucket_rows):
    if bucket_rows:
        monkeypatch.setattr(mimic, "DEDUPE_BUCKET_ROWS", bucket_rows)
    for table in ("ICUSTAYS", "ADMISSIONS"):  # every row twice, each copy beside its original
        path = demo_copy / f"{table}.csv.gz"
        rows = read_rows(path)
        write_rows(path, [rows[0], *(r for row in rows[1:] for r in (row, row))])
    labs = double_events(demo_copy / "LABEVENTS.csv.gz", "hadm_id", SODIUM, 100, 180, 100)
    charts = double_events(demo_copy / "CHARTEVENTS.csv.gz", "icustay_id", HEARTRATE, 30, 200, 100)
    assert (labs, charts) == (100, 100)

    ds = build_dataset(demo_copy, CFG, work_dir=tmp_path)
    for name in ("x", "mask", "y", "p5", "median", "p95", "hadm_id", "icustay_id"):
        np.testing.assert_array_equal(ds[name].values, demo_ds[name].values, err_msg=name)
    assert ds.attrs["counts"] == demo_ds.attrs["counts"]
    assert ds.attrs["duplicates_dropped"] == {"PATIENTS": 0, "ADMISSIONS": 129, "ICUSTAYS": 136,
                                              "LABEVENTS": 100, "CHARTEVENTS": 100}
    assert ("- exact duplicate rows dropped: PATIENTS 0, ADMISSIONS 129, ICUSTAYS 136, LABEVENTS 100, "
            "CHARTEVENTS 100") in data_section(ds)
    assert demo_ds.attrs["duplicates_dropped"] == dict.fromkeys(ds.attrs["duplicates_dropped"], 0)


def test_icustay_id_on_a_second_admission_is_an_error_naming_both_rows(demo_copy, tmp_path, capsys):
    path = demo_copy / "ICUSTAYS.csv.gz"
    rows = read_rows(path)
    hadm, icustay = column(rows, "hadm_id"), column(rows, "icustay_id")
    reused = list(rows[1])
    reused[hadm] = rows[2][hadm]  # the first stay's id again, on another admission
    write_rows(path, [*rows, reused])
    run = tmp_path / "run"
    capsys.readouterr()
    assert main(["prepare", "--run-dir", str(run), "--mimic-dir", str(demo_copy)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    last_line = re.split(r"\r|\x1b\[A", err[-1])[-1]  # after whatever the progress bars drew on it
    assert last_line.startswith(f"error: {path}: icustay_id {rows[1][icustay]} on data rows 1 and {len(rows)} "), \
        last_line
    assert f"hadm_id={rows[1][hadm]}" in last_line and f"hadm_id={rows[2][hadm]}" in last_line
    assert not (run / "dataset.zarr").exists()


def test_conflicting_admission_is_an_error(demo_copy, tmp_path):
    path = demo_copy / "ADMISSIONS.csv.gz"
    rows = read_rows(path)
    flag, hadm = column(rows, "hospital_expire_flag"), column(rows, "hadm_id")
    conflicting = list(rows[5])
    conflicting[flag] = "1" if conflicting[flag] == "0" else "0"
    write_rows(path, [*rows[:9], conflicting, *rows[9:]])
    pattern = (rf"ADMISSIONS\.csv\.gz: hadm_id {rows[5][hadm]} on data rows 5 and 9 with different values: "
               rf".*hospital_expire_flag={rows[5][flag]}.*hospital_expire_flag={conflicting[flag]}")
    with pytest.raises(InputError, match=pattern):
        build_dataset(demo_copy, CFG, work_dir=tmp_path)
