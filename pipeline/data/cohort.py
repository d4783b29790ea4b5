"""The cohort: one ICU stay per hospital admission, adults, stays of at least a day (docs/dataset.md).

Works on the small tables (PATIENTS, ADMISSIONS, ICUSTAYS) in pandas; returns the chosen stays and
the number left after every rule, so that attrs and the README can show where samples went.
"""

from __future__ import annotations

import pandas as pd

from pipeline.config import PrepareConfig
from pipeline.errors import InputError

DAYS_PER_YEAR = 365.2425
HOUR = pd.Timedelta(hours=1)


def _keep(stays: pd.DataFrame, keep: pd.Series, rule: str, counts: dict[str, int]) -> pd.DataFrame:
    stays = stays[keep.fillna(False).to_numpy(bool)]
    counts[rule] = len(stays)
    if stays.empty:
        raise InputError(f"the cohort is empty after rule '{rule}' (counts so far: {counts})")
    return stays


def build_cohort(patients: pd.DataFrame, admissions: pd.DataFrame, icustays: pd.DataFrame,
                 cfg: PrepareConfig) -> tuple[pd.DataFrame, dict[str, int]]:
    """Chosen ICU stays (one row per admission, sorted by hadm_id) and counts after each rule.

    Columns: subject_id, hadm_id, icustay_id, intime, y.
    """
    counts = {"icu_stays": len(icustays)}
    if icustays.empty:
        raise InputError("the cohort is empty: ICUSTAYS has no rows")
    admissions = admissions.drop(columns="subject_id")
    stays = icustays.merge(admissions, on="hadm_id", how="inner").merge(patients, on="subject_id", how="inner")
    counts["joined_admission_and_patient"] = len(stays)
    if stays.empty:
        raise InputError(f"the cohort is empty after joining ICUSTAYS to ADMISSIONS and PATIENTS ({counts})")
    if cfg.require_chartevents_data:
        stays = _keep(stays, stays.has_chartevents_data == 1, "has_chartevents_data", counts)
    # MIMIC shifts the DOB of patients over 89 to ~300 years before admission: they stay in (adults)
    age = (stays.intime - stays.dob).dt.total_seconds() / 86400 / DAYS_PER_YEAR
    stays = _keep(stays, age >= cfg.min_age_years, "adult", counts)
    hospital_hours = (stays.dischtime - stays.admittime) / HOUR
    stays = _keep(stays, hospital_hours >= cfg.min_hospital_hours, "hospital_stay", counts)
    icu_hours = (stays.outtime - stays.intime) / HOUR
    stays = _keep(stays, icu_hours >= cfg.min_icu_hours, "icu_stay", counts)
    # one stay per admission: the earliest intime, ties broken by the smaller icustay_id
    stays = stays.sort_values(["hadm_id", "intime", "icustay_id"]).drop_duplicates("hadm_id", keep="first")
    counts["first_icu_stay"] = len(stays)
    stays = stays.rename(columns={"hospital_expire_flag": "y"})
    cohort = stays[["subject_id", "hadm_id", "icustay_id", "intime", "y"]].reset_index(drop=True)
    return cohort, counts
