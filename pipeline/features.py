"""The model's input: the features (where they come from in MIMIC-III and which values are plausible) and
the hours of the window.

This table is docs/dataset.md's feature table in code; `prepare` and `synth` both read it. Order matters:
it is the order of the `feature` dimension of dataset.zarr.
"""

from __future__ import annotations

from dataclasses import dataclass

LAB, CHART = "LABEVENTS", "CHARTEVENTS"


@dataclass(frozen=True)
class UnitSlip:
    """A value typed in another unit than the field's: what is entered is v · factor + offset."""

    unit: str  # the unit the value was really in
    factor: float
    offset: float = 0.0


@dataclass(frozen=True)
class Feature:
    name: str
    table: str
    itemids: tuple[int, ...]
    lo: float  # plausible values: lo < v <= hi (after unit conversion)
    hi: float
    unit: str
    fahrenheit_itemids: tuple[int, ...] = ()  # converted (F − 32)·5/9 before the range check
    decimals: int = 0  # digits after the point as the value is usually typed (for transposed digits)
    slips: tuple[UnitSlip, ...] = ()  # the unit confusions that occur for it (docs/methods.md §9)

    @property
    def all_itemids(self) -> tuple[int, ...]:
        return self.itemids + self.fahrenheit_itemids


FEATURES: tuple[Feature, ...] = (
    Feature("potassium", LAB, (50822,), 0, 30, "mEq/L", decimals=1),
    Feature("calcium", LAB, (50808,), 0, 10, "mmol/L", decimals=2,
            slips=(UnitSlip("mg/dL", 4.008),)),  # free (ionized) calcium, blood gas
    Feature("ph", LAB, (50820,), 6, 8, "pH", decimals=2),
    Feature("pco2", LAB, (50818,), 0, 200, "mmHg", slips=(UnitSlip("kPa", 1 / 7.50062),)),
    Feature("lactate", LAB, (50813,), 0, 50, "mmol/L", decimals=1, slips=(UnitSlip("mg/dL", 9.008),)),
    Feature("albumin", LAB, (50862,), 0, 10, "g/dL", decimals=1),
    Feature("bun", LAB, (51006,), 0, 300, "mg/dL", slips=(UnitSlip("mmol/L urea", 0.357),)),
    Feature("creatinine", LAB, (50912,), 0, 150, "mg/dL", decimals=1,
            slips=(UnitSlip("µmol/L", 88.42),)),
    Feature("sodium", LAB, (50983,), 0, 200, "mEq/L"),
    Feature("bicarbonate", LAB, (50882,), 0, 10000, "mEq/L"),
    Feature("platelet", LAB, (51265,), 0, 10000, "K/uL", slips=(UnitSlip("/uL", 1000.0),)),
    Feature("glucose", LAB, (50931,), 0, 10000, "mg/dL", slips=(UnitSlip("mmol/L", 1 / 18.016),)),
    Feature("magnesium", LAB, (50960,), 0, 20, "mg/dL", decimals=1,
            slips=(UnitSlip("mmol/L", 1 / 2.431),)),
    Feature("heartrate", CHART, (211, 220045), 0, 300, "bpm"),
    Feature("sysbp", CHART, (51, 442, 455, 6701, 220179, 220050), 0, 400, "mmHg"),
    Feature("diasbp", CHART, (8368, 8440, 8441, 8555, 220180, 220051), 0, 300, "mmHg"),
    Feature("tempc", CHART, (223762, 676), 10, 50, "°C", fahrenheit_itemids=(223761, 678), decimals=1,
            slips=(UnitSlip("°F", 9 / 5, 32.0),)),
    Feature("resprate", CHART, (615, 618, 220210, 224690), 0, 70, "breaths/min"),
    Feature("spo2", CHART, (646, 220277), 0, 100, "%", slips=(UnitSlip("fraction", 0.01),)),
)

NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
WINDOW_HOURS = 48  # the papers' window: hourly bins of the first 48 h from ICU intime ([prepare] window_hours)
BY_NAME = {f.name: f for f in FEATURES}
FAHRENHEIT_ITEMIDS = frozenset(i for f in FEATURES for i in f.fahrenheit_itemids)


def fahrenheit_to_celsius(value):
    """°F → °C as every source converts it (one formula: the same float64 rounding on every path)."""
    return (value - 32.0) * 5.0 / 9.0


def itemid_to_feature(table: str) -> dict[int, int]:
    """itemid → feature index, for the features that come from `table`."""
    return {item: k for k, f in enumerate(FEATURES) if f.table == table for item in f.all_itemids}
