"""The event tables, CHARTEVENTS and LABEVENTS, for one chunk of admissions.

Observed values are the clinical transform of the latent trajectories plus measurement noise
(:func:`observe`), charted at realistic times: vital signs ~hourly with the item of the stay's charting
system (:func:`vital_rows`), labs in panels every 4–24 h, blood gases sparse (:func:`lab_table`); mixed
with non-feature noise rows. A share of the rows trips each event rule: re-charted error rows, empty
VALUENUM, out-of-range values, an empty HADM_ID or ICUSTAY_ID (the ``P_*`` shares).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.data.synth.admissions import Admissions
from pipeline.data.synth.items import (
    CHART_ITEMS,
    CHART_NOISE,
    DIASBP_LOOKUP,
    FAHRENHEIT,
    HR_ITEMS,
    LAB_ITEMS,
    LAB_NOISE,
    RESP_ITEMS,
    SPO2_ITEMS,
    SYSBP_ITEMS,
    TEMP_ITEMS,
    pick_items,
)
from pipeline.data.synth.physiology import (
    CLIP,
    DECIMALS,
    FAHRENHEIT_JUNK,
    IS_LOG,
    JUNK,
    LOC,
    NOISE,
    NORMAL,
    SCALE,
    Latents,
)
from pipeline.data.synth.units import CAREVUE, FEATURE, METAVISION, minute, round_to, timestamps, to_seconds
from pipeline.features import FEATURES

# Event-rule cases, as shares of feature event rows.
P_ERROR = 0.004  # MetaVision rows re-charted with a wrong value and ERROR = 1
P_OUT_OF_RANGE = 0.002
P_NO_VALUENUM = 0.002
P_LAB_NO_HADM = 0.005  # in-hospital lab rows whose HADM_ID is missing
P_CHART_NO_ICUSTAY = 0.001  # CHARTEVENTS rows whose ICUSTAY_ID is missing (HADM_ID kept), as in MIMIC
CHART_TEXTS = ("ERROR", "UNABLE TO REPORT", "Not Done")
LAB_TEXTS = ("ERROR", "UNABLE TO REPORT", "HEMOLYZED", "NOT DONE")


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

