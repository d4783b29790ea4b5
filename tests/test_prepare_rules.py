"""Each rule of docs/dataset.md, on small hand-written tables: the rule bites where it should."""

import shutil

import numpy as np
import pandas as pd
import pytest

from pipeline.config import PrepareConfig
from pipeline.data.prepare import build_dataset
from pipeline.data.record import derive
from pipeline.errors import InputError
from pipeline.features import NAMES
from tests.support.mimic_tables import HR, Tables, baseline, filler_value

pytestmark = pytest.mark.thirdparty  # the floors job runs these (tests/test_floors.py)

CFG = PrepareConfig()
SODIUM, POTASSIUM = 50983, 50822
TEMP_C, TEMP_F = 223762, 223761
HR_IDX, SODIUM_IDX, TEMP_IDX = NAMES.index("heartrate"), NAMES.index("sodium"), NAMES.index("tempc")


def build(tables: Tables, tmp_path, **cfg):
    return build_dataset(tables.write(tmp_path / "mimic"), PrepareConfig(**cfg) if cfg else CFG)


def kept(ds) -> set[int]:
    return set(ds.hadm_id.values.tolist())


def cell_means(ds, hadm: int, feature: int) -> np.ndarray:
    """Unscaled x of one sample and feature, back in clinical units."""
    s = ds.sel(sample=int(np.flatnonzero(ds.hadm_id.values == hadm)[0]))
    p5, p95 = float(ds.p5[feature]), float(ds.p95[feature])
    return s.x.values[:, feature] * (p95 - p5) + p5


# ---- cohort ---------------------------------------------------------------------------------

def test_has_chartevents_data(tmp_path):
    t = baseline()
    t.admission(100002, has_chartevents_data=0)
    ds = build(t, tmp_path)
    assert kept(ds) == {100001} and ds.attrs["counts"]["has_chartevents_data"] == 1


def test_minors_leave_and_shifted_over_89_stay(tmp_path):
    t = baseline()
    t.admission(100002, age=17.9)
    t.admission(100003, dob=pd.Timestamp("1850-06-01"))  # MIMIC's DOB shift: ~300 years old
    t.admission(100004, age=18.01)
    ds = build(t, tmp_path)
    assert kept(ds) == {100001, 100003, 100004}


def test_hospital_and_icu_stays_of_at_least_24_hours(tmp_path):
    t = baseline()
    t.admission(100002, hospital_hours=23.9, stays=((200002, 0.0, 23.0),), anchors=False)
    t.admission(100003, stays=((200003, 1.0, 23.99),))  # ICU 23.99 h (the los column would round)
    t.admission(100004, hospital_hours=24.0, stays=((200004, 0.0, 24.0),))
    ds = build(t, tmp_path)
    assert kept(ds) == {100001, 100004}
    counts = ds.attrs["counts"]
    assert (counts["hospital_stay"], counts["icu_stay"]) == (3, 2)


def test_first_icu_stay_earliest_intime_then_smallest_id(tmp_path):
    t = baseline()
    # second stay listed first but starts later: the 5 h stay must win
    t.admission(100002, stays=((200022, 5.0, 60.0), (200021, 80.0, 60.0)))
    # a tie on intime: the smaller icustay_id wins (its events are the ones used)
    t.admission(100003, stays=((200032, 3.0, 60.0), (200031, 3.0, 60.0)), anchors=False)
    t.chart(200031, HR, 0.5, 70.0)
    t.chart(200031, HR, 47.5, 70.0)
    t.chart(200032, HR, 0.5, 150.0)  # events of the losing stay are not used
    ds = build(t, tmp_path)
    icustay = dict(zip(ds.hadm_id.values.tolist(), ds.icustay_id.values.tolist(), strict=True))
    assert icustay[100002] == 200022 and icustay[100003] == 200031
    assert cell_means(ds, 100003, HR_IDX)[0] == pytest.approx(70.0, abs=1e-3)


def test_label_is_hospital_expire_flag(tmp_path):
    t = baseline()
    t.admission(100002, y=1)
    ds = build(t, tmp_path)
    assert dict(zip(ds.hadm_id.values.tolist(), ds.y.values.tolist(), strict=True)) == {100001: 0, 100002: 1}
    assert ds.y.dtype == np.int8


def test_empty_cohort_names_the_rule(tmp_path):
    t = Tables()
    t.admission(100001, age=12)
    with pytest.raises(Exception, match="cohort is empty after rule 'adult'"):
        build(t, tmp_path)


# ---- event rules ----------------------------------------------------------------------------

def test_fahrenheit_is_converted_before_the_range_check(tmp_path):
    t = baseline()
    icu = t.admission(100002)
    t.chart(icu, TEMP_F, 5.2, 98.6)     # 37.0 °C
    t.chart(icu, TEMP_F, 6.2, 122.0)    # 50.0 °C: the top of the range, kept
    t.chart(icu, TEMP_C, 7.2, 98.6)     # a °F value under a °C item id: out of range, dropped
    ds = build(t, tmp_path)
    temp = cell_means(ds, 100002, TEMP_IDX)
    mask = ds.mask.sel(sample=1).values[:, TEMP_IDX]
    assert np.flatnonzero(mask).tolist() == [5, 6]
    raw = np.array([37.0, 50.0])
    p5, p95 = float(ds.p5[TEMP_IDX]), float(ds.p95[TEMP_IDX])
    assert temp[5:7] == pytest.approx(np.clip(raw, p5, p95), abs=1e-3)


def test_error_rows_dropped_empty_error_kept(tmp_path):
    t = baseline()
    icu = t.admission(100002)
    t.chart(icu, HR, 3.5, 200.0, error=1)
    t.chart(icu, HR, 4.5, 90.0, error="")
    ds = build(t, tmp_path)
    mask = ds.mask.sel(sample=1).values[:, HR_IDX]
    assert not mask[3] and mask[4]
    assert ds.attrs["event_counts"]["CHARTEVENTS"]["with_key"] - ds.attrs["event_counts"]["CHARTEVENTS"][
        "not_error"] == 1


def test_lab_rows_without_hadm_id_are_ignored(tmp_path):
    t = baseline()
    t.admission(100002)
    t.lab(100002, SODIUM, 3.0, 140.0, hadm_id_empty=True)
    t.lab(100002, SODIUM, 4.0, 141.0)
    ds = build(t, tmp_path)
    assert np.flatnonzero(ds.mask.sel(sample=1).values[:, SODIUM_IDX]).tolist() == [4]


def test_empty_valuenum_dropped(tmp_path):
    t = baseline()
    icu = t.admission(100002)
    t.chart(icu, HR, 3.5, None)
    t.lab(100002, SODIUM, 3.0, None)
    ds = build(t, tmp_path)
    assert not ds.mask.sel(sample=1).values[3, [HR_IDX, SODIUM_IDX]].any()
    assert ds.attrs["event_counts"]["LABEVENTS"]["with_key"] - ds.attrs["event_counts"]["LABEVENTS"][
        "with_valuenum"] == 1


def test_range_limits_exclude_lo_include_hi(tmp_path):
    t = baseline()
    icu = t.admission(100002)
    t.chart(icu, HR, 2.5, 0.0)      # lo = 0: excluded
    t.chart(icu, HR, 3.5, 300.0)    # hi = 300: kept
    t.chart(icu, HR, 4.5, 300.5)    # above: dropped
    t.lab(100002, POTASSIUM, 5.5, 31.0)
    ds = build(t, tmp_path)
    mask = ds.mask.sel(sample=1).values
    assert mask[:, HR_IDX].tolist()[2:5] == [False, True, False]
    assert not mask[5, NAMES.index("potassium")]


# ---- window, span rule, binning ---------------------------------------------------------------

def test_window_edges_and_bin_mean(tmp_path):
    t = baseline()
    icu = t.admission(100002, anchors=False)
    t.chart(icu, HR, -0.5, 10.0)    # before intime: not in any bin (but counts for the span rule)
    t.chart(icu, HR, 0.0, 60.0)     # bin 0 includes t = 0
    t.chart(icu, HR, 0.99, 70.0)    # bin 0 too: mean 65
    t.chart(icu, HR, 1.0, 100.0)    # bin 1
    t.chart(icu, HR, 47.99, 90.0)   # bin 47
    t.chart(icu, HR, 48.0, 250.0)   # t = 48 is outside the window
    ds = build(t, tmp_path)
    s = int(np.flatnonzero(ds.hadm_id.values == 100002)[0])
    assert np.flatnonzero(ds.mask.values[s, :, HR_IDX]).tolist() == [0, 1, 47]
    hr = cell_means(ds, 100002, HR_IDX)
    p5, p95 = float(ds.p5[HR_IDX]), float(ds.p95[HR_IDX])
    assert hr[[0, 1, 47]] == pytest.approx(np.clip([65.0, 100.0, 90.0], p5, p95), abs=1e-3)
    # percentiles are over the events inside the windows: the 10 before and the 250 after do not count
    inside = [80.0, 80.0, filler_value("heartrate"), 60.0, 70.0, 100.0, 90.0]
    assert (p5, p95) == pytest.approx(tuple(np.percentile(inside, [5, 95])))


def test_span_rule_start_and_end(tmp_path):
    t = baseline()
    late = t.admission(100002, anchors=False)
    t.chart(late, HR, 1.2, 80.0)     # starts after 1 h: dropped
    t.chart(late, HR, 47.5, 80.0)
    short = t.admission(100003, anchors=False)
    t.chart(short, HR, 0.5, 80.0)
    t.chart(short, HR, 46.9, 80.0)   # ends before 47 h: dropped
    pre_icu = t.admission(100004, anchors=False)
    t.lab(100004, SODIUM, -6.0, 139.0)   # a lab in the ED, before the ICU stay, starts the span
    t.chart(pre_icu, HR, 5.0, 80.0)
    t.chart(pre_icu, HR, 60.0, 80.0)     # after the window, ends the span
    ds = build(t, tmp_path)
    assert kept(ds) == {100001, 100004}
    assert ds.attrs["counts"]["span_rule"] == 2 and ds.attrs["counts"]["first_icu_stay"] == 4


# ---- imputation and scaling ---------------------------------------------------------------------

def test_interpolation_between_and_nearest_at_edges():
    value = np.full((1, 8, 2), np.nan)
    value[0, [2, 5], 0] = [10.0, 40.0]
    stats = {"p5": np.array([0.0, 0.0]), "median": np.array([50.0, 7.0]), "p95": np.array([100.0, 10.0])}
    x = derive(value, ~np.isnan(value), stats)
    assert (x[0, :, 0] * 100).tolist() == pytest.approx([10, 10, 10, 20, 30, 40, 40, 40])
    assert x[0, :, 1].tolist() == pytest.approx([0.7] * 8), "never recorded: the median"


def test_interpolation_and_median_fill_in_the_store(tmp_path):
    t = baseline()
    t.admission(100002)
    t.lab(100002, SODIUM, 10.5, 130.0)
    t.lab(100002, SODIUM, 14.5, 150.0)
    t.admission(100003)                  # no sodium at all: the feature's median everywhere
    ds = build(t, tmp_path, lower_percentile=0.0, upper_percentile=100.0)
    na = cell_means(ds, 100002, SODIUM_IDX)
    assert na[:11] == pytest.approx([130.0] * 11, abs=1e-3)
    assert na[10:15] == pytest.approx([130, 135, 140, 145, 150], abs=1e-3)
    assert na[14:] == pytest.approx([150.0] * 34, abs=1e-3)
    assert cell_means(ds, 100003, SODIUM_IDX) == pytest.approx([float(ds["median"][SODIUM_IDX])] * 48, abs=1e-3)
    assert not ds.mask.sel(sample=2).values[:, SODIUM_IDX].any()


def test_winsorize_and_scale_with_the_window_percentiles(tmp_path):
    t = baseline()
    t.admission(100002)
    values = np.arange(100.0, 148.0)     # one sodium per hour, 100 … 147
    for hour, v in enumerate(values):
        t.lab(100002, SODIUM, hour + 0.5, v)
    ds = build(t, tmp_path)
    all_values = np.concatenate([values, [filler_value("sodium")]])   # + the baseline's event
    p5, p50, p95 = np.percentile(all_values, [5, 50, 95])
    assert (float(ds.p5[SODIUM_IDX]), float(ds["median"][SODIUM_IDX]), float(ds.p95[SODIUM_IDX])) == \
        pytest.approx((p5, p50, p95))
    x = ds.x.sel(sample=1).values[:, SODIUM_IDX]
    assert x == pytest.approx(np.clip((values - p5) / (p95 - p5), 0, 1), abs=1e-6)
    assert x.dtype == np.float32 and x.min() == 0.0 and x.max() == 1.0


def test_lower_case_plain_csv_tables_are_read(tmp_path):
    t = baseline()
    t.admission(100002)
    ds = build_dataset(t.write(tmp_path / "lower", upper=False, gz=False), CFG)
    assert kept(ds) == {100001, 100002}


def test_a_table_there_twice_is_an_error_naming_both(tmp_path):
    """With PATIENTS.csv and PATIENTS.csv.gz both present the .csv was used silently."""
    t = baseline()
    folder = t.write(tmp_path / "mimic")
    plain = t.write(tmp_path / "plain", gz=False)
    shutil.copy(plain / "PATIENTS.csv", folder / "PATIENTS.csv")
    with pytest.raises(InputError, match=r"PATIENTS is there more than once \(PATIENTS\.csv, PATIENTS\.csv\.gz\)"):
        build_dataset(folder, CFG)


def test_a_header_only_chartevents_is_named(tmp_path):
    """An empty CHARTEVENTS named the folder ("the cohort is empty after rule 'span_rule'")."""
    t = baseline()
    folder = t.write(tmp_path / "mimic", gz=False)
    header = (folder / "CHARTEVENTS.csv").read_text().splitlines()[0]
    (folder / "CHARTEVENTS.csv").write_text(header + "\n")
    with pytest.raises(InputError, match=r"CHARTEVENTS\.csv: no event of the features kept \(0 rows read"):
        build_dataset(folder, CFG)


@pytest.mark.parametrize("bad", ["NaN", "nan", "inf", "-inf", "Infinity", "1e308", "-1e308", "-5"])
def test_non_finite_huge_and_negative_values_of_every_feature_never_reach_the_record(bad, tmp_path):
    """What prepare keeps is what the record-space box and the entry-error search start from: a value that
    is not finite, or outside the feature's range, must be dropped (then imputed), never stored."""
    from pipeline.attack.spaces.record import plausible_edits
    from pipeline.data.entry_errors import candidates
    from pipeline.data.record import feature_stats
    from pipeline.features import FEATURES

    t = baseline()
    icu = t.admission(100002)
    t.fill_every_feature(100002)
    for f in FEATURES:
        for itemid in f.all_itemids:
            if f.table == "LABEVENTS":
                t.lab(100002, itemid, 3.5, bad)
            else:
                t.chart(icu, itemid, 3.5, bad)
    ds = build(t, tmp_path)
    value, mask = ds["value"].values, ds["mask"].values
    lo, hi = np.array([f.lo for f in FEATURES]), np.array([f.hi for f in FEATURES])
    assert not mask[:, 3].any() and np.isnan(value[:, 3]).all()  # hour 3: every feature's bad event dropped
    recorded = value[mask]
    assert np.isfinite(recorded).all() and ((recorded > np.broadcast_to(lo, mask.shape)[mask])
                                            & (recorded <= np.broadcast_to(hi, mask.shape)[mask])).all()
    assert np.isfinite(ds.x.values).all()
    lower, upper = plausible_edits(value, mask, feature_stats(ds))
    assert np.isfinite(lower).all() and np.isfinite(upper).all() and (lower <= 0).all() and (upper >= 0).all()
    found = candidates(value[1], ds["count"].values[1], ["decimal", "transpose", "unit", "delete"])
    assert len(found.hour) > 0
