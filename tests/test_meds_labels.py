"""The in-hospital death label of a MEDS dataset, case by case (pipeline/data/meds_cohort.py, died_in_hospital).

The MIMIC-IV ETL writes MEDS_DEATH at the deathtime when there is one, otherwise at the date of death at
midnight. Counting any death from admission to a day after discharge made two kinds of patients die in
hospital who did not: one discharged alive whose date of death is the discharge day or the next, and one
who died during a readmission within a day (the earlier admission was marked). The discharge code, where
the map says which ones mean death, gives the label the hospital recorded.
"""

import dataclasses

import pandas as pd
import pytest

from pipeline.data import meds, meds_cohort

pytestmark = pytest.mark.thirdparty  # the floors job runs these (tests/test_floors.py)

MIMIC_IV = meds.FeatureMap.load("mimic-iv")
NO_DISPOSITION = dataclasses.replace(MIMIC_IV, died_at_discharge=None)  # death events only


def t(text: str) -> pd.Timestamp:
    return pd.Timestamp(f"2150-01-{text}")


# subject → (admissions: (hadm_id, admittime, dischtime, discharge code), death time or None)
CASES = {
    # discharged alive to a nursing facility; date of death the next day (at midnight, date only)
    "alive, date of death the next day": (1, [(10, "01 10:00", "05 14:00", "SNF")], "06 00:00"),
    # discharged alive; date of death the discharge day itself: inside the stay by date, but the
    # hospital recorded a live discharge
    "alive, date of death the discharge day": (2, [(20, "01 10:00", "05 14:00", "HOME")], "05 00:00"),
    # discharged home, readmitted the same evening, died in the readmission 2 h later
    "died in a readmission within a day": (3, [(30, "01 08:00", "03 10:00", "HOME"),
                                               (31, "03 20:00", "04 09:00", "DIED")], "03 22:00"),
    # MIMIC's deathtime can trail the dischtime: a timed death 6 h after a DIED discharge
    "deathtime after the dischtime": (4, [(40, "01 08:00", "04 10:00", "DIED")], "04 16:00"),
    # MIMIC-III-shaped data: DEAD/EXPIRED, no death event at all
    "dead/expired, no death event": (5, [(50, "01 08:00", "02 10:00", "DEAD/EXPIRED")], None),
}
# hadm_id → (label with the discharge codes, label from death events alone, evidence of the latter)
EXPECTED = {10: (0, 0, "no_death"), 20: (0, 1, "death_date"), 30: (0, 0, "no_death"), 31: (1, 1, "death_time"),
            40: (1, 1, "death_time"), 50: (1, 0, "no_death")}


def tables():
    admissions, events = [], []
    for subject, stays, death in CASES.values():
        for hadm, admit, discharge, where in stays:
            admissions.append({"hadm_id": hadm, "subject_id": subject, "admittime": t(admit),
                               "dischtime": t(discharge)})
            events.append({"subject_id": subject, "time": t(discharge), "code": f"HOSPITAL_DISCHARGE//{where}",
                           "event": "hospital_discharge", "hadm_id": hadm})
        if death:
            events.append({"subject_id": subject, "time": t(death), "code": "MEDS_DEATH", "event": "death",
                           "hadm_id": None})
    return pd.DataFrame(admissions), pd.DataFrame(events)


@pytest.mark.parametrize("fmap", [MIMIC_IV, NO_DISPOSITION], ids=["discharge codes", "death events only"])
def test_each_case_gets_the_label_the_hospital_recorded(fmap):
    admissions, events = tables()
    flag, evidence = meds_cohort.died_in_hospital(admissions, events, fmap.died_at_discharge, fmap.admission_id)
    column = 0 if fmap is MIMIC_IV else 1
    got = dict(zip(admissions.hadm_id, flag.tolist(), strict=True))
    assert got == {hadm: expected[column] for hadm, expected in EXPECTED.items()}
    if fmap is MIMIC_IV:
        assert set(evidence) == {"discharge_disposition"}
    else:
        assert dict(zip(admissions.hadm_id, evidence, strict=True)) == {h: e[2] for h, e in EXPECTED.items()}


def test_the_two_wrong_labels_of_the_issue_are_0():
    """What the old rule (death from admission to 24 h after discharge) got wrong: both now 0, with or
    without discharge codes."""
    admissions, events = tables()
    for fmap in (MIMIC_IV, NO_DISPOSITION):
        flag, _ = meds_cohort.died_in_hospital(admissions, events, fmap.died_at_discharge, fmap.admission_id)
        got = dict(zip(admissions.hadm_id, flag.tolist(), strict=True))
        assert got[10] == 0 and got[30] == 0
    # the old rule, as it was, for the record: it gave both 1
    died = admissions.subject_id.map(events[events.event == "death"].groupby("subject_id").time.min())
    old = (died >= admissions.admittime) & (died <= admissions.dischtime + pd.Timedelta(hours=24))
    assert dict(zip(admissions.hadm_id, old, strict=True))[10] and dict(zip(admissions.hadm_id, old, strict=True))[30]


def test_a_discharge_code_pattern_of_a_users_map_is_read(tmp_path):
    text = (meds.MAPS / "mimic-iv.toml").read_text().replace(
        "died_at_discharge = '^HOSPITAL_DISCHARGE//(DIED|DEAD/EXPIRED)$'", "died_at_discharge = '//EXPIRED$'")
    (tmp_path / "mine.toml").write_text(text)
    fmap = meds.FeatureMap.load(str(tmp_path / "mine.toml"))
    admissions, events = tables()
    flag, _ = meds_cohort.died_in_hospital(admissions, events, fmap.died_at_discharge, fmap.admission_id)
    assert dict(zip(admissions.hadm_id, flag.tolist(), strict=True))[31] == 0  # DIED is not //EXPIRED here
    (tmp_path / "bad.toml").write_text(text.replace("'//EXPIRED$'", "'(unclosed'"))
    with pytest.raises(meds.ConfigError, match="bad.toml"):
        meds.FeatureMap.load(str(tmp_path / "bad.toml"))
