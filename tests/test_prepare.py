"""The prepare stage end to end: the real demo data, the store's layout, and bad input."""

import gzip
import hashlib
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from pipeline.cli import main
from pipeline.features import NAMES
from tests.support.mimic_tables import baseline, prepare_repeatedly, with_unparseable_values

ROOT = Path(__file__).resolve().parent.parent
# pinned outputs on the demo: a change to any rule or to the scaling shows up here
DEMO_X_SHA256 = "9f91e501f727287c02f481016f442826c04a7cc056b5eefb8d8cbbae2f78f90e"
DEMO_MASK_SHA256 = "0d7b12608c5a6dd87e765c005fa95862ca13232ca29e72d634650f7ce0c624f4"


@pytest.fixture(scope="module")
def demo_store(demo_dir, tmp_path_factory) -> xr.Dataset:
    run = tmp_path_factory.mktemp("demo-run")
    assert main(["prepare", "--run-dir", str(run), "--mimic-dir", str(demo_dir), "prepare.chunk_samples=32"]) == 0
    return xr.open_zarr(run / "dataset.zarr", consolidated=False)


def sha256(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def test_demo_counts_and_checksums(demo_store):
    ds = demo_store
    assert ds.sizes["sample"] == 95
    assert int(ds.y.sum()) == 25
    assert ds.attrs["counts"]["span_rule"] == 95 and ds.attrs["counts"]["positive"] == 25
    assert float(ds["mask"].mean()) == pytest.approx(0.265, abs=0.005)
    assert sha256(ds.x.values) == DEMO_X_SHA256
    assert sha256(ds["mask"].values) == DEMO_MASK_SHA256


def test_store_layout(demo_store):
    ds = demo_store
    assert dict(ds.sizes) == {"sample": 95, "time": 48, "feature": 19}
    assert ds.x.dims == ds["mask"].dims == ("sample", "time", "feature")
    assert ds.x.dtype == np.float32 and ds["mask"].dtype == bool and ds.y.dtype == np.int8
    x = ds.x.values
    assert not np.isnan(x).any() and x.min() >= 0.0 and x.max() <= 1.0
    assert ds.sample.values.tolist() == list(range(95))
    assert ds.time.values.tolist() == list(range(48))
    assert ds.feature.values.tolist() == list(NAMES)
    for coord in ("hadm_id", "icustay_id", "subject_id"):
        assert ds[coord].dims == ("sample",) and ds[coord].dtype == np.int64
    assert (np.diff(ds.hadm_id.values) > 0).all()
    for stat in ("p5", "median", "p95"):
        assert ds[stat].dims == ("feature",)
    assert (ds.p5 <= ds["median"]).all() and (ds["median"] <= ds.p95).all()
    assert ds.x.chunks == ((32, 32, 31), (48,), (19,))  # chunked along sample only
    assert set(ds.attrs["input_sha256"]) >= {"CHARTEVENTS.csv.gz", "LABEVENTS.csv.gz", "ICUSTAYS.csv.gz"}
    assert ds.attrs["cohort_config"]["min_age_years"] == 18.0
    assert "zarr" in ds.attrs["versions"]


# ---- bad input: a clear error naming the file/column/rule, exit 1, no dataset.zarr ------------

def good_tables(folder: Path) -> Path:
    t = baseline()
    icu = t.admission(100002)
    for i in range(2000):  # enough rows that a cut in the gzip stream falls after the header
        t.chart(icu, 220045, 0.5 + i * 0.04, 60.0 + i % 40)
    return t.write(folder)


def rewrite_gz(path: Path, edit) -> None:
    with gzip.open(path, "rt") as f:
        text = f.read()
    with gzip.open(path, "wt") as f:
        f.write(edit(text))


def break_missing_table(d: Path) -> None:
    (d / "ICUSTAYS.csv.gz").unlink()


def break_missing_column(d: Path) -> None:
    rewrite_gz(d / "ADMISSIONS.csv.gz", lambda t: t.replace("HOSPITAL_EXPIRE_FLAG", "EXPIRE", 1))


def break_gzip(d: Path) -> None:
    data = (d / "CHARTEVENTS.csv.gz").read_bytes()
    (d / "CHARTEVENTS.csv.gz").write_bytes(data[: len(data) // 2] + b"\x00garbage" * 8)


def break_valuenum(d: Path) -> None:
    def edit(text: str) -> str:
        lines = text.splitlines()
        fields = lines[2].split(",")
        fields[lines[0].split(",").index("VALUENUM")] = "12a"
        return "\n".join([*lines[:2], ",".join(fields), *lines[3:]]) + "\n"
    rewrite_gz(d / "LABEVENTS.csv.gz", edit)


def break_cohort(d: Path) -> None:
    rewrite_gz(d / "ADMISSIONS.csv.gz", lambda t: t.replace(",1\n", ",0\n"))  # has_chartevents_data = 0


@pytest.mark.parametrize("breaker,message", [
    (break_missing_table, "table ICUSTAYS not found"),
    (break_missing_column, "ADMISSIONS.csv.gz: missing column 'hospital_expire_flag'"),
    (break_gzip, "CHARTEVENTS.csv.gz: corrupt or truncated gzip"),
    (break_valuenum, "LABEVENTS.csv.gz: column 'valuenum'"),
    (break_cohort, "cohort is empty after rule 'has_chartevents_data'"),
])
def test_bad_input_is_named_and_leaves_no_store(tmp_path, capsys, breaker, message):
    mimic = good_tables(tmp_path / "mimic")
    run = tmp_path / "run"
    assert main(["prepare", "--run-dir", str(run), "--mimic-dir", str(mimic)]) == 0  # the good tables work
    shutil.rmtree(run)
    breaker(mimic)
    capsys.readouterr()
    assert main(["prepare", "--run-dir", str(run), "--mimic-dir", str(mimic)]) == 1
    # the last line, after whatever the progress bars drew on it
    last_line = re.split(r"\r|\x1b\[A", capsys.readouterr().err.strip().splitlines()[-1])[-1]
    assert last_line.startswith("error: ") and message in last_line, last_line
    leftovers = sorted(p.name for p in run.iterdir())
    assert leftovers == [".manifest.lock", ".stages", "manifest.json"] or leftovers == [".manifest.lock",
                                                                                         "manifest.json"]
    assert not (run / ".stages" / "prepare.json").exists()


def test_missing_mimic_folder_is_named(tmp_path, capsys):
    assert main(["prepare", "--run-dir", str(tmp_path / "run"), "--mimic-dir", str(tmp_path / "nowhere")]) == 1
    assert f"{tmp_path / 'nowhere'}: MIMIC-III folder not found" in capsys.readouterr().err


def test_a_parse_error_in_a_streamed_table_never_hangs(demo_dir, tmp_path):
    """'abc' in ~1,000 CHARTEVENTS valuenum cells of the demo: `prepare` names the column and exits 1, three
    times in a row (two at once) under a hard timeout. It once hung at exit in about one run in twenty, its
    CSV reader's thread still alive; benchmarks/prepare_exit.py runs it as often as asked."""
    broken = with_unparseable_values(demo_dir, tmp_path / "demo")
    outcomes = prepare_repeatedly(broken, tmp_path, 3)
    assert [code for code, _ in outcomes] == [1] * 3
    assert all("CHARTEVENTS.csv.gz: column 'valuenum'" in err and "invalid value 'abc'" in err for _, err in outcomes)
    assert not any((tmp_path / f"r{k}" / "dataset.zarr").exists() for k in range(3))
