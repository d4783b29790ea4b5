"""The in-hospital death label of a MEDS dataset, and the evidence it rests on (docs/dataset.md, "MEDS input").
Used by meds.small_tables, which builds ADMISSIONS from the cohort's events."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

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

