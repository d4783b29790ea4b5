"""The synthetic MIMIC-III generator: real formats, every cohort and event rule has cases, deterministic."""

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.config import from_dict
from pipeline.data import synth as synth_module
from pipeline.data.synth import generate, synth
from pipeline.features import FAHRENHEIT_ITEMIDS, FEATURES, itemid_to_feature
from pipeline.infra.rundir import RunDir
from pipeline.metrics import auroc

pytestmark = pytest.mark.thirdparty  # the floors job runs these (tests/test_floors.py)

N, SEED = 300, 0
HOUR = np.timedelta64(3600, "s")

COLUMNS = {  # the MIMIC-III v1.4 full release
    "PATIENTS": "ROW_ID SUBJECT_ID GENDER DOB DOD DOD_HOSP DOD_SSN EXPIRE_FLAG",
    "ADMISSIONS": "ROW_ID SUBJECT_ID HADM_ID ADMITTIME DISCHTIME DEATHTIME ADMISSION_TYPE ADMISSION_LOCATION "
                  "DISCHARGE_LOCATION INSURANCE LANGUAGE RELIGION MARITAL_STATUS ETHNICITY EDREGTIME EDOUTTIME "
                  "DIAGNOSIS HOSPITAL_EXPIRE_FLAG HAS_CHARTEVENTS_DATA",
    "ICUSTAYS": "ROW_ID SUBJECT_ID HADM_ID ICUSTAY_ID DBSOURCE FIRST_CAREUNIT LAST_CAREUNIT FIRST_WARDID LAST_WARDID "
                "INTIME OUTTIME LOS",
    "LABEVENTS": "ROW_ID SUBJECT_ID HADM_ID ITEMID CHARTTIME VALUE VALUENUM VALUEUOM FLAG",
    "CHARTEVENTS": "ROW_ID SUBJECT_ID HADM_ID ICUSTAY_ID ITEMID CHARTTIME STORETIME CGID VALUE VALUENUM VALUEUOM "
                   "WARNING ERROR RESULTSTATUS STOPPED",
    "D_ITEMS": "ROW_ID ITEMID LABEL ABBREVIATION DBSOURCE LINKSTO CATEGORY UNITNAME PARAM_TYPE CONCEPTID",
    "D_LABITEMS": "ROW_ID ITEMID LABEL FLUID CATEGORY LOINC_CODE",
    "TRUE_RISK": "HADM_ID RISK HOSPITAL_EXPIRE_FLAG",
}
TIMES = {"PATIENTS": ["DOB", "DOD", "DOD_HOSP", "DOD_SSN"], "ADMISSIONS": ["ADMITTIME", "DISCHTIME", "DEATHTIME"],
         "ICUSTAYS": ["INTIME", "OUTTIME"], "LABEVENTS": ["CHARTTIME"], "CHARTEVENTS": ["CHARTTIME"]}
CHART_ITEMS, LAB_ITEMS = itemid_to_feature("CHARTEVENTS"), itemid_to_feature("LABEVENTS")
LO = {i: FEATURES[k].lo for m in (CHART_ITEMS, LAB_ITEMS) for i, k in m.items()}
HI = {i: FEATURES[k].hi for m in (CHART_ITEMS, LAB_ITEMS) for i, k in m.items()}


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("synth") / "raw"
    generate(path, N, SEED)
    return path


@pytest.fixture(scope="module")
def t(out) -> dict[str, pd.DataFrame]:
    """Every table, times as datetime64[s] (a shifted DOB is ~300 years before intime: too far for [ns])."""
    tables = {}
    for name in COLUMNS:
        df = pd.read_csv(out / f"{name}.csv.gz", low_memory=False)
        for col in TIMES.get(name, []):
            df[col] = np.array(df[col].fillna("NaT"), dtype="datetime64[s]")
        tables[name] = df
    return tables


@pytest.fixture(scope="module")
def stays(t) -> pd.DataFrame:
    """ICU stays with their admission and patient, hours of hospital and ICU stay, and age at intime."""
    m = t["ICUSTAYS"].merge(t["ADMISSIONS"], on=["SUBJECT_ID", "HADM_ID"]).merge(t["PATIENTS"], on="SUBJECT_ID")
    m["icu_h"] = (m.OUTTIME - m.INTIME) / HOUR
    m["hosp_h"] = (m.DISCHTIME - m.ADMITTIME) / HOUR
    m["age"] = (m.INTIME - m.DOB) / np.timedelta64(86400, "s") / 365.2425
    return m


@pytest.fixture(scope="module")
def first_stays(stays) -> pd.DataFrame:
    """The earliest stay of each admission (ties: the smallest ICUSTAY_ID)."""
    return stays.sort_values(["HADM_ID", "INTIME", "ICUSTAY_ID"]).drop_duplicates("HADM_ID")


def feature_rows(df: pd.DataFrame, items: dict[int, int]) -> pd.DataFrame:
    return df[df.ITEMID.isin(list(items))]


def celsius(df: pd.DataFrame) -> pd.Series:
    return df.VALUENUM.where(~df.ITEMID.isin(list(FAHRENHEIT_ITEMIDS)), (df.VALUENUM - 32) * 5 / 9)


def in_range(df: pd.DataFrame) -> pd.Series:
    v = celsius(df)
    return (v > df.ITEMID.map(LO)) & (v <= df.ITEMID.map(HI))


# ---- formats and determinism ----------------------------------------------------------------------------

def test_same_seed_gives_byte_identical_files(out, tmp_path):
    generate(tmp_path, N, SEED)
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted([f"{n}.csv.gz" for n in COLUMNS] + ["synth.json"])
    for name in names:
        assert (out / name).read_bytes() == (tmp_path / name).read_bytes(), name


def test_another_seed_gives_other_data(out, tmp_path):
    generate(tmp_path, N, SEED + 1)
    for name in ("ADMISSIONS", "ICUSTAYS", "CHARTEVENTS", "LABEVENTS", "TRUE_RISK"):
        assert (out / f"{name}.csv.gz").read_bytes() != (tmp_path / f"{name}.csv.gz").read_bytes(), name
    assert json.loads((tmp_path / "synth.json").read_text())["seed"] == SEED + 1


def test_headers_are_the_upper_case_mimic_iii_columns(out):
    for name, columns in COLUMNS.items():
        with gzip.open(out / f"{name}.csv.gz", "rt") as f:
            header = f.readline().strip().replace('"', "").split(",")
        assert header == columns.split(), name


def test_timestamps_look_like_mimic_and_stay_inside_pandas_range(out, t):
    with gzip.open(out / "ADMISSIONS.csv.gz", "rt") as f:
        f.readline()
        admittime = f.readline().split(",")[3]
    assert len(admittime) == 19 and admittime[4] == "-" and admittime[10] == " " and admittime[13] == ":"
    for name, cols in TIMES.items():
        for col in cols:
            years = t[name][col].dropna().dt.year
            assert years.min() >= 1700 and years.max() < 2262, (name, col)
    assert (t["ADMISSIONS"].ADMITTIME.dt.year).between(2090, 2200).all()


def test_ids_are_unique_and_mimic_like(t):
    assert t["PATIENTS"].SUBJECT_ID.is_unique and t["ADMISSIONS"].HADM_ID.is_unique
    assert t["ICUSTAYS"].ICUSTAY_ID.is_unique
    assert (t["ADMISSIONS"].HADM_ID >= 100000).all() and (t["ICUSTAYS"].ICUSTAY_ID >= 200000).all()
    for name in COLUMNS:
        if "ROW_ID" in t[name]:
            assert t[name].ROW_ID.is_unique, name
    assert set(t["ADMISSIONS"].SUBJECT_ID) == set(t["PATIENTS"].SUBJECT_ID)
    assert set(t["ICUSTAYS"].HADM_ID) == set(t["ADMISSIONS"].HADM_ID)
    assert set(t["CHARTEVENTS"].ICUSTAY_ID.dropna()) <= set(t["ICUSTAYS"].ICUSTAY_ID)
    assert t["ADMISSIONS"].SUBJECT_ID.value_counts().max() >= 2  # some subjects come back


def test_a_subjects_admissions_do_not_overlap_and_only_the_last_ends_in_death(t):
    a = t["ADMISSIONS"].sort_values(["SUBJECT_ID", "ADMITTIME"])
    same = a.SUBJECT_ID.values[1:] == a.SUBJECT_ID.values[:-1]
    assert same.any()
    assert (a.ADMITTIME.values[1:][same] > a.DISCHTIME.values[:-1][same]).all()
    assert (a.HOSPITAL_EXPIRE_FLAG.values[:-1][same] == 0).all()


def test_deaths_are_recorded_consistently(t):
    a = t["ADMISSIONS"]
    died = a.HOSPITAL_EXPIRE_FLAG == 1
    assert (a.DEATHTIME[died] == a.DISCHTIME[died]).all() and a.DEATHTIME[~died].isna().all()
    assert (a.DISCHARGE_LOCATION[died] == "DEAD/EXPIRED").all()
    assert (a.DISCHARGE_LOCATION[~died] != "DEAD/EXPIRED").all()
    p = t["PATIENTS"].set_index("SUBJECT_ID")
    dead_subjects = a.SUBJECT_ID[died]
    assert (p.loc[dead_subjects, "EXPIRE_FLAG"] == 1).all() and p.loc[dead_subjects, "DOD_HOSP"].notna().all()


# ---- items --------------------------------------------------------------------------------------------

def test_every_feature_itemid_appears_in_its_table(t):
    for f in FEATURES:
        seen = set(t[f.table].ITEMID)
        assert set(f.all_itemids) <= seen, f.name


def test_the_dbsource_of_a_stay_decides_its_item_family(t):
    families = t["D_ITEMS"].set_index("ITEMID").DBSOURCE
    ce = t["CHARTEVENTS"].merge(t["ICUSTAYS"][["ICUSTAY_ID", "DBSOURCE"]], on="ICUSTAY_ID")
    assert (ce.ITEMID.map(families) == ce.DBSOURCE).all()
    for family in ("carevue", "metavision"):
        items = set(ce.ITEMID[ce.DBSOURCE == family])
        assert sum(any(i in items for i in f.all_itemids) for f in FEATURES if f.table == "CHARTEVENTS") == 6


def test_dictionaries_name_every_item(t):
    d_items, d_lab = t["D_ITEMS"].set_index("ITEMID"), t["D_LABITEMS"].set_index("ITEMID")
    assert set(t["CHARTEVENTS"].ITEMID) <= set(d_items.index)
    assert set(t["LABEVENTS"].ITEMID) <= set(d_lab.index)
    assert d_items.LABEL[211] == d_items.LABEL[220045] == "Heart Rate"
    assert "Fahrenheit" in d_items.LABEL[223761] and d_items.LABEL[678] == "Temperature F"
    assert d_lab.LABEL[50813] == "Lactate" and d_lab.CATEGORY[50822] == "Blood Gas"
    assert (d_items.LINKSTO == "chartevents").all()


def test_most_rows_are_non_feature_items_in_both_tables(t, out):
    summary = json.loads((out / "synth.json").read_text())
    for name, items in (("CHARTEVENTS", CHART_ITEMS), ("LABEVENTS", LAB_ITEMS)):
        other = 1 - t[name].ITEMID.isin(list(items)).mean()
        assert other == pytest.approx(summary["noise_fraction"], abs=0.03), name


def test_values_have_realistic_units_and_medians(t):
    ce, le = t["CHARTEVENTS"], t["LABEVENTS"]
    units = ce.groupby("ITEMID").VALUEUOM.agg(lambda s: set(s.dropna()))
    assert units[223761] == {"?F"} and units[223762] == {"?C"}
    assert units[678] == {"Deg. F"} and units[676] == {"Deg. C"}
    assert units[211] == {"BPM"} and units[220045] == {"bpm"} and units[220210] == {"insp/min"}
    median = pd.concat([ce, le]).groupby("ITEMID").VALUENUM.median()
    expected = {211: (75, 100), 220045: (75, 100), 455: (100, 135), 220179: (100, 135), 8441: (50, 75),
                646: (94, 100), 220277: (94, 100), 618: (15, 23), 220210: (15, 23), 676: (36.3, 37.5),
                223762: (36.3, 37.5), 678: (97.2, 99.5), 223761: (97.2, 99.5), 50820: (7.3, 7.45),
                50983: (134, 144), 50912: (0.6, 2), 51265: (120, 280), 50813: (1, 4), 50822: (3.5, 4.8)}
    for item, (lo, hi) in expected.items():
        assert lo <= median[item] <= hi, (item, median[item])


def test_vitals_are_hourly_labs_every_4_to_24_h_and_blood_gases_sparser(t, first_stays):
    hr = t["CHARTEVENTS"][t["CHARTEVENTS"].ITEMID.isin([211, 220045])].sort_values(["ICUSTAY_ID", "CHARTTIME"])
    gap = hr.groupby("ICUSTAY_ID").CHARTTIME.diff().dropna() / HOUR
    assert 0.7 <= gap.median() <= 1.1
    le = t["LABEVENTS"].dropna(subset=["HADM_ID"])
    sodium = le[le.ITEMID == 50983].sort_values(["HADM_ID", "CHARTTIME"])
    gap = sodium.groupby("HADM_ID").CHARTTIME.diff().dropna() / HOUR
    assert 4 <= gap.median() <= 24
    ph = le[le.ITEMID == 50820]
    assert len(ph) < len(sodium) / 2 and ph.HADM_ID.nunique() < len(first_stays)


# ---- every cohort rule has cases --------------------------------------------------------------------------

def test_admissions_without_chartevents_have_icu_stays_but_no_rows(t):
    a = t["ADMISSIONS"]
    none = set(a.HADM_ID[a.HAS_CHARTEVENTS_DATA == 0])
    assert none and set(a.HAS_CHARTEVENTS_DATA) == {0, 1}
    assert none <= set(t["ICUSTAYS"].HADM_ID)
    assert not none & set(t["CHARTEVENTS"].HADM_ID)
    assert none & set(t["LABEVENTS"].HADM_ID)


def test_minors_and_shifted_dobs_of_patients_over_89(first_stays):
    assert (first_stays.age < 18).any() and (first_stays.age < 1).any()  # newborns too
    old = first_stays[first_stays.age > 89]
    assert (old.age > 250).any() and (old.DOB.dt.year >= 1700).all()
    # some of them pass every other rule: they must stay in the cohort
    assert ((old.age > 250) & (old.HAS_CHARTEVENTS_DATA == 1) & (old.hosp_h >= 24) & (old.icu_h >= 48)).any()


def test_short_hospital_stays_some_with_an_icu_stay_over_24_h(stays):
    short = stays[stays.hosp_h < 24]
    assert len(short)
    assert (short.icu_h >= 24).any()  # only the hospital-stay rule removes these


def test_short_icu_stays_in_long_hospital_stays(stays):
    assert ((stays.icu_h < 24) & (stays.hosp_h >= 24)).any()


def test_several_icu_stays_per_admission(stays):
    several = stays[stays.duplicated("HADM_ID", keep=False)].sort_values(["HADM_ID", "INTIME", "ICUSTAY_ID"])
    first = several.drop_duplicates("HADM_ID")
    later = several[~several.index.isin(first.index)]
    assert several.HADM_ID.nunique() >= 3
    # the earliest intime wins even where a later stay has the smaller id
    smallest_id = several.groupby("HADM_ID").ICUSTAY_ID.min()
    assert (first.set_index("HADM_ID").ICUSTAY_ID != smallest_id[first.HADM_ID]).any()
    # an earliest stay under 24 h, followed by one that passes
    short_first = first.HADM_ID[first.icu_h < 24]
    assert (later.HADM_ID.isin(short_first) & (later.icu_h >= 24)).any()


def test_intime_ties_where_the_smaller_icustay_id_is_the_stay_with_data(stays, t):
    tied = stays[stays.duplicated(["HADM_ID", "INTIME"], keep=False)].sort_values(["HADM_ID", "ICUSTAY_ID"])
    assert tied.HADM_ID.nunique() >= 2
    assert (tied.icu_h >= 24).all()  # both pass the 24 h rule: the tie decides
    winner = tied.drop_duplicates("HADM_ID")
    assert (winner.icu_h >= 47).all()
    n_rows = t["CHARTEVENTS"].ICUSTAY_ID.value_counts()
    loser = tied[~tied.index.isin(winner.index)]
    assert (n_rows.reindex(winner.ICUSTAY_ID).values > n_rows.reindex(loser.ICUSTAY_ID).fillna(0).values).all()


# ---- every event rule has cases ---------------------------------------------------------------------------

def test_chartevents_error_rows_on_features(t):
    ce = t["CHARTEVENTS"].merge(t["ICUSTAYS"][["ICUSTAY_ID", "DBSOURCE"]], on="ICUSTAY_ID")
    assert set(ce.ERROR.dropna().unique()) == {0, 1}
    errors = feature_rows(ce[ce.ERROR == 1], CHART_ITEMS)
    assert len(errors) and in_range(errors).mean() > 0.9  # a plausible wrong value: only ERROR tells
    assert (ce.ERROR == 1).mean() < 0.01
    assert ce.ERROR[ce.DBSOURCE == "carevue"].isna().all()  # CareVue leaves ERROR empty
    assert (ce.ERROR[ce.DBSOURCE == "metavision"] == 0).mean() > 0.99


def test_labevents_without_hadm_id_some_inside_an_icu_window(t, first_stays):
    le = feature_rows(t["LABEVENTS"], LAB_ITEMS)
    orphans = le[le.HADM_ID.isna()].merge(first_stays[["SUBJECT_ID", "INTIME"]], on="SUBJECT_ID")
    assert len(orphans) and le.HADM_ID.notna().mean() > 0.8
    hours = (orphans.CHARTTIME - orphans.INTIME) / HOUR
    assert ((hours >= 0) & (hours < 48)).any()  # a join on subject and time would wrongly take them


def test_chartevents_without_icustay_id_inside_their_stay(t, first_stays):
    ce = feature_rows(t["CHARTEVENTS"], CHART_ITEMS)
    orphans = ce[ce.ICUSTAY_ID.isna()]
    assert len(orphans) and orphans.HADM_ID.notna().all() and ce.ICUSTAY_ID.notna().mean() > 0.99
    merged = orphans.merge(first_stays[["HADM_ID", "INTIME"]], on="HADM_ID")
    hours = (merged.CHARTTIME - merged.INTIME) / HOUR
    assert ((hours >= 0) & (hours < 48)).any()  # a join on HADM_ID and time would wrongly take them


@pytest.mark.parametrize("table", ["CHARTEVENTS", "LABEVENTS"])
def test_feature_rows_with_empty_valuenum_carry_a_text(t, table):
    rows = feature_rows(t[table], CHART_ITEMS if table == "CHARTEVENTS" else LAB_ITEMS)
    empty = rows[rows.VALUENUM.isna()]
    assert len(empty) and empty.VALUE.notna().all()
    assert set(empty.VALUE) <= {"ERROR", "UNABLE TO REPORT", "Not Done", "HEMOLYZED", "NOT DONE"}
    numeric = rows[rows.VALUENUM.notna()]
    assert (pd.to_numeric(numeric.VALUE) == numeric.VALUENUM).all()


@pytest.mark.parametrize("table", ["CHARTEVENTS", "LABEVENTS"])
def test_out_of_range_values(t, table):
    rows = feature_rows(t[table], CHART_ITEMS if table == "CHARTEVENTS" else LAB_ITEMS).dropna(subset=["VALUENUM"])
    outside = rows[~in_range(rows)]
    assert 0 < len(outside) < 0.01 * len(rows)
    if table == "CHARTEVENTS":
        hr = outside[outside.ITEMID.isin([211, 220045])].VALUENUM
        assert set(hr) & {0, 999, -1}
        assert (celsius(rows[rows.ITEMID.isin(list(FAHRENHEIT_ITEMIDS))]).between(30, 43)).mean() > 0.98


def test_temperatures_partly_in_fahrenheit(t):
    temp = t["CHARTEVENTS"][t["CHARTEVENTS"].ITEMID.isin([676, 678, 223761, 223762])]
    fahrenheit = temp.ITEMID.isin(list(FAHRENHEIT_ITEMIDS))
    assert 0.3 < fahrenheit.mean() < 0.95
    assert temp.VALUENUM[fahrenheit].median() == pytest.approx(98.5, abs=1)


def test_events_before_intime_and_after_48_h(t, first_stays):
    labs = feature_rows(t["LABEVENTS"], LAB_ITEMS).merge(first_stays[["HADM_ID", "INTIME"]], on="HADM_ID")
    hours = (labs.CHARTTIME - labs.INTIME) / HOUR
    assert (hours < 0).any() and (hours >= 48).any()
    chart = feature_rows(t["CHARTEVENTS"], CHART_ITEMS).merge(first_stays[["ICUSTAY_ID", "INTIME"]], on="ICUSTAY_ID")
    hours = (chart.CHARTTIME - chart.INTIME) / HOUR
    assert (hours < 0).any() and (hours >= 48).any()


def test_span_rule_cases_late_start_and_early_end(t, first_stays):
    """Stays that pass rules 2–4 but whose kept events start after 1 h or end before 47 h."""
    ce, le = t["CHARTEVENTS"], t["LABEVENTS"]
    chart = feature_rows(ce[ce.ERROR != 1], CHART_ITEMS).dropna(subset=["VALUENUM"])
    labs = feature_rows(le, LAB_ITEMS).dropna(subset=["VALUENUM", "HADM_ID"])
    chart = chart[in_range(chart)].merge(first_stays[["ICUSTAY_ID", "HADM_ID", "INTIME"]], on=["ICUSTAY_ID", "HADM_ID"])
    labs = labs[in_range(labs)].merge(first_stays[["HADM_ID", "INTIME"]], on="HADM_ID")
    events = pd.concat([chart[["HADM_ID", "CHARTTIME", "INTIME"]], labs[["HADM_ID", "CHARTTIME", "INTIME"]]])
    hours = ((events.CHARTTIME - events.INTIME) / HOUR).groupby(events.HADM_ID).agg(["min", "max"])
    passing = first_stays[(first_stays.HAS_CHARTEVENTS_DATA == 1) & (first_stays.age >= 18)
                          & (first_stays.hosp_h >= 24) & (first_stays.icu_h >= 24)].set_index("HADM_ID")
    hours = hours.reindex(passing.index)
    assert (hours["min"] > 1).any()
    assert (hours["max"] < 47).any()
    early_end = passing[hours["max"] < 47]
    assert early_end.HOSPITAL_EXPIRE_FLAG.mean() > passing.HOSPITAL_EXPIRE_FLAG.mean()  # deaths cut stays short
    # charting that starts late but is rescued by labs from before the ICU stay
    chart_start = ((chart.CHARTTIME - chart.INTIME) / HOUR).groupby(chart.HADM_ID).min().reindex(passing.index)
    assert ((chart_start > 1) & (hours["min"] <= 1)).any()


# ---- the true risk ----------------------------------------------------------------------------------------

def test_true_risk_has_one_row_per_admission_and_matches_the_label(t):
    risk, a = t["TRUE_RISK"], t["ADMISSIONS"]
    assert len(risk) == len(a) == N and risk.HADM_ID.is_unique
    merged = risk.merge(a[["HADM_ID", "HOSPITAL_EXPIRE_FLAG"]], on="HADM_ID", suffixes=("", "_a"))
    assert len(merged) == N and (merged.HOSPITAL_EXPIRE_FLAG == merged.HOSPITAL_EXPIRE_FLAG_a).all()
    assert risk.RISK.between(0, 1).all()


def test_oracle_auroc_is_the_auroc_of_the_true_risk(t, out):
    summary = json.loads((out / "synth.json").read_text())
    risk, y = t["TRUE_RISK"].RISK.values, t["TRUE_RISK"].HOSPITAL_EXPIRE_FLAG.values.astype(bool)
    pairs = (risk[y][:, None] > risk[~y][None, :]).mean() + 0.5 * (risk[y][:, None] == risk[~y][None, :]).mean()
    assert summary["oracle_auroc"] == pytest.approx(pairs, abs=1e-12)
    assert 0.75 < summary["oracle_auroc"] < 0.95


def test_mortality_rate_is_plausible(t, out):
    rate = t["ADMISSIONS"].HOSPITAL_EXPIRE_FLAG.mean()
    assert 0.06 < rate < 0.2
    summary = json.loads((out / "synth.json").read_text())
    assert summary["mortality_rate"] == pytest.approx(rate)
    assert summary["seed"] == SEED and summary["admissions"] == N
    assert summary["rows"] == {name: len(t[name]) for name in COLUMNS}
    assert all(n > 0 for n in summary["scenarios"].values())


def test_auroc_by_ranks_handles_ties():
    score, label = np.array([0.1, 0.4, 0.4, 0.8, 0.4]), np.array([0, 0, 1, 1, 1])
    pos, neg = score[label == 1], score[label == 0]
    pairs = ((pos[:, None] > neg) + 0.5 * (pos[:, None] == neg)).mean()
    assert auroc(score, label) == pytest.approx(pairs)
    assert auroc(np.array([1.0, 2.0]), np.array([0, 1])) == 1.0
    assert np.isnan(auroc(np.array([1.0, 2.0]), np.array([1, 1])))


def test_tiny_and_bad_sizes(tmp_path):
    summary = generate(tmp_path / "one", 1, 3)
    assert summary["rows"]["ADMISSIONS"] == 1 and summary["rows"]["TRUE_RISK"] == 1
    with pytest.raises(ValueError):
        generate(tmp_path / "none", 0, 3)
    with pytest.raises(ValueError):
        generate(tmp_path / "all noise", 10, 3, noise_fraction=1.0)


# ---- the stage --------------------------------------------------------------------------------------------

def test_stage_writes_raw_atomically(tmp_path, caplog):
    cfg = from_dict({"run": {"seed": 4}, "synth": {"admissions": 40}})
    run = RunDir(tmp_path / "run")
    caplog.set_level("INFO", logger="pipeline.data.synth")
    synth(cfg, run)
    assert sorted(p.name for p in run.path.iterdir()) == ["raw"]  # no temporary left behind
    summary = json.loads((run / "raw" / "synth.json").read_text())
    assert summary["seed"] == 4 and summary["admissions"] == 40
    assert "oracle AUROC" in caplog.text


def test_failed_stage_leaves_no_raw(tmp_path, monkeypatch):
    def crash(out_dir, *args, **kwargs):
        Path(out_dir).mkdir(parents=True)
        (Path(out_dir) / "PATIENTS.csv.gz").write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(synth_module.stage, "generate", crash)  # where synth() looks it up
    run = RunDir(tmp_path / "run")
    with pytest.raises(OSError):
        synth(from_dict({"synth": {"admissions": 10}}), run)
    assert not run.path.exists() or list(run.path.iterdir()) == []
