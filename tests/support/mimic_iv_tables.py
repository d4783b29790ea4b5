"""The MIMIC-III demo rewritten as MIMIC-IV 2.x/3.x tables (`hosp/`, `icu/`, csv.gz, MIMIC-IV's lower-case
columns), so that the real MIMIC-IV MEDS ETL (tests/support/real_etl.py) can run on open data.

What the rewrite has to invent or change, because MIMIC-IV says it differently:

- no date of birth: `anchor_year` is the year of the patient's first admission and `anchor_age` =
  anchor_year − the demo DOB's year, so the ETL's MEDS_BIRTH (Jan 1 of anchor_year − anchor_age) falls in
  the DOB's year, at most a year before the DOB. MIMIC-IV caps anchor_age at 91; this rewrite does not
  (the demo's over-89s keep their ~300-year age), so birth stays consistent with the DOB;
- `dod` is a date (MIMIC-III writes midnight); `discharge_location` DEAD/EXPIRED is MIMIC-IV's DIED;
- ICUSTAY_ID is `stay_id`; item ids stay as they are (MIMIC-IV's lab ids are MIMIC-III's);
- LABEVENTS has no storetime in MIMIC-III: `storetime` = charttime + `lab_delay_minutes`;
  `labevent_id` and `specimen_id` are the row id, `priority` is empty (MIMIC-III has none);
- chartevents has no `error` column in MIMIC-IV: rows MIMIC-III flags ERROR = 1 are left out (prepare
  drops them from the CSV tables too);
- every other table the ETL reads is written empty, with MIMIC-IV's columns (the mimic-code concept maps
  at the root: the columns the ETL reads). An empty CSV's columns are all text to polars, and the ETL
  joins event tables on hadm_id and stacks their subject_ids with the real tables' integers, so the event
  tables without rows are Parquet with MIMIC-IV's column types (MEDS-Extract reads either); the
  dictionaries, which it reads as text anyway, are csv.gz.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.data.mimic import find_table

TIME = "%Y-%m-%d %H:%M:%S"
GZIP = {"method": "gzip", "compresslevel": 1, "mtime": 0}  # fast, and the same bytes for the same tables
MAP_KEY = "itemid (omop_source_code)"  # the mimic-code concept maps' item id column, as the ETL names it
OMOP = [MAP_KEY, "omop_concept_name", "omop_vocabulary_id", "omop_concept_code"]

# Event tables the ETL reads that the demo has no rows for: MIMIC-IV's columns, written with no rows.
EMPTY_EVENTS = {
    "hosp/diagnoses_icd": ["subject_id", "hadm_id", "seq_num", "icd_code", "icd_version"],
    "hosp/drgcodes": ["subject_id", "hadm_id", "drg_type", "drg_code", "description", "drg_severity",
                      "drg_mortality"],
    "hosp/emar": ["subject_id", "hadm_id", "emar_id", "emar_seq", "poe_id", "pharmacy_id", "enter_provider_id",
                  "charttime", "medication", "event_txt", "scheduletime", "storetime"],
    "hosp/prescriptions": ["subject_id", "hadm_id", "pharmacy_id", "poe_id", "poe_seq", "order_provider_id",
                           "starttime", "stoptime", "drug_type", "drug", "formulary_drug_cd", "gsn", "ndc",
                           "prod_strength", "form_rx", "dose_val_rx", "dose_unit_rx", "form_val_disp",
                           "form_unit_disp", "doses_per_24_hrs", "route"],
    "hosp/hcpcsevents": ["subject_id", "hadm_id", "chartdate", "hcpcs_cd", "seq_num", "short_description"],
    "hosp/omr": ["subject_id", "chartdate", "seq_num", "result_name", "result_value"],
    "hosp/pharmacy": ["subject_id", "hadm_id", "pharmacy_id", "poe_id", "starttime", "stoptime", "medication",
                      "proc_type", "status", "entertime", "verifiedtime", "route", "frequency", "disp_sched",
                      "infusion_type", "sliding_scale", "lockout_interval", "basal_rate", "one_hr_max",
                      "doses_per_24_hrs", "duration", "duration_interval", "expiration_value",
                      "expiration_unit", "expirationdate", "dispensation", "fill_quantity"],
    "hosp/procedures_icd": ["subject_id", "hadm_id", "seq_num", "chartdate", "icd_code", "icd_version"],
    "hosp/transfers": ["subject_id", "hadm_id", "transfer_id", "eventtype", "careunit", "intime", "outtime"],
    "icu/procedureevents": ["subject_id", "hadm_id", "stay_id", "caregiver_id", "starttime", "endtime",
                            "storetime", "itemid", "value", "valueuom", "location", "locationcategory",
                            "orderid", "linkorderid", "ordercategoryname", "ordercategorydescription",
                            "patientweight", "isopenbag", "continueinnextdept", "statusdescription",
                            "originalamount", "originalrate"],
    "icu/inputevents": ["subject_id", "hadm_id", "stay_id", "caregiver_id", "starttime", "endtime", "storetime",
                        "itemid", "amount", "amountuom", "rate", "rateuom", "orderid", "linkorderid",
                        "ordercategoryname", "secondaryordercategoryname", "ordercomponenttypedescription",
                        "ordercategorydescription", "patientweight", "totalamount", "totalamountuom",
                        "isopenbag", "continueinnextdept", "statusdescription", "originalamount",
                        "originalrate"],
    "icu/outputevents": ["subject_id", "hadm_id", "stay_id", "caregiver_id", "charttime", "storetime", "itemid",
                         "value", "valueuom"],
}
# the integer and float columns of those tables (MIMIC-IV's types, as polars infers them from its CSVs)
INTEGER = {"subject_id", "hadm_id", "stay_id", "seq_num", "icd_version", "drg_code", "emar_seq", "pharmacy_id",
           "poe_seq", "itemid", "orderid", "linkorderid", "caregiver_id", "transfer_id", "isopenbag",
           "continueinnextdept"}
FLOAT = {"drg_severity", "drg_mortality", "doses_per_24_hrs", "amount", "rate", "patientweight", "totalamount",
         "originalamount", "originalrate", "value", "one_hr_max", "duration", "expiration_value", "basal_rate",
         "lockout_interval", "fill_quantity"}
# Dictionaries the ETL's metadata blocks read (as text): written empty as csv.gz
EMPTY_DICTIONARIES = {
    "hosp/d_icd_diagnoses": ["icd_code", "icd_version", "long_title"],
    "hosp/d_icd_procedures": ["icd_code", "icd_version", "long_title"],
    "hosp/d_hcpcs": ["code", "category", "long_description", "short_description"],
    # mimic-code's concept maps (v2.4.0), at the input root
    "inputevents_to_rxnorm": OMOP, "meas_chartevents_main": OMOP, "proc_datetimeevents": OMOP,
    "proc_itemid": OMOP, "outputevents_to_loinc": OMOP,
}


def write_mimic_iv(mimic3_dir: Path, out: Path, lab_delay_minutes: int = 0) -> Path:
    """The MIMIC-III tables in `mimic3_dir` as MIMIC-IV tables under `out` (made; must not exist), written
    beside it and moved into place whole."""
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out}: exists; write_mimic_iv makes it")
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    read = _reader(Path(mimic3_dir))
    admissions = read("ADMISSIONS")
    tables = {
        "hosp/patients": patients(read("PATIENTS"), admissions),
        "hosp/admissions": admissions_iv(admissions),
        "icu/icustays": read("ICUSTAYS").rename(columns={"icustay_id": "stay_id"})[
            ["subject_id", "hadm_id", "stay_id", "first_careunit", "last_careunit", "intime", "outtime", "los"]],
        "hosp/labevents": labevents(read("LABEVENTS"), lab_delay_minutes),
        "icu/chartevents": chartevents(read("CHARTEVENTS")),
        "hosp/d_labitems": read("D_LABITEMS")[["itemid", "label", "fluid", "category"]],
        "icu/d_items": d_items(read("D_ITEMS")),
    }
    tables["d_labitems_to_loinc"] = tables["hosp/d_labitems"].rename(columns={"itemid": MAP_KEY}).reindex(
        columns=[*OMOP, "label"])  # the label only: the ETL's description falls back to it
    tables.update({name: pd.DataFrame(columns=cols) for name, cols in EMPTY_DICTIONARIES.items()})
    for name, frame in tables.items():
        path = staging / f"{name}.csv.gz"
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(path, index=False, compression=GZIP)
    for name, cols in EMPTY_EVENTS.items():
        types = [pa.int64() if c in INTEGER else pa.float64() if c in FLOAT else pa.string() for c in cols]
        path = staging / f"{name}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.schema(list(zip(cols, types, strict=True))).empty_table(), path)
    staging.rename(out)
    return out


def _reader(mimic3_dir: Path):
    def read(name: str) -> pd.DataFrame:
        frame = pd.read_csv(find_table(mimic3_dir, name), dtype=str, keep_default_na=False, na_values=[""])
        frame.columns = [c.lower() for c in frame.columns]
        return frame  # every value as its text: times and numbers are written back as they were read
    return read


def patients(p: pd.DataFrame, admissions: pd.DataFrame) -> pd.DataFrame:
    first_admission = pd.to_datetime(admissions.admittime).groupby(admissions.subject_id).min()
    anchor_year = p.subject_id.map(first_admission).dt.year
    born = pd.to_datetime(p.dob).dt.year
    return pd.DataFrame({"subject_id": p.subject_id, "gender": p.gender,
                         "anchor_age": (anchor_year - born).astype("Int64"), "anchor_year": anchor_year.astype("Int64"),
                         "anchor_year_group": "2001 - 2012",  # MIMIC-III's real years (MIMIC-IV's are 2008-2022)
                         "dod": p.dod.str.slice(0, 10)})


def admissions_iv(a: pd.DataFrame) -> pd.DataFrame:
    a = a.rename(columns={"ethnicity": "race"}).assign(admit_provider_id=pd.NA)
    a["discharge_location"] = a.discharge_location.replace({"DEAD/EXPIRED": "DIED"})
    return a[["subject_id", "hadm_id", "admittime", "dischtime", "deathtime", "admission_type", "admit_provider_id",
              "admission_location", "discharge_location", "insurance", "language", "marital_status", "race",
              "edregtime", "edouttime", "hospital_expire_flag"]]


def labevents(lab: pd.DataFrame, lab_delay_minutes: int) -> pd.DataFrame:
    stored = pd.to_datetime(lab.charttime, format=TIME) + pd.Timedelta(minutes=lab_delay_minutes)
    return pd.DataFrame({
        "labevent_id": lab.row_id, "subject_id": lab.subject_id, "hadm_id": lab.hadm_id, "specimen_id": lab.row_id,
        "itemid": lab.itemid, "order_provider_id": pd.NA, "charttime": lab.charttime,
        "storetime": stored.dt.strftime(TIME), "value": lab.value, "valuenum": lab.valuenum,
        "valueuom": lab.valueuom, "ref_range_lower": pd.NA, "ref_range_upper": pd.NA, "flag": lab.flag,
        "priority": pd.NA, "comments": pd.NA})


def chartevents(c: pd.DataFrame) -> pd.DataFrame:
    c = c[c.error.fillna("0").astype(float) != 1]
    return c.rename(columns={"icustay_id": "stay_id", "cgid": "caregiver_id"})[
        ["subject_id", "hadm_id", "stay_id", "caregiver_id", "charttime", "storetime", "itemid", "value", "valuenum",
         "valueuom", "warning"]]


def d_items(d: pd.DataFrame) -> pd.DataFrame:
    return d.assign(lownormalvalue=pd.NA, highnormalvalue=pd.NA)[
        ["itemid", "label", "abbreviation", "linksto", "category", "unitname", "param_type", "lownormalvalue",
         "highnormalvalue"]]
