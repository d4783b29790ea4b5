"""The shipped eICU feature map (pipeline/data/maps/eicu.toml) classifies the codes the eICU MEDS ETL writes
(Medical-Event-Data-Standard/eICU_MEDS, src/eICU_MEDS/configs/event_configs.yaml; PyPI eICU-MEDS 0.1.0 and
git 981c91b): each feature's codes to the feature, its table and its unit conversion, the cohort's codes to
their event, every other code to None; the MIMIC-IV map's later lab item ids, and the chart copies of labs it
leaves out. No data files: the codes are written here as the ETL writes them."""

import pytest

from pipeline.config import ConfigError
from pipeline.data.meds import FeatureMap
from pipeline.features import CHART, FEATURES, LAB, NAMES

EICU = FeatureMap.load("eicu")
MIMIC_IV = FeatureMap.load("mimic-iv")

# The extra columns the ETL writes on each kind of event (event_configs.yaml), besides subject_id (the
# hospital stay, patienthealthsystemstayid), time, code, numeric_value.
LAB_COLUMNS = {"subject_id", "lab_type_id", "text_value"}
VITAL_COLUMNS = {"subject_id", "vital_id"}
ICU_EVENT_COLUMNS = {"subject_id", "hadm_id", "icustay_id", "ward_id"}  # hadm_id is eICU's hospitalid
HOSPITAL_EVENT_COLUMNS = {"subject_id", "hadm_id"}


def lab(name: str, unit: str) -> list[str]:
    """A lab result's code in both ETL generations: 0.1.0 (`LAB//RESULT//…`) and git 981c91b (`LAB//…`)."""
    return [f"LAB//RESULT//{name}//{unit}", f"LAB//{name}//{unit}"]


FEATURE_CODES = [  # (code, feature, factor)
    *[(c, "potassium", 1.0) for c in lab("potassium", "mmol/L") + lab("potassium", "UNK")],
    # eICU labels ionized calcium mg/dL but records mmol/L (pipeline/data/maps/eicu.toml): read as it is
    *[(c, "calcium", 1.0) for u in ("mg/dL", "mmol/L", "UNK") for c in lab("ionized calcium", u)],
    *[(c, "ph", 1.0) for c in lab("pH", "UNK")],
    *[(c, "pco2", 1.0) for c in lab("paCO2", "mm Hg")],
    *[(c, "lactate", 1.0) for c in lab("lactate", "mmol/L")],
    *[(c, "albumin", 1.0) for c in lab("albumin", "g/dL")],
    *[(c, "bun", 1.0) for c in lab("BUN", "mg/dL")],
    *[(c, "creatinine", 1.0) for c in lab("creatinine", "mg/dL")],
    *[(c, "sodium", 1.0) for c in lab("sodium", "mmol/L")],
    *[(c, "bicarbonate", 1.0) for c in lab("bicarbonate", "mmol/L") + lab("HCO3", "mmol/L")],
    *[(c, "platelet", 1.0) for c in lab("platelets x 1000", "K/mcL")],
    *[(c, "glucose", 1.0) for c in lab("glucose", "mg/dL")],
    *[(c, "magnesium", 1.0) for c in lab("magnesium", "mg/dL")],
    ("VITALS//PERIODIC//HEARTRATE", "heartrate", 1.0),
    ("VITALS//PERIODIC//BP//SYSTEMIC_SYSTOLIC", "sysbp", 1.0),
    ("VITALS//APERIODIC//BP//NONINVASIVE_SYSTOLIC", "sysbp", 1.0),
    ("VITALS//PERIODIC//BP//SYSTEMIC_DIASTOLIC", "diasbp", 1.0),
    ("VITALS//APERIODIC//BP//NONINVASIVE_DIASTOLIC", "diasbp", 1.0),
    ("VITALS//PERIODIC//TEMPERATURE", "tempc", 1.0),  # °C in eICU
    ("VITALS//PERIODIC//RESPIRATION", "resprate", 1.0),
    ("VITALS//PERIODIC//SAO2", "spo2", 1.0),
]

COHORT_CODES = [
    ("MEDS_BIRTH", "birth"),
    ("MEDS_DEATH", "death"),
    ("HOSPITAL_ADMISSION//Emergency Department//Midwest//False//100 - 249", "hospital_admission"),
    ("HOSPITAL_ADMISSION//UNK//UNK//UNK//UNK", "hospital_admission"),
    ("HOSPITAL_DISCHARGE//Expired//Death", "hospital_discharge"),
    ("HOSPITAL_DISCHARGE//Alive//Home", "hospital_discharge"),
    ("ICU_ADMISSION//Emergency Department//admit", "icu_admission"),
    ("ICU_ADMISSION//Floor//transfer", "icu_admission"),
    ("ICU_DISCHARGE//Alive//Step-Down Unit (SDU)", "icu_discharge"),
    ("ICU_DISCHARGE//Expired//Death", "icu_discharge"),
]

OTHER_CODES = [
    "LAB//SPECIMEN_DRAWN//potassium//mmol/L",  # the draw of 0.1.0, no value
    *lab("calcium", "mg/dL"),  # total calcium: not ionized
    *lab("bedside glucose", "mg/dL"),  # fingerstick, not the laboratory glucose
    "LAB//RESULT//glucose - CSF//mg/dL",
    "LAB//RESULT//urinary sodium//mmol/L",
    "LAB//RESULT//urinary creatinine//mg/dL",
    "LAB//RESULT//Total CO2//UNK",
    "LAB//RESULT//paO2//mm Hg",
    "LAB//RESULT//O2 Sat (%)//%",
    "LAB//RESULT//Temperature//°C",  # lab-table temperature (blood gas), not the charted vital
    "LAB//RESULT//Respiratory Rate///min",  # ventilator lab entry, not the charted vital
    "LAB//RESULT//Phenytoin//mcg/mL",
    "LAB//RESULT//potassium//mg/dL",  # a unit the map does not know
    "VITALS//PERIODIC//BP//SYSTEMIC_MEAN",
    "VITALS//APERIODIC//BP//NONINVASIVE_MEAN",
    "VITALS//PERIODIC//BP//PULM_ART_SYSTOLIC",
    "VITALS//PERIODIC//BP//PULM_ART_DIASTOLIC",
    "VITALS//PERIODIC//CVP",
    "VITALS//PERIODIC//ETCO2",
    "VITALS//PERIODIC//ST1",
    "VITALS//APERIODIC//PAOP",
    "ICU_ADMISSION_WEIGHT",
    "ICU_ADMISSION_HEIGHT",
    "ICU_DISCHARGE_WEIGHT",
    "SUBJECT_WEIGHT_AT_INFUSION",
    "INFUSION_DRUG",
    "GENDER//Female",
    "RACE//Caucasian",
    "ADMISSION_DIAGNOSIS//admission diagnosis|Was the patient admitted from the O.R. or went to the O.R.?",
    "DIAGNOSIS//cardiovascular|shock / hypotension|sepsis",
    "MEDICATION//STARTED//POTASSIUM CHLORIDE 20 MEQ",
    "TREATMENT//ENTERED//cardiovascular|shock|vasopressors",
    "ALLERGY//Drug",
]


@pytest.mark.parametrize(("code", "feature", "factor"), FEATURE_CODES)
def test_feature_codes_classify_to_the_feature_table_and_unit(code, feature, factor):
    k = NAMES.index(feature)
    got = EICU.classify(code)
    assert got == (k, -1, FEATURES[k].table, pytest.approx(factor, rel=1e-12), 0.0, False)


def test_every_feature_has_a_code():
    assert {feature for _, feature, _ in FEATURE_CODES} == set(NAMES)


def test_ionized_calcium_labelled_mg_dl_is_read_as_the_mmol_l_it_is():
    *_, factor, offset, fahrenheit = EICU.classify("LAB//RESULT//ionized calcium//mg/dL")
    assert 1.15 * factor + offset == 1.15 and not fahrenheit


@pytest.mark.parametrize(("code", "event"), COHORT_CODES)
def test_cohort_codes_classify_to_their_event(code, event):
    assert EICU.classify(code) == event


@pytest.mark.parametrize("code", OTHER_CODES)
def test_other_codes_are_no_feature(code):
    assert EICU.classify(code) is None


def test_the_id_columns_are_on_the_events_that_need_them():
    """Labs are keyed by admission_id and vitals by stay_id: the ETL's lab and vital events carry only
    subject_id (the hospital stay) of the ids, so both are subject_id; its hadm_id is the hospital (site)."""
    assert EICU.admission_id in LAB_COLUMNS & HOSPITAL_EVENT_COLUMNS & ICU_EVENT_COLUMNS
    assert EICU.stay_id in VITAL_COLUMNS & ICU_EVENT_COLUMNS
    assert "hadm_id" not in (EICU.admission_id, EICU.stay_id)
    tables = {EICU.classify(code)[2] for code, _, _ in FEATURE_CODES}
    assert tables == {LAB, CHART}
    for code, _, _ in FEATURE_CODES:
        assert EICU.classify(code)[2] == (CHART if code.startswith("VITALS//") else LAB), code


@pytest.mark.parametrize(("code", "feature", "item"), [
    ("LAB//RESULT//52546//mg/dL", "creatinine", 52546), ("LAB//50912//mg/dL", "creatinine", 50912),
    ("LAB//RESULT//52623//mEq/L", "sodium", 52623), ("LAB//RESULT//50983//mEq/L", "sodium", 50983)])
def test_mimic_iv_later_lab_ids_are_their_test(code, feature, item):
    """Read as the feature, under their own item id (a draw pairs with its own item's specimen event)."""
    assert MIMIC_IV.classify(code) == (NAMES.index(feature), item, LAB, 1.0, 0.0, False)


@pytest.mark.parametrize("code", ["LAB//220645//mEq/L", "LAB//227443//mEq/L", "LAB//227457//K/uL",
                                  "LAB//RESULT//50971//mEq/L", "LAB//SPECIMEN_COLLECTED//52546//STAT"])
def test_mimic_iv_chart_copies_and_other_potassium_are_no_feature(code):
    assert MIMIC_IV.classify(code) is None


def test_an_item_alias_of_no_feature_item_is_one_line(tmp_path):
    text = tmp_path / "map.toml"
    shipped = MIMIC_IV.path.read_text()
    text.write_text(shipped.replace("52546 = 50912", "52546 = 99999"))
    with pytest.raises(ConfigError, match=r"map.toml: item_aliases: 52546 = 99999 is not"):
        FeatureMap.load(str(text))
