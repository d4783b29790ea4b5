"""Synthetic MIMIC-III v1.4: the seven tables the pipeline reads, drawn from a known mortality model.

The real MIMIC-III needs credentialed access, so the pipeline's default data come from here (DATASET.md,
"Synthetic MIMIC-III"). The model, in short:

* every admission has a latent severity and deterioration; every feature k a latent trajectory
  z_k(t) = base_k + drift_k · clip(t / 48 h, 0, 1) in standard units, t in hours from the ICU intime;
* observed values = clinical transform of z + measurement noise, charted at realistic times with the
  CareVue or MetaVision item ids of the stay's DBSOURCE (vitals ~hourly, labs every 4–24 h, blood gases
  sparse), mixed with non-feature "noise" items;
* true risk = sigmoid(intercept + Σ_k weight_k · g_k(z_k over the first 48 h)), the label is drawn from
  it, and deaths end the stays (most after the first two days);
* a share of admissions is built to trip each cohort rule (``SCENARIOS``) and a share of event rows to
  trip each event rule (error rows, empty VALUENUM, out-of-range values, empty HADM_ID, …).

Everything is vectorized; events are generated and written in chunks of admissions, so memory stays flat
and the row count scales with the single knob ``admissions`` (~1,270 CHARTEVENTS and ~500 LABEVENTS rows per
admission; ``noise_fraction`` sets the share of non-feature rows). Same seed → byte-identical files.
"""

from __future__ import annotations

import concurrent.futures
import gzip
import io
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from tqdm import tqdm

from pipeline.config import PipelineConfig
from pipeline.features import CHART, FEATURES, LAB, itemid_to_feature
from pipeline.infra.rundir import RunDir, atomic_path
from pipeline.model.metrics import auroc

log = logging.getLogger(__name__)

NOISE_FRACTION = 0.65  # share of non-feature rows in CHARTEVENTS and LABEVENTS (real MIMIC: ~0.89 / ~0.75)
CHUNK_ADMISSIONS = 500  # admissions whose events are generated and written at once
GZIP_LEVEL = 1  # fast; the tables are written once and read a few times
WINDOW_H = 48.0
HOUR_S, DAY_S, YEAR_DAYS = 3600, 86400, 365.2425
FIRST_YEAR, LAST_YEAR = 2100, 2195  # MIMIC-like shifted dates, far from pandas' datetime64[ns] limit (2262)
CAREVUE, METAVISION = 0, 1
DBSOURCES = ("carevue", "metavision")
K = len(FEATURES)
FEATURE = {f.name: k for k, f in enumerate(FEATURES)}

# Event-rule cases, as shares of feature event rows.
P_ERROR = 0.004  # MetaVision rows re-charted with a wrong value and ERROR = 1
P_OUT_OF_RANGE = 0.002
P_NO_VALUENUM = 0.002
P_LAB_NO_HADM = 0.005  # in-hospital lab rows whose HADM_ID is missing
P_CHART_NO_ICUSTAY = 0.001  # CHARTEVENTS rows whose ICUSTAY_ID is missing (HADM_ID kept), as in MIMIC
CHART_TEXTS = ("ERROR", "UNABLE TO REPORT", "Not Done")
LAB_TEXTS = ("ERROR", "UNABLE TO REPORT", "HEMOLYZED", "NOT DONE")


# ---- physiology and the true risk ---------------------------------------------------------------------

@dataclass(frozen=True)
class Physiology:
    """One feature: latent → clinical units, measurement noise, and its part in the true risk."""

    loc: float  # population centre (of log(value) when `log`)
    scale: float  # clinical units (log units) per latent unit
    noise: float  # measurement noise sd, same units as loc
    log: bool
    decimals: int
    clip: tuple[float, float]  # physiological limits, inside the plausible range of features.py
    normal: tuple[float, float]  # lab reference range: outside it FLAG = "abnormal"
    direction: int  # +1: high is bad, -1: low is bad, 0: both extremes are bad
    severity: float  # loading of the baseline on the admission's severity
    drift: float  # loading of the 48 h drift on its deterioration
    weight: float  # weight in the true risk
    junk: tuple[float, float, float]  # out-of-range values that charting errors produce


P = Physiology
PHYSIOLOGY: dict[str, Physiology] = {
    # name: P(loc, scale, noise, log, decimals, clip, normal, direction, severity, drift, weight, junk)
    "potassium": P(4.1, 0.5, 0.2, False, 1, (1.5, 9.0), (3.3, 5.1), 0, 0.25, 0.2, 0.15, (0, -1, 45)),
    "calcium": P(1.12, 0.09, 0.03, False, 2, (0.5, 2.0), (1.12, 1.32), -1, 0.3, 0.2, 0.15, (0, -0.5, 11.2)),
    "ph": P(7.38, 0.07, 0.02, False, 2, (6.8, 7.7), (7.35, 7.45), -1, 0.5, 0.4, 0.35, (6, 5.1, 73.4)),
    "pco2": P(np.log(41), 0.2, 0.06, True, 0, (15, 130), (35, 45), 1, 0.2, 0.2, 0.1, (0, -2, 250)),
    "lactate": P(np.log(1.8), 0.55, 0.12, True, 1, (0.3, 25), (0.5, 2.0), 1, 0.6, 0.5, 0.5, (0, -1, 99)),
    "albumin": P(3.0, 0.55, 0.1, False, 1, (1.0, 5.5), (3.4, 5.4), -1, 0.4, 0.2, 0.25, (0, -0.3, 31)),
    "bun": P(np.log(24), 0.6, 0.06, True, 0, (2, 200), (6, 20), 1, 0.5, 0.3, 0.3, (0, -1, 999)),
    "creatinine": P(np.log(1.1), 0.65, 0.06, True, 1, (0.2, 15), (0.4, 1.1), 1, 0.45, 0.3, 0.2, (0, -0.1, 151)),
    "sodium": P(139, 4.0, 1.0, False, 0, (110, 170), (133, 145), 0, 0.25, 0.2, 0.15, (0, -1, 1399)),
    "bicarbonate": P(24, 4.2, 1.0, False, 0, (5, 50), (22, 32), -1, 0.5, 0.4, 0.25, (0, -1, 99999)),
    "platelet": P(np.log(190), 0.55, 0.06, True, 0, (5, 1200), (150, 440), -1, 0.35, 0.3, 0.2, (0, -1, 99999)),
    "glucose": P(np.log(125), 0.3, 0.12, True, 0, (30, 900), (70, 105), 1, 0.25, 0.2, 0.1, (0, -5, 99999)),
    "magnesium": P(2.0, 0.28, 0.08, False, 1, (0.8, 5.0), (1.6, 2.6), 1, 0.1, 0.1, 0.05, (0, -0.2, 21)),
    "heartrate": P(87, 14, 5, False, 0, (30, 220), (60, 100), 1, 0.5, 0.5, 0.3, (0, -1, 999)),
    "sysbp": P(120, 17, 7, False, 0, (50, 240), (90, 140), -1, 0.5, 0.5, 0.35, (0, -5, 999)),
    "diasbp": P(60, 10, 5, False, 0, (20, 140), (50, 90), -1, 0.45, 0.4, 0.15, (0, -5, 999)),
    "tempc": P(36.9, 0.55, 0.2, False, 1, (32, 42), (36, 38), 0, 0.3, 0.3, 0.2, (0, 98.6, 5.2)),
    "resprate": P(19, 4.5, 2.5, False, 0, (4, 60), (12, 20), 1, 0.45, 0.4, 0.3, (0, -2, 999)),
    "spo2": P(97.3, 1.8, 1.0, False, 0, (60, 100), (95, 100), -1, 0.4, 0.4, 0.3, (0, -1, 101)),
}
del P
assert tuple(PHYSIOLOGY) == tuple(f.name for f in FEATURES)
FAHRENHEIT_JUNK = (0.0, 37.2, 200.0)  # °F items: 0, a °C value in the °F item, nonsense


def _physiology(attr: str) -> np.ndarray:
    return np.array([getattr(PHYSIOLOGY[f.name], attr) for f in FEATURES])


LOC, SCALE, NOISE, IS_LOG = _physiology("loc"), _physiology("scale"), _physiology("noise"), _physiology("log")
DECIMALS, CLIP, NORMAL = _physiology("decimals"), _physiology("clip"), _physiology("normal")
DIRECTION, SEVERITY, DRIFT = _physiology("direction"), _physiology("severity"), _physiology("drift")
WEIGHT, JUNK = _physiology("weight"), _physiology("junk")
RISK_INTERCEPT = -3.0  # tuned for ~12 % mortality
RISK_SCALE = 0.65  # tuned for an oracle AUROC of ~0.86


@dataclass
class Latents:
    """Per admission: severity, deterioration and each feature's trajectory z = base + drift · τ."""

    severity: np.ndarray  # (n,)
    base: np.ndarray  # (n, K): z at intime (and before)
    drift: np.ndarray  # (n, K): change of z over the first 48 h (constant after)

    def z(self, adm: np.ndarray, feature: np.ndarray, t: np.ndarray) -> np.ndarray:
        return self.base[adm, feature] + self.drift[adm, feature] * np.clip(t / WINDOW_H, 0.0, 1.0)


def draw_latents(rng: np.random.Generator, n: int) -> Latents:
    severity = rng.standard_normal(n)
    deterioration = 0.5 * severity + np.sqrt(0.75) * rng.standard_normal(n)  # the severe tend to worsen
    # features with both extremes bad are pushed up or down, at random, by severity
    sign = np.where(DIRECTION == 0, rng.choice([-1.0, 1.0], size=(n, K)), DIRECTION)
    base = sign * SEVERITY * severity[:, None] + np.sqrt(1 - SEVERITY**2) * rng.standard_normal((n, K))
    drift = sign * DRIFT * deterioration[:, None] + 0.35 * rng.standard_normal((n, K))
    return Latents(severity, base, drift)


def true_risk(latents: Latents) -> np.ndarray:
    """In-hospital mortality risk from the latent trajectories of the first 48 h.

    h = ½ (mean of z over 0–48 h) + ½ z(48 h) = base + ¾ drift; monotone features enter as ±h, features
    with both extremes bad as h² − 1.
    """
    h = latents.base + 0.75 * latents.drift
    g = np.where(DIRECTION == 0, h**2 - 1, DIRECTION * h)
    return 1 / (1 + np.exp(-(RISK_INTERCEPT + RISK_SCALE * (g @ WEIGHT))))


# ---- item dictionaries ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Item:
    """A D_ITEMS / D_LABITEMS row; noise items also say how their values look."""

    itemid: int
    label: str
    uom: str = ""
    family: int = -1  # CAREVUE / METAVISION for CHARTEVENTS items
    abbreviation: str = ""
    category: str = ""  # D_ITEMS category (MetaVision) or D_LABITEMS category
    param_type: str = ""
    loinc: str = ""
    fluid: str = "Blood"
    loc: float = 0.0  # noise values ~ N(loc, sd), at least lo, or one of `texts`
    sd: float = 0.0
    decimals: int = 0
    lo: float = 0.0
    texts: tuple[str, ...] = ()


CV, MV = CAREVUE, METAVISION
VITALS, RESP = "Routine Vital Signs", "Respiratory"
CHART_FEATURE_ITEMS = (
    Item(211, "Heart Rate", "BPM", CV),
    Item(51, "Arterial BP [Systolic]", "mmHg", CV),
    Item(442, "Manual BP [Systolic]", "mmHg", CV),
    Item(455, "NBP [Systolic]", "mmHg", CV),
    Item(6701, "Arterial BP #2 [Systolic]", "mmHg", CV),
    Item(8368, "Arterial BP [Diastolic]", "mmHg", CV),
    Item(8440, "Manual BP [Diastolic]", "mmHg", CV),
    Item(8441, "NBP [Diastolic]", "mmHg", CV),
    Item(8555, "Arterial BP #2 [Diastolic]", "mmHg", CV),
    Item(676, "Temperature C", "Deg. C", CV),
    Item(678, "Temperature F", "Deg. F", CV),
    Item(615, "Resp Rate (Total)", "BPM", CV),
    Item(618, "Respiratory Rate", "BPM", CV),
    Item(646, "SpO2", "%", CV),
    Item(220045, "Heart Rate", "bpm", MV, "HR", VITALS, "Numeric"),
    Item(220179, "Non Invasive Blood Pressure systolic", "mmHg", MV, "NBPs", VITALS, "Numeric"),
    Item(220180, "Non Invasive Blood Pressure diastolic", "mmHg", MV, "NBPd", VITALS, "Numeric"),
    Item(220050, "Arterial Blood Pressure systolic", "mmHg", MV, "ABPs", VITALS, "Numeric"),
    Item(220051, "Arterial Blood Pressure diastolic", "mmHg", MV, "ABPd", VITALS, "Numeric"),
    Item(223761, "Temperature Fahrenheit", "?F", MV, "Temperature F", VITALS, "Numeric"),
    Item(223762, "Temperature Celsius", "?C", MV, "Temperature C", VITALS, "Numeric"),
    Item(220210, "Respiratory Rate", "insp/min", MV, "RR", RESP, "Numeric"),
    Item(224690, "Respiratory Rate (Total)", "insp/min", MV, "Respiratory Rate (Total)", RESP, "Numeric"),
    Item(220277, "O2 saturation pulseoxymetry", "%", MV, "SpO2", RESP, "Numeric"),
)
# Real MIMIC CHARTEVENTS is mostly other items; some of these are traps (mean BPs, calculated temperatures).
CHART_NOISE_ITEMS = (
    Item(212, "Heart Rhythm", family=CV, texts=("Normal Sinus", "Sinus Tachy", "Atrial Fib", "Sinus Brady")),
    Item(161, "Ectopy Type", family=CV, texts=("PVC's", "PAC's", "None")),
    Item(128, "Code Status", family=CV, texts=("Full Code", "Do Not Resuscita", "Comfort Measures")),
    Item(550, "Precautions", family=CV, texts=("Universal", "Contact", "Droplet")),
    Item(1125, "Service Type", family=CV, texts=("MICU", "NSICU", "CSICU", "CCU")),
    Item(52, "Arterial BP Mean", "mmHg", CV, loc=78, sd=14),
    Item(456, "NBP Mean", "mmHg", CV, loc=75, sd=13),
    Item(113, "CVP", "mmHg", CV, loc=12, sd=5),
    Item(677, "Temperature C (calc)", "Deg. C", CV, loc=36.9, sd=0.6, decimals=1),
    Item(679, "Temperature F (calc)", "Deg. F", CV, loc=98.4, sd=1.1, decimals=1),
    Item(742, "calprevflg", "kg", CV, loc=1),
    Item(220048, "Heart Rhythm", "", MV, "Heart Rhythm", VITALS, "Text",
         texts=("SR (Sinus Rhythm)", "ST (Sinus Tachycardia)", "AF (Atrial Fibrillation)", "SB (Sinus Bradycardia)")),
    Item(224650, "Ectopy Type 1", "", MV, "Ectopy Type 1", VITALS, "Text", texts=("PVC's", "PAC's", "None")),
    Item(227969, "Safety Measures_U_1", "", MV, "Safety Measures_U_1", "Restraint/Support Systems", "Text",
         texts=("Adequate lighting", "Bed locked in low position", "Bed alarm activated")),
    Item(220052, "Arterial Blood Pressure mean", "mmHg", MV, "ABPm", VITALS, "Numeric", loc=78, sd=14),
    Item(220181, "Non Invasive Blood Pressure mean", "mmHg", MV, "NBPm", VITALS, "Numeric", loc=76, sd=13),
    Item(220074, "Central Venous Pressure", "mmHg", MV, "CVP", "Hemodynamics", "Numeric", loc=8, sd=5),
    Item(223835, "Inspired O2 Fraction", "", MV, "FiO2", RESP, "Numeric", loc=50, sd=15, lo=21),
    Item(220046, "Heart rate Alarm - High", "bpm", MV, "HR Alarm - High", "Alarms", "Numeric", loc=120, sd=5),
    Item(220047, "Heart Rate Alarm - Low", "bpm", MV, "HR Alarm - Low", "Alarms", "Numeric", loc=50, sd=5),
)
GAS, CHEM, HEME = "Blood Gas", "Chemistry", "Hematology"
LAB_FEATURE_ITEMS = (
    Item(50822, "Potassium, Whole Blood", "mEq/L", category=GAS, loinc="6298-4"),
    Item(50808, "Free Calcium", "mmol/L", category=GAS, loinc="1994-3"),
    Item(50820, "pH", "units", category=GAS, loinc="11558-4"),
    Item(50818, "pCO2", "mm Hg", category=GAS, loinc="11557-6"),
    Item(50813, "Lactate", "mmol/L", category=GAS, loinc="32693-4"),
    Item(50862, "Albumin", "g/dL", category=CHEM, loinc="1751-7"),
    Item(51006, "Urea Nitrogen", "mg/dL", category=CHEM, loinc="3094-0"),
    Item(50912, "Creatinine", "mg/dL", category=CHEM, loinc="2160-0"),
    Item(50983, "Sodium", "mEq/L", category=CHEM, loinc="2951-2"),
    Item(50882, "Bicarbonate", "mEq/L", category=CHEM, loinc="1963-8"),
    Item(51265, "Platelet Count", "K/uL", category=HEME, loinc="777-3"),
    Item(50931, "Glucose", "mg/dL", category=CHEM, loinc="2345-7"),
    Item(50960, "Magnesium", "mg/dL", category=CHEM, loinc="2601-3"),
)
# Serum potassium (50971) and total calcium (50893) are traps next to the blood-gas features.
LAB_NOISE_ITEMS = (
    Item(50868, "Anion Gap", "mEq/L", category=CHEM, loinc="1863-0", loc=13, sd=3),
    Item(50902, "Chloride", "mEq/L", category=CHEM, loinc="2075-0", loc=104, sd=5),
    Item(50971, "Potassium", "mEq/L", category=CHEM, loinc="2823-3", loc=4.1, sd=0.5, decimals=1),
    Item(50893, "Calcium, Total", "mg/dL", category=CHEM, loinc="2000-8", loc=8.4, sd=0.7, decimals=1),
    Item(50970, "Phosphate", "mg/dL", category=CHEM, loinc="2777-1", loc=3.5, sd=1.2, decimals=1),
    Item(51221, "Hematocrit", "%", category=HEME, loinc="4544-3", loc=29, sd=5, decimals=1),
    Item(51222, "Hemoglobin", "g/dL", category=HEME, loinc="718-7", loc=9.8, sd=1.6, decimals=1),
    Item(51301, "White Blood Cells", "K/uL", category=HEME, loinc="804-5", loc=9, sd=4, decimals=1),
    Item(51237, "INR(PT)", "", category=HEME, loinc="5895-7", loc=1.5, sd=0.5, decimals=1, lo=0.8),
    Item(51275, "PTT", "sec", category=HEME, loinc="3173-2", loc=37, sd=12, decimals=1, lo=18),
    Item(50802, "Base Excess", "mEq/L", category=GAS, loinc="11555-0", loc=0, sd=4, lo=-30),
    Item(50804, "Calculated Total CO2", "mEq/L", category=GAS, loinc="34728-6", loc=25, sd=5),
    Item(50821, "pO2", "mm Hg", category=GAS, loinc="11556-8", loc=110, sd=50, lo=30),
    Item(50800, "SPECIMEN TYPE", fluid="BLOOD", category="BLOOD GAS", texts=("ART", "VEN", "MIX")),
)
del CV, MV
assert {i.itemid for i in CHART_FEATURE_ITEMS} == set(itemid_to_feature(CHART)), "features.py changed"
assert {i.itemid for i in LAB_FEATURE_ITEMS} == set(itemid_to_feature(LAB)), "features.py changed"


class ItemTable:
    """VALUEUOM of a table's items, looked up by itemid for whole columns."""

    def __init__(self, items: Iterable[Item]):
        items = tuple(items)
        self.uoms = sorted({i.uom for i in items})
        self.uom_code = np.full(max(i.itemid for i in items) + 1, -1, np.int32)
        for i in items:
            self.uom_code[i.itemid] = self.uoms.index(i.uom)

    def uom(self, itemid: np.ndarray) -> pa.Array:
        """VALUEUOM strings (null where the unit is empty, as in MIMIC)."""
        code = self.uom_code[itemid]
        empty = np.array([u == "" for u in self.uoms])[code]
        return pa.DictionaryArray.from_arrays(pa.array(code, mask=empty), pa.array(self.uoms))


class NoiseItems:
    """Non-feature items of one table (and family): item choice and their values."""

    def __init__(self, items: Iterable[Item]):
        items = tuple(items)
        self.itemid = np.array([i.itemid for i in items])
        self.is_text = np.array([bool(i.texts) for i in items])
        self.loc, self.sd = np.array([i.loc for i in items]), np.array([i.sd for i in items])
        self.lo, self.decimals = np.array([i.lo for i in items]), np.array([i.decimals for i in items])
        self.text_pool = np.array([t for i in items for t in i.texts] or [""], dtype=object)
        n_texts = np.array([len(i.texts) for i in items])
        self.text_start, self.n_texts = np.cumsum(n_texts) - n_texts, n_texts

    def draw(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """itemids, numeric values (nan for text items) and texts (None for numeric items) of n rows."""
        which = rng.integers(0, len(self.itemid), n)
        value = np.maximum(self.loc[which] + self.sd[which] * rng.standard_normal(n), self.lo[which])
        value = round_to(value, self.decimals[which])
        text_index = self.text_start[which] + (rng.random(n) * self.n_texts[which]).astype(np.int64)
        is_text = self.is_text[which]
        text = np.where(is_text, self.text_pool[np.minimum(text_index, len(self.text_pool) - 1)], None)
        return self.itemid[which], np.where(is_text, np.nan, value), text


CHART_ITEMS = ItemTable(CHART_FEATURE_ITEMS + CHART_NOISE_ITEMS)
LAB_ITEMS = ItemTable(LAB_FEATURE_ITEMS + LAB_NOISE_ITEMS)
CHART_NOISE = [NoiseItems(i for i in CHART_NOISE_ITEMS if i.family == fam) for fam in (CAREVUE, METAVISION)]
LAB_NOISE = NoiseItems(LAB_NOISE_ITEMS)


def round_to(value: np.ndarray, decimals: np.ndarray | int) -> np.ndarray:
    scale = 10.0 ** np.asarray(decimals)
    return np.round(value * scale) / scale


# ---- which item charts a vital sign --------------------------------------------------------------------

def _choices(cases: list[list[tuple[int, float]]]) -> tuple[np.ndarray, np.ndarray]:
    """(itemid, cumulative probability) arrays of shape (case, 4); case = family · 2 + a stay flag."""
    items = np.zeros((len(cases), 4), np.int64)
    cum = np.ones((len(cases), 4))
    for c, options in enumerate(cases):
        items[c, : len(options)] = [i for i, _ in options]
        cum[c, : len(options)] = np.cumsum([p for _, p in options])
        items[c, len(options):] = options[-1][0]
    return items, cum


# cases: [CareVue without / with flag, MetaVision without / with flag]
HR_ITEMS = _choices([[(211, 1)], [(211, 1)], [(220045, 1)], [(220045, 1)]])
SYSBP_ITEMS = _choices([  # flag: arterial line
    [(455, 0.95), (442, 0.05)], [(51, 0.75), (455, 0.2), (6701, 0.03), (442, 0.02)],
    [(220179, 1)], [(220050, 0.8), (220179, 0.2)],
])
DIASBP_OF_SYSBP = {51: 8368, 442: 8440, 455: 8441, 6701: 8555, 220050: 220051, 220179: 220180}
TEMP_ITEMS = _choices([  # flag: the nurses of this stay chart in °F
    [(676, 0.9), (678, 0.1)], [(678, 0.9), (676, 0.1)],
    [(223762, 0.9), (223761, 0.1)], [(223761, 0.95), (223762, 0.05)],
])
RESP_ITEMS = _choices([  # flag: ventilated
    [(618, 1)], [(615, 0.6), (618, 0.4)], [(220210, 1)], [(224690, 0.5), (220210, 0.5)],
])
SPO2_ITEMS = _choices([[(646, 1)], [(646, 1)], [(220277, 1)], [(220277, 1)]])
FAHRENHEIT = np.zeros(CHART_ITEMS.uom_code.size, bool)
FAHRENHEIT[[678, 223761]] = True
DIASBP_LOOKUP = np.zeros(CHART_ITEMS.uom_code.size, np.int64)
DIASBP_LOOKUP[list(DIASBP_OF_SYSBP)] = list(DIASBP_OF_SYSBP.values())


def pick_items(rng: np.random.Generator, choices: tuple[np.ndarray, np.ndarray], case: np.ndarray) -> np.ndarray:
    items, cum = choices
    column = (rng.random(len(case))[:, None] >= cum[case]).sum(axis=1)
    return items[case, np.minimum(column, 3)]


# ---- admissions, ICU stays and patients -------------------------------------------------------------

SCENARIOS: dict[str, tuple[float, int]] = {  # name: (share of admissions, at least); the rest are ordinary
    "no_chartevents": (0.01, 2),  # HAS_CHARTEVENTS_DATA = 0: ICU stays but no CHARTEVENTS rows
    "minor": (0.015, 2),  # age < 18 at intime (half of them newborns in the NICU)
    "over_89": (0.04, 3),  # DOB shifted ~300 years back; adults, they stay in the cohort
    "short_hospital": (0.01, 2),  # hospital stay < 24 h; ICU intime before admittime, ICU stay often ≥ 24 h
    "short_icu": (0.02, 2),  # ICU stay < 24 h (more arise by chance)
    "first_stay_short": (0.02, 2),  # a short ICU stay before the one that counts
    "later_stays": (0.05, 2),  # 1–2 more ICU stays after the one that counts, with smaller ICUSTAY_IDs
    "intime_tie": (0.01, 2),  # a second ICU stay with the same INTIME and a larger ICUSTAY_ID
    "late_start": (0.02, 2),  # no event (labs included) before 1.5–6 h after intime: span rule
}
SCENARIO = {name: code for code, name in enumerate(SCENARIOS, start=1)}
EARLY_DEATH = 0.12  # share of deaths in the first two days of the ICU stay (span rule)
DEATH_IN_ICU = 0.75


def draw_scenarios(rng: np.random.Generator, n: int) -> np.ndarray:
    """One scenario per admission (0 = ordinary); each at least its minimum count while admissions last."""
    scenario = np.zeros(n, np.int8)
    order = rng.permutation(n)
    start = 0
    for code, (share, least) in enumerate(SCENARIOS.values(), start=1):
        count = min(max(least, round(share * n)), n - start)
        scenario[order[start:start + count]] = code
        start += count
    return scenario


@dataclass
class Stays:
    """ICU stays; times in hours from the admission's reference time (intime of the stay that counts)."""

    adm: np.ndarray
    intime: np.ndarray
    outtime: np.ndarray
    chart_start: np.ndarray
    chart_end: np.ndarray
    counts: np.ndarray  # the stay that counts for the cohort (intime = 0)
    icustay_id: np.ndarray


@dataclass
class Admissions:
    """Hospital admissions; times in hours from the reference time `ref` (epoch seconds)."""

    scenario: np.ndarray
    latents: Latents
    risk: np.ndarray
    died: np.ndarray  # HOSPITAL_EXPIRE_FLAG
    family: np.ndarray  # DBSOURCE of its ICU stays
    art_line: np.ndarray
    ventilated: np.ndarray
    charts_fahrenheit: np.ndarray
    has_chart: np.ndarray
    ed: np.ndarray  # came through the emergency department
    age: np.ndarray  # years at the reference time (~300 for shifted DOBs)
    admit: np.ndarray
    disch: np.ndarray
    lab_start: np.ndarray
    lab_period: np.ndarray
    outpatient_labs: np.ndarray
    ref: np.ndarray
    subject: np.ndarray  # index of its subject
    subject_id: np.ndarray
    hadm_id: np.ndarray
    stays: Stays


def is_(scenario: np.ndarray, *names: str) -> np.ndarray:
    return np.isin(scenario, [SCENARIO[n] for n in names])


def draw_icu_course(rng: np.random.Generator, scenario: np.ndarray, died: np.ndarray,
                    severity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Length (h) of the ICU stay that counts, and time of death (nan for survivors)."""
    n = len(died)
    los = np.clip(rng.lognormal(np.log(60) + 0.15 * severity, 0.75, n), 2, 720)
    death = np.where(rng.random(n) < EARLY_DEATH, rng.uniform(6, 47, n),
                     np.minimum(48 + rng.lognormal(np.log(72), 0.9, n), 1500))
    in_icu = rng.random(n) < DEATH_IN_ICU
    short, long_ = is_(scenario, "short_icu"), is_(scenario, "late_start", "intime_tie")
    death = np.where(long_, np.maximum(death, 50), death)
    los = np.where(short, rng.uniform(3, 23.5, n), los)
    los = np.where(long_, np.maximum(los, rng.uniform(50, 100, n)), los)
    ward_death = np.maximum(death, los + rng.uniform(1, 24, n))
    los = np.where(died & in_icu & ~short, np.minimum(death, 720), los)
    death = np.where(died, np.where(in_icu & ~short, los, ward_death), np.nan)
    return los, death


def draw_stays(rng: np.random.Generator, scenario: np.ndarray, los: np.ndarray) -> Stays:
    """The stay that counts (t = 0) plus the extra stays of some scenarios."""
    n = len(scenario)
    adm, intime, outtime = [np.arange(n)], [np.zeros(n)], [los]  # the stay that counts comes first
    first = np.flatnonzero(is_(scenario, "first_stay_short"))
    gap, short = rng.uniform(4, 48, first.size), rng.uniform(3, 20, first.size)
    adm.append(first), intime.append(-gap - short), outtime.append(-gap)
    tie = np.flatnonzero(is_(scenario, "intime_tie"))
    adm.append(tie), intime.append(np.zeros(tie.size)), outtime.append(rng.uniform(24.5, 40, tie.size))
    later = np.flatnonzero(is_(scenario, "later_stays"))
    start = los[later] + rng.uniform(6, 96, later.size)
    end = start + np.clip(rng.lognormal(np.log(40), 0.7, later.size), 4, 150)
    adm.append(later), intime.append(start), outtime.append(end)
    third = rng.random(later.size) < 0.3  # some have two more
    start = end[third] + rng.uniform(6, 96, third.sum())
    adm.append(later[third]), intime.append(start), outtime.append(start + rng.uniform(20, 60, third.sum()))

    adm, intime, outtime = np.concatenate(adm), np.concatenate(intime), np.concatenate(outtime)
    m = adm.size
    counts = np.arange(m) < n
    # charting starts with the stay; sometimes late (rescued by earlier labs) or a little before intime
    u = rng.random(m)
    offset = np.where(u < 0.04, rng.uniform(1.2, 4, m), np.where(u < 0.07, -rng.uniform(0.1, 1, m),
                                                                 rng.uniform(0, 0.5, m)))
    late = is_(scenario[adm], "late_start") & counts
    offset = np.where(late, rng.uniform(1.5, 6, m), offset)
    chart_start = intime + offset
    chart_end = np.maximum(outtime - rng.uniform(0, 0.4, m), chart_start + 0.1)
    order = np.lexsort((intime, adm))  # stable: of two stays with the same intime, the one that counts first
    return Stays(adm[order], intime[order], outtime[order], chart_start[order], chart_end[order], counts[order],
                 np.zeros(m, np.int64))


def assign_icustay_ids(rng: np.random.Generator, stays: Stays, scenario: np.ndarray) -> None:
    """Random ids like MIMIC, so that id order is not time order; then, within an admission, the stay that
    counts gets the smaller id of an intime tie, and later stays get smaller ids than the one that counts."""
    ids = 200000 + rng.choice(max(100000, 3 * stays.adm.size), stays.adm.size, replace=False)
    rank = ids.astype(float)  # wanted id order within an admission; ordinary admissions keep theirs
    tie, later = is_(scenario[stays.adm], "intime_tie"), is_(scenario[stays.adm], "later_stays")
    rank[tie] = ~stays.counts[tie]
    rank[later] = np.where(stays.counts[later], np.inf, stays.intime[later])
    by_rank, by_id = np.lexsort((rank, stays.adm)), np.lexsort((ids, stays.adm))
    stays.icustay_id = np.empty_like(ids)
    stays.icustay_id[by_rank] = ids[by_id]


def draw_admissions(rng: np.random.Generator, n: int) -> Admissions:
    scenario = draw_scenarios(rng, n)
    latents = draw_latents(rng, n)
    risk = true_risk(latents)
    died = rng.random(n) < risk
    severity = latents.severity
    los, death = draw_icu_course(rng, scenario, died, severity)
    stays = draw_stays(rng, scenario, los)
    assign_icustay_ids(rng, stays, scenario)
    last_out = np.zeros(n)
    np.maximum.at(last_out, stays.adm, stays.outtime)
    first_in = np.zeros(n)
    np.minimum.at(first_in, stays.adm, stays.intime)
    later = is_(scenario, "later_stays")
    death = np.where(died & later, last_out, death)  # they die in their last ICU stay

    # hospital stay around the ICU stays: ED or ward before, ward after (some go home from the ICU)
    ed = rng.random(n) < 0.65
    before = np.where(ed, rng.uniform(0.3, 8, n), np.clip(rng.lognormal(np.log(30), 1.0, n), 1, 500))
    after = np.where(rng.random(n) < 0.15, rng.uniform(0.5, 6, n), np.clip(rng.lognormal(np.log(72), 0.8, n), 1, 1000))
    admit = first_in - before
    disch = np.where(died, death, last_out + after)
    short_hosp = is_(scenario, "short_hospital")  # ICU intime before admittime, as happens in MIMIC
    admit = np.where(short_hosp, rng.uniform(0.5, 4, n), admit)
    disch = np.where(short_hosp, admit + rng.uniform(20, 23.9, n), disch)
    main = stays.counts
    stays.outtime = np.where(main & short_hosp[stays.adm], disch[stays.adm] - rng.uniform(0, 0.3, main.size),
                             stays.outtime)
    stays.chart_end = np.minimum(stays.chart_end, np.maximum(stays.outtime, stays.chart_start + 0.1))

    main_chart_start = np.zeros(n)
    main_chart_start[stays.adm[main]] = stays.chart_start[main]
    lab_start = np.where(is_(scenario, "late_start"), main_chart_start, admit)
    return Admissions(
        scenario=scenario, latents=latents, risk=risk, died=died,
        family=(rng.random(n) < 0.55).astype(np.int8),
        art_line=rng.random(n) < 1 / (1 + np.exp(-severity)),
        ventilated=rng.random(n) < 1 / (1 + np.exp(-(severity - 0.3))),
        charts_fahrenheit=rng.random(n) < 0.7,
        has_chart=~is_(scenario, "no_chartevents"), ed=ed & ~short_hosp,
        age=draw_age(rng, scenario), admit=admit, disch=disch, lab_start=lab_start,
        lab_period=rng.choice([4.0, 6.0, 8.0, 12.0, 24.0], n, p=[0.1, 0.2, 0.25, 0.3, 0.15]),
        outpatient_labs=rng.random(n) < 0.5,
        ref=np.zeros(n, np.int64), subject=np.arange(n), subject_id=np.zeros(n, np.int64),
        hadm_id=np.zeros(n, np.int64), stays=stays,
    )


def draw_age(rng: np.random.Generator, scenario: np.ndarray) -> np.ndarray:
    n = len(scenario)
    adult = np.clip(rng.normal(64, 17, n), 18.3, 89.5)
    minor = np.where(rng.random(n) < 0.5, rng.uniform(0, 0.08, n), rng.uniform(1, 17.8, n))
    shifted = rng.uniform(299.6, 300.6, n)  # MIMIC: age 300 at the first admission
    return np.where(is_(scenario, "minor"), minor, np.where(is_(scenario, "over_89"), shifted, adult))


def place_in_time(rng: np.random.Generator, adm: Admissions) -> None:
    """Group admissions into subjects (earlier admissions of survivors) and set absolute times and ids.

    A readmitted subject's earlier admissions lie ≥ 200 days before the next, so stays never overlap; only a
    subject's last admission can end in death.
    """
    n = adm.scenario.size
    first = np.datetime64(f"{FIRST_YEAR}-01-01", "s").astype(np.int64)
    last = np.datetime64(f"{LAST_YEAR}-01-01", "s").astype(np.int64)
    adm.ref = rng.integers(first, last, n)
    plain = ~is_(adm.scenario, "minor", "over_89")
    earlier = np.flatnonzero(plain & ~adm.died & (rng.random(n) < 0.12))
    anchors = np.flatnonzero(plain & (adm.age >= 30) & ~np.isin(np.arange(n), earlier))
    if anchors.size and earlier.size:
        anchor = anchors[rng.integers(0, anchors.size, earlier.size)]
        order = np.argsort(anchor, kind="stable")
        earlier, anchor = earlier[order], anchor[order]
        group_start = np.unique(anchor, return_index=True)[1]
        rank = np.arange(anchor.size) - np.repeat(group_start, np.diff(np.append(group_start, anchor.size)))
        gap_days = (rank + 1) * 400 + rng.uniform(0, 200, anchor.size)
        adm.ref[earlier] = adm.ref[anchor] - (gap_days * DAY_S).astype(np.int64)
        adm.age[earlier] = adm.age[anchor] - gap_days / YEAR_DAYS
        adm.subject[earlier] = anchor
    _, adm.subject = np.unique(adm.subject, return_inverse=True)
    n_subjects = adm.subject.max() + 1
    adm.subject_id = (10 + rng.choice(max(100000, 3 * n_subjects), n_subjects, replace=False))[adm.subject]
    adm.hadm_id = 100000 + rng.choice(max(100000, 3 * n), n, replace=False)


# ---- event rows ---------------------------------------------------------------------------------------

def observe(rng: np.random.Generator, latents: Latents, adm: np.ndarray, feature: np.ndarray,
            t: np.ndarray) -> np.ndarray:
    """Measured values (feature units, °C) of the latent trajectories at times t."""
    lin = LOC[feature] + SCALE[feature] * latents.z(adm, feature, t) + NOISE[feature] * rng.standard_normal(t.size)
    value = np.where(IS_LOG[feature], np.exp(lin), lin)
    return np.clip(value, CLIP[feature, 0], CLIP[feature, 1])


def expand(rng: np.random.Generator, start: np.ndarray, end: np.ndarray, period: np.ndarray | float,
           jitter: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A regular schedule per interval: (interval index, time, step number) of every event."""
    period = np.broadcast_to(period, start.shape)
    count = np.floor(np.maximum(end - start, 0) / period).astype(np.int64) + 1
    owner = np.repeat(np.arange(start.size), count)
    step = np.arange(owner.size) - np.repeat(np.cumsum(count) - count, count)
    t = start[owner] + step * period[owner] + rng.uniform(-jitter, jitter, owner.size) * (step > 0)
    return owner, np.clip(t, start[owner], end[owner]), step


@dataclass
class Rows:
    """Feature event rows under construction (times in hours from the admission's reference time)."""

    owner: np.ndarray  # stay (CHARTEVENTS) or admission (LABEVENTS) index
    t: np.ndarray
    feature: np.ndarray
    itemid: np.ndarray
    value: np.ndarray | None = None

    @staticmethod
    def concat(parts: list[Rows]) -> Rows:
        return Rows(*(np.concatenate([getattr(p, f) for p in parts])
                      for f in ("owner", "t", "feature", "itemid", "value")))

    def take(self, index: np.ndarray) -> Rows:
        return Rows(self.owner[index], self.t[index], self.feature[index], self.itemid[index], self.value[index])


def vital_rows(rng: np.random.Generator, adm: Admissions, stays: np.ndarray) -> Rows:
    """Vital signs of the given stays: ~hourly with jitter and gaps, extra readings, temperature every 4 h."""
    s = adm.stays
    owner, t, step = expand(rng, s.chart_start[stays], s.chart_end[stays], 1.0, 0.15)
    extra = np.flatnonzero(rng.random(owner.size) < 0.08)  # q15–30 min charting while unstable
    owner = np.concatenate([owner, owner[extra]])
    t = np.concatenate([t, t[extra] + rng.uniform(0.2, 0.8, extra.size)])
    t = np.minimum(t, s.chart_end[stays][owner])
    step = np.concatenate([step, np.full(extra.size, -1)])
    a = s.adm[stays][owner]
    family = adm.family[a].astype(np.int64) * 2
    temp_phase = rng.integers(0, 4, stays.size)[owner]

    parts = []

    def add(keep: np.ndarray, feature: str, choices: tuple[np.ndarray, np.ndarray], flag: np.ndarray) -> np.ndarray:
        i = np.flatnonzero(keep)
        items = pick_items(rng, choices, family[i] + flag[i])
        parts.append(Rows(owner[i], t[i], np.full(i.size, FEATURE[feature]), items))
        return i

    n = owner.size
    zero = np.zeros(n, np.int64)
    add(rng.random(n) < 0.96, "heartrate", HR_ITEMS, zero)
    bp = add(rng.random(n) < 0.93, "sysbp", SYSBP_ITEMS, adm.art_line[a].astype(np.int64))
    parts.append(Rows(owner[bp], t[bp], np.full(bp.size, FEATURE["diasbp"]), DIASBP_LOOKUP[parts[-1].itemid]))
    add((rng.random(n) < 0.93) & ((step >= 0) | (rng.random(n) < 0.5)), "resprate", RESP_ITEMS,
        adm.ventilated[a].astype(np.int64))
    add(rng.random(n) < 0.94, "spo2", SPO2_ITEMS, zero)
    add((step >= 0) & (step % 4 == temp_phase) & (rng.random(n) < 0.9), "tempc", TEMP_ITEMS,
        adm.charts_fahrenheit[a].astype(np.int64))
    rows = Rows.concat([Rows(p.owner, p.t, p.feature, p.itemid, np.zeros(p.t.size)) for p in parts])
    rows.value = observe(rng, adm.latents, s.adm[stays][rows.owner], rows.feature, rows.t)
    # a diastolic pressure is charted with its systolic one and lies below it
    sys_rows, dia_rows = rows.feature == FEATURE["sysbp"], rows.feature == FEATURE["diasbp"]
    below = np.minimum(rows.value[dia_rows], rows.value[sys_rows] - 8)
    rows.value[dia_rows] = np.maximum(below, CLIP[FEATURE["diasbp"], 0])
    return rows


def error_rows(rng: np.random.Generator, rows: Rows, eligible: np.ndarray) -> Rows:
    """Wrong values re-charted at the same time (MetaVision marks them ERROR = 1); still in range."""
    i = np.flatnonzero(eligible & (rng.random(rows.t.size) < P_ERROR))
    wrong = rows.take(i)
    wrong.value = np.clip(wrong.value * rng.uniform(0.75, 1.25, i.size), CLIP[wrong.feature, 0], CLIP[wrong.feature, 1])
    return wrong


def finish_values(rng: np.random.Generator, rows: Rows, texts: tuple[str, ...]) -> np.ndarray:
    """°F conversion, rounding, out-of-range junk and texts in place of numbers. Returns the texts (or None)."""
    fahrenheit = FAHRENHEIT[np.minimum(rows.itemid, FAHRENHEIT.size - 1)]
    value = np.where(fahrenheit, rows.value * 9 / 5 + 32, rows.value)
    decimals = np.where(fahrenheit, 1, DECIMALS[rows.feature])
    value = round_to(value, decimals)
    n = value.size
    junk = rng.random(n) < P_OUT_OF_RANGE
    pick = rng.integers(0, 3, n)
    value = np.where(junk, np.where(fahrenheit, np.array(FAHRENHEIT_JUNK)[pick], JUNK[rows.feature, pick]), value)
    no_number = ~junk & (rng.random(n) < P_NO_VALUENUM)
    rows.value = np.where(no_number, np.nan, value)
    return np.where(no_number, np.array(texts, dtype=object)[rng.integers(0, len(texts), n)], None)


def value_column(value: np.ndarray, text: np.ndarray) -> pa.Array:
    """VALUE: the number as charted, or the text where there is no number."""
    number = pc.cast(pa.array(value, mask=np.isnan(value)), pa.string())
    return pc.coalesce(number, pa.array(text, pa.string()))


def timestamps(seconds: np.ndarray, mask: np.ndarray | None = None) -> pa.Array:
    return pa.array(seconds.astype("datetime64[s]"), mask=mask)


def to_seconds(ref: np.ndarray, hours: np.ndarray) -> np.ndarray:
    return ref + np.round(hours * HOUR_S).astype(np.int64)


def minute(seconds: np.ndarray) -> np.ndarray:
    return seconds // 60 * 60


def chart_table(rng: np.random.Generator, adm: Admissions, stays: np.ndarray, noise_fraction: float,
                first_row_id: int) -> pa.Table:
    s = adm.stays
    stays = stays[adm.has_chart[s.adm[stays]]]
    rows = vital_rows(rng, adm, stays)
    metavision = adm.family[s.adm[stays][rows.owner]] == METAVISION
    wrong = error_rows(rng, rows, metavision)
    n_feature = rows.t.size
    rows = Rows.concat([rows, wrong])
    error = np.arange(rows.t.size) >= n_feature
    text = finish_values(rng, rows, CHART_TEXTS)

    # noise items, charted around the feature rows of the same stay
    n_noise = round(n_feature * noise_fraction / (1 - noise_fraction)) if n_feature else 0
    parent = rng.integers(0, max(n_feature, 1), n_noise)
    noise_owner, noise_t = rows.owner[parent], rows.t[parent] + rng.uniform(-0.3, 0.3, n_noise)
    noise_t = np.clip(noise_t, s.chart_start[stays][noise_owner], s.chart_end[stays][noise_owner])
    noise_family = adm.family[s.adm[stays][noise_owner]]
    noise_item, noise_value, noise_text = np.zeros(n_noise, np.int64), np.zeros(n_noise), np.full(n_noise, None)
    for fam in (CAREVUE, METAVISION):
        i = np.flatnonzero(noise_family == fam)
        noise_item[i], noise_value[i], noise_text[i] = CHART_NOISE[fam].draw(rng, i.size)

    owner = np.concatenate([rows.owner, noise_owner])
    t = np.concatenate([rows.t, noise_t])
    itemid = np.concatenate([rows.itemid, noise_item])
    value = np.concatenate([rows.value, noise_value])
    text = np.concatenate([text, noise_text])
    error = np.concatenate([error, np.zeros(n_noise, bool)])
    stay = stays[owner]
    a = s.adm[stay]
    charttime = minute(to_seconds(adm.ref[a], t))
    order = np.lexsort((itemid, charttime, stay))
    stay, a, itemid, value, text, error, charttime = (
        x[order] for x in (stay, a, itemid, value, text, error, charttime))
    n = order.size
    cv = adm.family[a] == CAREVUE
    warning = ~cv & (rng.random(n) < 0.003)
    return pa.table({
        "ROW_ID": np.arange(first_row_id, first_row_id + n),
        "SUBJECT_ID": adm.subject_id[a],
        "HADM_ID": adm.hadm_id[a],
        "ICUSTAY_ID": pa.array(s.icustay_id[stay], mask=rng.random(n) < P_CHART_NO_ICUSTAY),
        "ITEMID": itemid,
        "CHARTTIME": timestamps(charttime),
        "STORETIME": timestamps(charttime + rng.integers(0, 76, n) * 60),
        "CGID": rng.integers(14000, 22000, n),
        "VALUE": value_column(value, text),
        "VALUENUM": pa.array(value, mask=np.isnan(value)),
        "VALUEUOM": CHART_ITEMS.uom(itemid),
        "WARNING": pa.array(warning.astype(np.int64), mask=cv),  # CareVue leaves WARNING and ERROR empty
        "ERROR": pa.array(error.astype(np.int64), mask=cv),
        "RESULTSTATUS": pa.nulls(n, pa.string()),
        "STOPPED": pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32), mask=~cv), pa.array(["NotStopd"])),
    })


CHEM_PANEL = {"bun": 0.97, "creatinine": 0.97, "sodium": 0.97, "bicarbonate": 0.97, "glucose": 0.95,
              "magnesium": 0.85, "platelet": 0.9, "albumin": 0.2}
BLOOD_GAS = {"ph": 0.99, "pco2": 0.99, "lactate": 0.6, "potassium": 0.35, "calcium": 0.35}
LAB_ITEMID = np.array([f.itemids[0] for f in FEATURES])


def panel_rows(rng: np.random.Generator, owner: np.ndarray, t: np.ndarray, panel: dict[str, float]) -> Rows:
    features = np.array([FEATURE[name] for name in panel])
    keep_p = np.array(list(panel.values()))
    o, f = np.repeat(owner, features.size), np.tile(features, owner.size)
    tt = np.repeat(t, features.size)
    keep = rng.random(o.size) < np.tile(keep_p, owner.size)
    return Rows(o[keep], tt[keep], f[keep], LAB_ITEMID[f[keep]])


def lab_table(rng: np.random.Generator, adm: Admissions, adms: np.ndarray, noise_fraction: float,
              first_row_id: int) -> pa.Table:
    s = adm.stays
    # chemistry panels every 4–24 h of the hospital stay (from the start of the ED stay / admission)
    start = adm.lab_start[adms] + rng.uniform(0, 0.8, adms.size)
    owner, t, _ = expand(rng, start, adm.disch[adms], adm.lab_period[adms], 1.0)
    chem = panel_rows(rng, adms[owner], t, CHEM_PANEL)
    # blood gases: every 4–10 h in the ICU for ventilated patients, else 0–2 around intime
    main_out = np.zeros(adm.scenario.size)
    main_out[s.adm[s.counts]] = s.outtime[s.counts]
    vent = adms[adm.ventilated[adms]]
    o1, t1, _ = expand(rng, rng.uniform(-1, 0.5, vent.size), np.minimum(main_out[vent], 96),
                       rng.uniform(4, 10, vent.size), 1.0)
    other = adms[~adm.ventilated[adms]]
    count = rng.choice([0, 1, 2], other.size, p=[0.3, 0.45, 0.25])
    o2 = np.repeat(np.arange(other.size), count)
    t2 = rng.uniform(-2, 1, o2.size) + rng.uniform(0, 1, o2.size) * np.minimum(main_out[other[o2]], 24)
    gases = panel_rows(rng, np.concatenate([vent[o1], other[o2]]), np.concatenate([t1, t2]), BLOOD_GAS)
    rows = Rows.concat([Rows(r.owner, r.t, r.feature, r.itemid, np.zeros(r.t.size)) for r in (chem, gases)])
    inside = (rows.t >= adm.lab_start[rows.owner]) & (rows.t <= adm.disch[rows.owner])
    rows = rows.take(np.flatnonzero(inside))
    # outpatient panels weeks to months before the admission: no HADM_ID
    out = adms[adm.outpatient_labs[adms]]
    o3 = np.repeat(out, rng.integers(1, 6, out.size))
    outpatient = panel_rows(rng, o3, adm.admit[o3] - rng.uniform(24, 4000, o3.size), CHEM_PANEL)
    outpatient.value = np.zeros(outpatient.t.size)
    n_hadm = rows.t.size
    rows = Rows.concat([rows, outpatient])
    no_hadm = (np.arange(rows.t.size) >= n_hadm) | (rng.random(rows.t.size) < P_LAB_NO_HADM)
    rows.value = observe(rng, adm.latents, rows.owner, rows.feature, rows.t)
    abnormal = (rows.value < NORMAL[rows.feature, 0]) | (rows.value > NORMAL[rows.feature, 1])
    text = finish_values(rng, rows, LAB_TEXTS)

    n_feature = rows.t.size
    n_noise = round(n_feature * noise_fraction / (1 - noise_fraction)) if n_feature else 0
    parent = rng.integers(0, max(n_feature, 1), n_noise)
    noise_item, noise_value, noise_text = LAB_NOISE.draw(rng, n_noise)
    owner = np.concatenate([rows.owner, rows.owner[parent]])
    charttime = minute(to_seconds(adm.ref[owner], np.concatenate([rows.t, rows.t[parent]])))
    itemid = np.concatenate([rows.itemid, noise_item])
    value = np.concatenate([rows.value, noise_value])
    text = np.concatenate([text, noise_text])
    no_hadm = np.concatenate([no_hadm, no_hadm[parent]])
    abnormal = np.concatenate([abnormal & ~np.isnan(rows.value), ~np.isnan(noise_value) & (rng.random(n_noise) < 0.3)])
    order = np.lexsort((itemid, charttime, owner))
    owner, charttime, itemid, value, text, no_hadm, abnormal = (
        x[order] for x in (owner, charttime, itemid, value, text, no_hadm, abnormal))
    n = order.size
    return pa.table({
        "ROW_ID": np.arange(first_row_id, first_row_id + n),
        "SUBJECT_ID": adm.subject_id[owner],
        "HADM_ID": pa.array(adm.hadm_id[owner], mask=no_hadm),
        "ITEMID": itemid,
        "CHARTTIME": timestamps(charttime),
        "VALUE": value_column(value, text),
        "VALUENUM": pa.array(value, mask=np.isnan(value)),
        "VALUEUOM": LAB_ITEMS.uom(itemid),
        "FLAG": pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32), mask=~abnormal), pa.array(["abnormal"])),
    })


# ---- the small tables ---------------------------------------------------------------------------------

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


def day(seconds: np.ndarray) -> np.ndarray:
    return seconds // DAY_S * DAY_S


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


# ---- writing ------------------------------------------------------------------------------------------

class WriterThreads:
    """Two threads: one formats CSV, one compresses and writes. Arrow and zlib release the GIL, so both
    overlap with generating the next chunk; single-thread pools keep every file's chunks in order."""

    def __init__(self) -> None:
        self.format = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="synth-csv")
        self.compress = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="synth-gzip")

    def __enter__(self) -> WriterThreads:
        return self

    def __exit__(self, *exc: object) -> None:
        self.format.shutdown()
        self.compress.shutdown()


class GzipCsv:
    """One gzip CSV table, appended chunk by chunk. The gzip header carries no time and no file name, so the
    bytes depend on the content only."""

    def __init__(self, path: Path, threads: WriterThreads):
        self._file = open(path, "wb")  # noqa: SIM115 - closed in close()
        self._gzip = gzip.GzipFile(filename="", mode="wb", fileobj=self._file, compresslevel=GZIP_LEVEL, mtime=0)
        self._threads = threads
        self._pending: list[concurrent.futures.Future] = []
        self._header = True
        self.rows = 0

    def append(self, table: pa.Table) -> None:
        self.rows += table.num_rows
        text = self._threads.format.submit(_csv_bytes, table, self._header)
        self._header = False
        self._pending.append(self._threads.compress.submit(lambda: self._gzip.write(text.result())))
        while len(self._pending) > 2:  # bounded memory: at most two chunks in flight
            self._pending.pop(0).result()

    def close(self) -> None:
        try:
            for future in self._pending:
                future.result()
        finally:
            self._gzip.close()
            self._file.close()

    def __enter__(self) -> GzipCsv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _csv_bytes(table: pa.Table, header: bool) -> memoryview:
    buffer = io.BytesIO()
    pacsv.write_csv(table, buffer, pacsv.WriteOptions(include_header=header))
    return buffer.getbuffer()


def write_table(path: Path, table: pa.Table, threads: WriterThreads) -> int:
    with GzipCsv(path, threads) as out:
        out.append(table)
    return table.num_rows


# ---- entry points -------------------------------------------------------------------------------------

def generate(out_dir: Path, admissions: int, seed: int, noise_fraction: float = NOISE_FRACTION) -> dict:
    """Write the seven MIMIC-III tables (+ TRUE_RISK.csv.gz and synth.json) into `out_dir`; return the summary."""
    if admissions < 1:
        raise ValueError(f"admissions must be ≥ 1, got {admissions}")
    if not 0 <= noise_fraction < 1:
        raise ValueError(f"noise_fraction must be in [0, 1), got {noise_fraction}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    adm = draw_admissions(rng, admissions)
    place_in_time(rng, adm)
    small = {
        "PATIENTS": patients_table(rng, adm),
        "ADMISSIONS": admissions_table(rng, adm),
        "ICUSTAYS": icustays_table(rng, adm),
        "D_ITEMS": d_items_table(),
        "D_LABITEMS": d_labitems_table(),
        "TRUE_RISK": true_risk_table(adm),
    }
    log.info("synth: %d admissions, %d subjects, %d ICU stays; writing events to %s", admissions,
             small["PATIENTS"].num_rows, small["ICUSTAYS"].num_rows, out_dir)
    rows = {}
    with WriterThreads() as threads:
        for name, table in small.items():
            rows[name] = write_table(out_dir / f"{name}.csv.gz", table, threads)
        with GzipCsv(out_dir / "CHARTEVENTS.csv.gz", threads) as chart, \
                GzipCsv(out_dir / "LABEVENTS.csv.gz", threads) as lab:
            starts = range(0, admissions, CHUNK_ADMISSIONS)
            for chunk, start in enumerate(tqdm(starts, desc="synth events", unit="chunk", disable=None)):
                adms = np.arange(start, min(start + CHUNK_ADMISSIONS, admissions))
                stays = np.arange(*np.searchsorted(adm.stays.adm, [adms[0], adms[-1] + 1]))
                chunk_rng = np.random.default_rng([seed, chunk])  # chunks are independent streams
                chart.append(chart_table(chunk_rng, adm, stays, noise_fraction, chart.rows + 1))
                lab.append(lab_table(chunk_rng, adm, adms, noise_fraction, lab.rows + 1))
        rows["CHARTEVENTS"], rows["LABEVENTS"] = chart.rows, lab.rows
    summary = {
        "seed": seed,
        "admissions": admissions,
        "noise_fraction": noise_fraction,
        "rows": dict(sorted(rows.items())),
        "mortality_rate": float(adm.died.mean()),
        "oracle_auroc": None if np.isnan(oracle := auroc(adm.risk, adm.died)) else oracle,  # None: one class only
        "scenarios": {name: int((adm.scenario == code).sum()) for name, code in SCENARIO.items()},
    }
    (out_dir / "synth.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary


def synth(cfg: PipelineConfig, run_dir: RunDir) -> None:
    """Stage `synth`: the synthetic MIMIC-III tables in run_dir/raw, written whole or not at all."""
    noise_fraction = cfg.synth.noise_fraction
    with atomic_path(run_dir / "raw") as tmp:
        summary = generate(tmp, cfg.synth.admissions, cfg.run.seed, noise_fraction)
    for name, n in summary["rows"].items():
        log.info("synth: %-12s %12d rows", name, n)
    oracle = summary["oracle_auroc"]
    log.info("synth: in-hospital mortality %.1f %%, oracle AUROC (true risk vs label) %s",
             100 * summary["mortality_rate"], "n/a (one class)" if oracle is None else f"{oracle:.3f}")
