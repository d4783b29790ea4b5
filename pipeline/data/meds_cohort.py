"""The cohort events of a MEDS dataset, checked and labelled: exact duplicates dropped, ids with one owner,
and the in-hospital death label with the evidence it rests on (docs/dataset.md, "MEDS input"). Used by
meds.read, and PATIENTS, ADMISSIONS and ICUSTAYS built from them (small_tables)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.errors import InputError

COHORT_EVENTS = ("birth", "death", "hospital_admission", "hospital_discharge", "icu_admission", "icu_discharge")
# the small table each cohort event stands for: its exact duplicates are counted there, as the CSV path counts
# a doubled row
TABLE_OF_EVENT = {"birth": "PATIENTS", "death": "PATIENTS", "hospital_admission": "ADMISSIONS",
                  "hospital_discharge": "ADMISSIONS", "icu_admission": "ICUSTAYS", "icu_discharge": "ICUSTAYS"}

DEATH_GRACE = pd.Timedelta(hours=24)
LABEL_EVIDENCE = ("discharge_disposition", "death_time", "death_date", "no_death")


def died_in_hospital(admissions: pd.DataFrame, events: pd.DataFrame, died_at_discharge: re.Pattern | None,
                     admission_id: str) -> tuple[np.ndarray, np.ndarray]:
    """Per admission, whether the patient died in hospital (0/1) and the evidence it rests on (LABEL_EVIDENCE).

    - `discharge_disposition`: the map names the discharge codes that mean death (`died_at_discharge`; the
      MIMIC-IV ETL writes `HOSPITAL_DISCHARGE//DIED`, MIMIC-III-shaped data `…//DEAD/EXPIRED`) and the
      admission has a discharge code: the label is exactly what the hospital recorded.
    - `death_time`: a timed death from admission to DEATH_GRACE after discharge (MIMIC's deathtime can trail
      its dischtime by up to a day), unless it falls in a later admission of the subject (a death during a
      readmission within a day belongs to that readmission).
    - `death_date`: a death known by its date only — the ETLs write a date of death at midnight — counts only
      from the admission's day to its discharge, never after: a patient discharged alive whose date of death
      is the next day did not die in hospital.
    """
    deaths = events[events.event == "death"].groupby("subject_id")["time"].min()
    died = admissions.subject_id.map(deaths)
    date_only = died.notna() & (died == died.dt.normalize())
    later = admissions.sort_values("admittime").groupby("subject_id")["admittime"].shift(-1).reindex(admissions.index)
    timed = (died >= admissions.admittime) & (died <= admissions.dischtime + DEATH_GRACE) & ~(died >= later)
    dated = (died >= admissions.admittime.dt.normalize()) & (died <= admissions.dischtime)
    flag = np.where(date_only, dated, timed)
    evidence = np.where(date_only, "death_date", "death_time")
    evidence = np.where(flag, evidence, "no_death")
    if died_at_discharge is not None:
        codes = events[events.event == "hospital_discharge"].dropna(subset=[admission_id])
        codes = codes.groupby(codes[admission_id].astype(np.int64))["code"].agg(list)
        listed = admissions.hadm_id.astype(np.int64).map(codes)
        known = listed.notna().to_numpy()
        said = listed.map(lambda c: isinstance(c, list) and any(died_at_discharge.search(x) for x in c))
        flag = np.where(known, said.fillna(False).to_numpy(bool), flag)
        evidence = np.where(known, "discharge_disposition", evidence)
    return flag.astype(np.int64), evidence


def drop_duplicate_cohort_events(events: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """The cohort's events without those identical to an earlier one in every column read (a shard written
    twice), and how many were dropped per small table (TABLE_OF_EVENT), as the CSV path counts doubled rows."""
    doubled = events.duplicated(events.columns.drop("file").tolist(), keep="first")
    per_table = events.event[doubled].map(TABLE_OF_EVENT).value_counts()
    return events[~doubled], {t: int(per_table.get(t, 0)) for t in ("PATIENTS", "ADMISSIONS", "ICUSTAYS")}


def check_one_owner(events: pd.DataFrame, column: str, owner: str, files: list[Path]) -> None:
    """Each id of `column` (an admission or a stay) on the cohort's events belongs to one `owner` (a subject,
    an admission): else one line naming the file, the id and both owners. The CSV path refuses a key on two
    different rows; first() here gave the admission to one subject and silently lost a sample."""
    if column == owner:
        return
    rows = events.dropna(subset=[column, owner])
    owners = rows.groupby(column)[owner].nunique()
    if not (owners > 1).any():
        return
    value = owners.index[owners > 1][0]
    mine = rows[rows[column] == value]
    first, second = mine[owner].unique()[:2]
    path = files[mine.file[mine[owner] == second].iloc[0]]
    raise InputError(f"{path}: {column} {int(value)} on the events of {owner} {int(first)} and of {owner} "
                     f"{int(second)}; an id of {column} belongs to one {owner}")


def small_tables(events: pd.DataFrame, fmap, root: Path, charted: set) -> dict[str, pd.DataFrame]:
    """PATIENTS, ADMISSIONS and ICUSTAYS as cohort.py reads them, from the cohort's MEDS events.

    In-hospital death (hospital_expire_flag): :func:`died_in_hospital`. has_chartevents_data: one of the admission's
    ICU stays (`charted`) names an event other than its admission and discharge, as MIMIC's flag says
    that the stay has chart events (MEDS has no such flag).
    """
    def first(kind: str, by: str, name: str) -> pd.Series:
        rows = events[events.event == kind].dropna(subset=[by])
        return rows.sort_values("time").groupby(rows[by].astype(np.int64))["time"].first().rename(name)

    for kind in COHORT_EVENTS:
        if not (events.event == kind).any():
            raise InputError(f"{root}: no {kind.replace('_', ' ')} event (codes matching "
                             f"{fmap.cohort[kind].pattern!r} of the feature map {fmap.name})")
    adm, stay = fmap.admission_id, fmap.stay_id
    patients = first("birth", "subject_id", "dob").reset_index().rename(columns={"index": "subject_id"})
    hosp = events[events.event == "hospital_admission"].dropna(subset=[adm])
    admissions = pd.concat([hosp.groupby(hosp[adm].astype(np.int64))["subject_id"].first(),
                            first("hospital_admission", adm, "admittime"),
                            first("hospital_discharge", adm, "dischtime")], axis=1).dropna()
    admissions.index.name = "hadm_id"
    admissions = admissions.reset_index()
    admissions["hospital_expire_flag"], admissions["label_from"] = died_in_hospital(
        admissions, events, fmap.died_at_discharge, fmap.admission_id)
    icu = events[events.event == "icu_admission"].dropna(subset=[stay])
    ids = icu.groupby(icu[stay].astype(np.int64)).agg(subject_id=("subject_id", "first"), hadm_id=(adm, "first"))
    icustays = pd.concat([ids, first("icu_admission", stay, "intime"), first("icu_discharge", stay, "outtime")],
                         axis=1).dropna()  # named aggregation: adm may be subject_id itself (eICU)
    icustays.index.name = "icustay_id"
    icustays = icustays.reset_index()
    stays_with_chart = set(icustays.hadm_id[icustays.icustay_id.isin(charted)].astype(np.int64))
    admissions["has_chartevents_data"] = admissions.hadm_id.isin(stays_with_chart).astype(np.int64)
    for frame, cols in ((patients, ["subject_id"]), (admissions, ["subject_id", "hadm_id"]),
                        (icustays, ["subject_id", "hadm_id", "icustay_id"])):
        for c in cols:
            frame[c] = frame[c].astype(np.int64)
    times = ((patients, ["dob"]), (admissions, ["admittime", "dischtime"]), (icustays, ["intime", "outtime"]))
    for frame, cols in times:
        for c in cols:
            frame[c] = frame[c].astype("datetime64[s]")
    return {"PATIENTS": patients, "ADMISSIONS": admissions, "ICUSTAYS": icustays}
