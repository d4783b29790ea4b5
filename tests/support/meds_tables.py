"""The MIMIC-III tables with their values as MEDS stores them, for the tests of prepare's MEDS source.

MEDS's `numeric_value` is float32: :func:`rounded_copy` writes the CSV tables with VALUENUM rounded the
same way (and written exactly), so that prepare from the CSV copy and prepare from the MEDS dataset
(pipeline/data/meds_export.py) can be compared bit for bit.
"""

import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.cli import main

TABLES = ("PATIENTS", "ADMISSIONS", "ICUSTAYS", "LABEVENTS", "CHARTEVENTS")


def rounded_copy(mimic_dir: Path, out: Path) -> Path:
    """The tables with LABEVENTS' and CHARTEVENTS' valuenum rounded to float32."""
    out.mkdir(parents=True)
    for name in TABLES:
        path = next(p for p in Path(mimic_dir).iterdir() if p.name.lower().startswith(name.lower() + ".csv"))
        df = pd.read_csv(path, low_memory=False)
        for col in (c for c in df.columns if c.lower() == "valuenum"):
            df[col] = df[col].astype(np.float32).astype(np.float64)
        df.to_csv(out / f"{name}.csv.gz", index=False, float_format="%.17g")
    return out


# The 19 features' codes as the eICU MEDS ETL writes them (pipeline/data/maps/eicu.toml): eICU's lab names
# and units, and the vitalPeriodic columns. Temperature is °C in eICU.
EICU_CODES = {
    "potassium": "LAB//RESULT//potassium//mmol/L", "calcium": "LAB//RESULT//ionized calcium//mmol/L",
    "ph": "LAB//RESULT//pH//UNK", "pco2": "LAB//RESULT//paCO2//mm Hg", "lactate": "LAB//RESULT//lactate//mmol/L",
    "albumin": "LAB//RESULT//albumin//g/dL", "bun": "LAB//RESULT//BUN//mg/dL",
    "creatinine": "LAB//RESULT//creatinine//mg/dL", "sodium": "LAB//RESULT//sodium//mmol/L",
    "bicarbonate": "LAB//RESULT//bicarbonate//mmol/L", "platelet": "LAB//RESULT//platelets x 1000//K/mcL",
    "glucose": "LAB//RESULT//glucose//mg/dL", "magnesium": "LAB//RESULT//magnesium//mg/dL",
    "heartrate": "VITALS//PERIODIC//HEARTRATE", "sysbp": "VITALS//PERIODIC//BP//SYSTEMIC_SYSTOLIC",
    "diasbp": "VITALS//PERIODIC//BP//SYSTEMIC_DIASTOLIC", "tempc": "VITALS//PERIODIC//TEMPERATURE",
    "resprate": "VITALS//PERIODIC//RESPIRATION", "spo2": "VITALS//PERIODIC//SAO2",
}
CUFF_PRESSURES = (442, 455, 220179, 8440, 8441, 220180)  # MIMIC's non-invasive (cuff) systolic, diastolic
HOSPITAL_SITE = 73  # eICU's hospitalid: what the eICU ETL writes in its `hadm_id` column


def as_eicu(meds_root: Path, out: Path) -> Path:
    """A MEDS root with the MIMIC-IV ETL's codes (meds_export.write_meds) rewritten in the eICU ETL's shape:
    one subject a hospital stay (the MIMIC hadm_id; birth and death copied to each of a patient's stays),
    `hadm_id` the hospital site, `icustay_id` only on ICU admission and discharge, feature codes by eICU
    lab name and vital column, °F temperatures in °C; other codes kept; events without a hadm_id dropped."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.features import FEATURES, fahrenheit_to_celsius

    by_item = {i: (f.name, i in f.fahrenheit_itemids) for f in FEATURES for i in f.all_itemids}
    events = pd.concat([pq.read_table(p).to_pandas() for p in sorted((meds_root / "data").rglob("*.parquet"))])
    stays = events.dropna(subset=["hadm_id"])[["subject_id", "hadm_id"]].drop_duplicates()
    per_patient = events[events.code.isin(["MEDS_BIRTH", "MEDS_DEATH"])].merge(stays, on="subject_id",
                                                                                 suffixes=("_old", ""))
    events = pd.concat([per_patient.drop(columns="hadm_id_old"), events.dropna(subset=["hadm_id"])])
    item = events.code.str.extract(r"^LAB//(\d+)//")[0].astype(float)
    feature = item.map(lambda i: by_item.get(int(i), (None, False)) if i == i else (None, False))
    name, fahrenheit = feature.str[0], feature.str[1].astype(bool)
    events["code"] = name.map(EICU_CODES).fillna(events.code)
    cuff = item.isin(CUFF_PRESSURES)  # vitalAperiodic's non-invasive pressures are codes of their own
    events.loc[cuff, "code"] = events.code[cuff].str.replace("PERIODIC//BP//SYSTEMIC", "APERIODIC//BP//NONINVASIVE")
    events.loc[fahrenheit, "numeric_value"] = fahrenheit_to_celsius(
        events.numeric_value[fahrenheit].astype(np.float64)).astype(np.float32)
    events["subject_id"] = events.hadm_id.astype(np.int64)
    events["hadm_id"] = HOSPITAL_SITE
    events.loc[~events.code.str.startswith("ICU_"), "icustay_id"] = np.nan
    events = events.sort_values(["subject_id", "time"], kind="stable")
    (out / "data").mkdir(parents=True)
    schema = pq.read_schema(next((meds_root / "data").rglob("*.parquet")))
    pq.write_table(pa.Table.from_pandas(events[schema.names], schema=schema, preserve_index=False),
                   out / "data" / "0.parquet")
    (out / "metadata").mkdir()
    pq.write_table(pq.read_table(meds_root / "metadata" / "codes.parquet"), out / "metadata" / "codes.parquet")
    return out


def results_at_storetime(meds_root: Path, out: Path, delay_minutes: float) -> Path:
    """A MEDS root (meds_export.write_meds) with its labs in the MIMIC-IV ETL's later form (0.1.0 on): each lab
    event becomes the valued `LAB//RESULT//{itemid}//{unit}` `delay_minutes` later (storetime) and a value-less
    `LAB//SPECIMEN_COLLECTED//{itemid}` at its own time (charttime), in that order in the file."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from pipeline.features import FEATURES, LAB

    lab_items = [str(i) for f in FEATURES if f.table == LAB for i in f.all_itemids]
    shutil.copytree(meds_root / "metadata", out / "metadata")
    (out / "data").mkdir(parents=True)
    for path in sorted((meds_root / "data").rglob("*.parquet")):
        # in pyarrow: pandas 2.0 (the floors) cannot concatenate these frames' datetime columns
        table = pq.read_table(path)
        item = pc.struct_field(pc.extract_regex(table["code"], r"^LAB//(?P<item>[0-9]+)//"), "item")
        lab = pc.fill_null(pc.is_in(item, value_set=pa.array(lab_items)), False)
        labs, lab_item = table.filter(lab), item.filter(lab)
        delay = pa.scalar(int(delay_minutes * 60_000_000), pa.duration("us"))
        results = labs.set_column(labs.schema.get_field_index("code"), "code",
                                  pc.replace_substring_regex(labs["code"], "^LAB//", "LAB//RESULT//"))
        results = results.set_column(results.schema.get_field_index("time"), "time",
                                     pc.cast(pc.add(labs["time"], delay), table.schema.field("time").type))
        draws = labs.set_column(labs.schema.get_field_index("code"), "code",
                                pc.binary_join_element_wise("LAB//SPECIMEN_COLLECTED//", lab_item, ""))
        draws = draws.set_column(draws.schema.get_field_index("numeric_value"), "numeric_value",
                                 pa.nulls(draws.num_rows, table.schema.field("numeric_value").type))
        events = pa.concat_tables([table.filter(pc.invert(lab)), results, draws])
        order = pc.sort_indices(events, [("subject_id", "ascending"), ("time", "ascending")])  # stable
        pq.write_table(events.take(order).cast(table.schema), out / "data" / path.name)
    return out


def prepare_meds(root, run, *overrides):
    return main(["prepare", "--run-dir", str(run), "prepare.source=meds", f"prepare.meds_dir={root}", *overrides])


def assert_one_line_nothing_written(capsys, run, needle):
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1, err
    assert not (run / "dataset.zarr").exists()
    assert not list(run.glob("prepare-events-*")) and not list(run.glob("*.tmp*"))
    return err
