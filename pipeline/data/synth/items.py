"""The item dictionaries (D_ITEMS, D_LABITEMS) and which item charts each measurement.

Feature items are those of :mod:`pipeline.features` (the CareVue and MetaVision ids of each vital sign,
the lab ids); noise items are the other items of real MIMIC's tables, some of them traps (mean blood
pressures, calculated temperatures, serum potassium next to the blood-gas one). :class:`ItemTable` looks
units up by itemid, :class:`NoiseItems` draws noise rows, and :func:`pick_items` picks the item a vital
sign is charted with, by charting system and a flag of the stay (arterial line, °F, ventilated).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from pipeline.data.synth.units import CAREVUE, METAVISION, round_to
from pipeline.features import CHART, FAHRENHEIT_ITEMIDS, LAB, itemid_to_feature


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
FAHRENHEIT[sorted(FAHRENHEIT_ITEMIDS)] = True  # features.py says which items are °F
DIASBP_LOOKUP = np.zeros(CHART_ITEMS.uom_code.size, np.int64)
DIASBP_LOOKUP[list(DIASBP_OF_SYSBP)] = list(DIASBP_OF_SYSBP.values())


def pick_items(rng: np.random.Generator, choices: tuple[np.ndarray, np.ndarray], case: np.ndarray) -> np.ndarray:
    items, cum = choices
    column = (rng.random(len(case))[:, None] >= cum[case]).sum(axis=1)
    return items[case, np.minimum(column, 3)]
