"""Admissions, ICU stays and patients: who is admitted, when, for how long, and who dies.

A share of admissions is built to trip each cohort rule (:data:`SCENARIOS`); the rest are ordinary.
:func:`draw_admissions` draws each admission's latents, true risk, label, ICU course and stays
(:class:`Admissions`, :class:`Stays`; times in hours from the reference time of the stay that counts),
and :func:`place_in_time` groups admissions into subjects and sets absolute times and ids.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.data.synth.physiology import Latents, draw_latents, true_risk
from pipeline.data.synth.units import DAY_S, FIRST_YEAR, LAST_YEAR, YEAR_DAYS

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

