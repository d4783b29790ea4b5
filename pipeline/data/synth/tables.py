"""The small tables: PATIENTS, ADMISSIONS, ICUSTAYS, D_ITEMS, D_LABITEMS, and TRUE_RISK (each admission's
true risk and label, for checking a model against the oracle).

Each is built whole from the drawn admissions, its ROW_IDs numbered in MIMIC's row order
(:func:`sort_rows`); the descriptive columns (insurance, language, care units, …) are drawn with
realistic frequencies.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.data.synth.admissions import Admissions
from pipeline.data.synth.items import CHART_FEATURE_ITEMS, CHART_NOISE_ITEMS, LAB_FEATURE_ITEMS, LAB_NOISE_ITEMS
from pipeline.data.synth.units import DAY_S, DBSOURCES, METAVISION, YEAR_DAYS, day, minute, timestamps, to_seconds

CAREUNITS = ("MICU", "SICU", "CCU", "TSICU", "CSRU")
CAREUNIT_P = (0.45, 0.15, 0.15, 0.12, 0.13)
WARDS = {"MICU": (50, 52, 23), "SICU": (33, 57), "CCU": (7, 57), "TSICU": (14, 33), "CSRU": (12, 15), "NICU": (56,)}
DISCHARGE = (("HOME", 0.3), ("HOME HEALTH CARE", 0.25), ("SNF", 0.25), ("REHAB/DISTINCT PART HOSP", 0.12),
             ("LONG TERM CARE HOSPITAL", 0.05), ("HOSPICE-HOME", 0.03))
INSURANCE = (("Medicare", 0.5), ("Private", 0.33), ("Medicaid", 0.1), ("Government", 0.04), ("Self Pay", 0.03))
LANGUAGE = (("ENGL", 0.55), (None, 0.35), ("SPAN", 0.05), ("RUSS", 0.03), ("PTUN", 0.02))
RELIGION = (("CATHOLIC", 0.35), ("NOT SPECIFIED", 0.2), ("UNOBTAINABLE", 0.15), ("PROTESTANT QUAKER", 0.13),
            ("JEWISH", 0.1), ("OTHER", 0.05), (None, 0.02))
MARITAL = (("MARRIED", 0.45), ("SINGLE", 0.25), ("WIDOWED", 0.13), ("DIVORCED", 0.06), (None, 0.11))
ETHNICITY = (("WHITE", 0.7), ("BLACK/AFRICAN AMERICAN", 0.09), ("UNKNOWN/NOT SPECIFIED", 0.08),
             ("HISPANIC OR LATINO", 0.04), ("ASIAN", 0.03), ("OTHER", 0.03), ("HISPANIC/LATINO - PUERTO RICAN", 0.03))
DIAGNOSIS = ("SEPSIS", "PNEUMONIA", "CONGESTIVE HEART FAILURE", "CORONARY ARTERY DISEASE", "GASTROINTESTINAL BLEED",
             "INTRACRANIAL HEMORRHAGE", "ALTERED MENTAL STATUS", "CHEST PAIN", "FEVER", "RESPIRATORY FAILURE",
             "S/P FALL")


def categorical(rng: np.random.Generator, options: tuple[tuple[str | None, float], ...], n: int) -> pa.Array:
    values = [v for v, _ in options]
    p = np.array([q for _, q in options])
    return pa.array(np.array(values, dtype=object)[rng.choice(len(values), n, p=p / p.sum())], pa.string())


def sort_rows(table: pa.Table, *keys: str) -> pa.Table:
    table = table.sort_by([(k, "ascending") for k in keys])
    return table.set_column(0, "ROW_ID", pa.array(np.arange(1, table.num_rows + 1)))


def patients_table(rng: np.random.Generator, adm: Admissions) -> pa.Table:
    """One row per subject; DOB and death from the subject's last admission."""
    last = np.lexsort((adm.ref, adm.subject))
    last = last[np.append(adm.subject[last][1:] != adm.subject[last][:-1], True)]
    n = last.size
    dob = day(adm.ref[last] - np.round(adm.age[last] * YEAR_DAYS * DAY_S).astype(np.int64))
    died = adm.died[last]
    disch = to_seconds(adm.ref[last], adm.disch[last])
    later = ~died & (rng.random(n) < 0.35)  # died after the hospital stay (social security records)
    dod = day(np.where(died, disch, disch + rng.integers(10, 2000, n) * DAY_S))
    has_dod = died | later
    return sort_rows(pa.table({
        "ROW_ID": np.zeros(n, np.int64),
        "SUBJECT_ID": adm.subject_id[last],
        "GENDER": pa.array(np.where(rng.random(n) < 0.56, "M", "F")),
        "DOB": timestamps(dob),
        "DOD": timestamps(dod, ~has_dod),
        "DOD_HOSP": timestamps(dod, ~died),
        "DOD_SSN": timestamps(dod, ~(later | (died & (rng.random(n) < 0.7)))),
        "EXPIRE_FLAG": has_dod.astype(np.int64),
    }), "SUBJECT_ID")


def admissions_table(rng: np.random.Generator, adm: Admissions) -> pa.Table:
    n = adm.ref.size
    admit = minute(to_seconds(adm.ref, adm.admit))
    disch = minute(to_seconds(adm.ref, adm.disch))
    ed = adm.ed
    elective = ~ed & (rng.random(n) < 0.6)
    newborn = adm.age < 0.1
    urgent = rng.random(n) < 0.5
    kind = np.where(ed, "EMERGENCY", np.where(elective, "ELECTIVE", np.where(urgent, "URGENT", "EMERGENCY")))
    location = np.where(ed, "EMERGENCY ROOM ADMIT", np.array(
        ["PHYS REFERRAL/NORMAL DELI", "TRANSFER FROM HOSP/EXTRAM", "CLINIC REFERRAL/PREMATURE",
         "TRANSFER FROM SKILLED NUR"])[rng.choice(4, n, p=[0.4, 0.35, 0.2, 0.05])])
    discharge = pc.if_else(pa.array(adm.died), "DEAD/EXPIRED", categorical(rng, DISCHARGE, n))
    diagnosis = np.where(newborn, "NEWBORN", np.array(DIAGNOSIS)[rng.integers(0, len(DIAGNOSIS), n)])
    return sort_rows(pa.table({
        "ROW_ID": np.zeros(n, np.int64),
        "SUBJECT_ID": adm.subject_id,
        "HADM_ID": adm.hadm_id,
        "ADMITTIME": timestamps(admit),
        "DISCHTIME": timestamps(disch),
        "DEATHTIME": timestamps(disch, ~adm.died),
        "ADMISSION_TYPE": pa.array(np.where(newborn, "NEWBORN", kind)),
        "ADMISSION_LOCATION": pa.array(location),
        "DISCHARGE_LOCATION": discharge,
        "INSURANCE": categorical(rng, INSURANCE, n),
        "LANGUAGE": categorical(rng, LANGUAGE, n),
        "RELIGION": categorical(rng, RELIGION, n),
        "MARITAL_STATUS": categorical(rng, MARITAL, n),
        "ETHNICITY": categorical(rng, ETHNICITY, n),
        "EDREGTIME": timestamps(admit - rng.integers(60, 480, n) * 60, ~ed),
        "EDOUTTIME": timestamps(admit + rng.integers(0, 90, n) * 60, ~ed),
        "DIAGNOSIS": pa.array(diagnosis),
        "HOSPITAL_EXPIRE_FLAG": adm.died.astype(np.int64),
        "HAS_CHARTEVENTS_DATA": adm.has_chart.astype(np.int64),
    }), "SUBJECT_ID", "ADMITTIME")


def icustays_table(rng: np.random.Generator, adm: Admissions) -> pa.Table:
    s = adm.stays
    n = s.adm.size
    intime = to_seconds(adm.ref[s.adm], s.intime)
    outtime = to_seconds(adm.ref[s.adm], s.outtime)
    first = np.array(CAREUNITS)[rng.choice(len(CAREUNITS), n, p=CAREUNIT_P)]
    first = np.where(adm.age[s.adm] < 1, "NICU", first)
    moved = (rng.random(n) < 0.1) & (first != "NICU")
    last = np.where(moved, np.array(CAREUNITS)[rng.integers(0, len(CAREUNITS), n)], first)
    ward = {unit: np.array(ids) for unit, ids in WARDS.items()}

    def ward_of(units: np.ndarray) -> np.ndarray:
        out = np.zeros(n, np.int64)
        for unit, ids in ward.items():
            i = np.flatnonzero(units == unit)
            out[i] = ids[rng.integers(0, ids.size, i.size)]
        return out

    return sort_rows(pa.table({
        "ROW_ID": np.zeros(n, np.int64),
        "SUBJECT_ID": adm.subject_id[s.adm],
        "HADM_ID": adm.hadm_id[s.adm],
        "ICUSTAY_ID": s.icustay_id,
        "DBSOURCE": pa.array(np.array(DBSOURCES)[adm.family[s.adm]]),
        "FIRST_CAREUNIT": pa.array(first),
        "LAST_CAREUNIT": pa.array(last),
        "FIRST_WARDID": ward_of(first),
        "LAST_WARDID": ward_of(last),
        "INTIME": timestamps(intime),
        "OUTTIME": timestamps(outtime),
        "LOS": np.round((outtime - intime) / DAY_S, 4),
    }), "SUBJECT_ID", "INTIME", "ICUSTAY_ID")


def true_risk_table(adm: Admissions) -> pa.Table:
    table = pa.table({"HADM_ID": adm.hadm_id, "RISK": adm.risk, "HOSPITAL_EXPIRE_FLAG": adm.died.astype(np.int64)})
    return table.sort_by("HADM_ID")


def _text(values: Iterable[str]) -> pa.Array:
    return pa.array([v or None for v in values], pa.string())


def d_items_table() -> pa.Table:
    items = sorted(CHART_FEATURE_ITEMS + CHART_NOISE_ITEMS, key=lambda i: i.itemid)
    metavision = [i.family == METAVISION for i in items]
    return pa.table({
        "ROW_ID": np.arange(1, len(items) + 1),
        "ITEMID": [i.itemid for i in items],
        "LABEL": [i.label for i in items],
        "ABBREVIATION": _text(i.abbreviation for i in items),
        "DBSOURCE": [DBSOURCES[i.family] for i in items],
        "LINKSTO": ["chartevents"] * len(items),
        "CATEGORY": _text(i.category for i in items),
        "UNITNAME": _text(i.uom if mv else "" for i, mv in zip(items, metavision, strict=True)),
        "PARAM_TYPE": _text(i.param_type for i in items),
        "CONCEPTID": pa.nulls(len(items), pa.int64()),
    })


def d_labitems_table() -> pa.Table:
    items = sorted(LAB_FEATURE_ITEMS + LAB_NOISE_ITEMS, key=lambda i: i.itemid)
    return pa.table({
        "ROW_ID": np.arange(1, len(items) + 1),
        "ITEMID": [i.itemid for i in items],
        "LABEL": [i.label for i in items],
        "FLUID": [i.fluid for i in items],
        "CATEGORY": [i.category for i in items],
        "LOINC_CODE": _text(i.loinc for i in items),
    })

