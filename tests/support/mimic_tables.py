"""Hand-written MIMIC-III tables for rule tests: a few admissions, each built to hit one rule.

Times are given in hours relative to the ICU stay's intime; `write` produces the CSV(.gz) files in
the layout `prepare` reads (upper- or lower-case names and headers).
"""

from __future__ import annotations

import gzip
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.features import FEATURES

T0 = pd.Timestamp("2150-03-01 08:00:00")
HR = 220045  # heart rate, MetaVision: used as the span anchor events


def fmt(ts: pd.Timestamp | None) -> str:
    return "" if ts is None else ts.strftime("%Y-%m-%d %H:%M:%S")


@dataclass
class Tables:
    patients: list[dict] = field(default_factory=list)
    admissions: list[dict] = field(default_factory=list)
    icustays: list[dict] = field(default_factory=list)
    labs: list[dict] = field(default_factory=list)
    charts: list[dict] = field(default_factory=list)
    intime: dict[int, pd.Timestamp] = field(default_factory=dict)  # icustay_id → intime
    first_stay: dict[int, int] = field(default_factory=dict)  # hadm_id → its first icustay_id

    def admission(self, hadm: int, *, age: float = 60.0, hospital_hours: float = 240.0, y: int = 0,
                  has_chartevents_data: int = 1, stays: tuple[tuple[int, float, float], ...] | None = None,
                  anchors: bool = True, dob: pd.Timestamp | None = None, start: pd.Timestamp = T0) -> int:
        """An admission of a new patient; `stays` = (icustay_id, start hour, length in hours)."""
        subject = hadm - 100000 + 1
        stays = stays or ((hadm + 100000, 2.0, 96.0),)
        admit = start
        dob = dob if dob is not None else admit + pd.Timedelta(hours=2) - pd.Timedelta(days=age * 365.2425)
        self.patients.append({"row_id": subject, "subject_id": subject, "gender": "F", "dob": fmt(dob)})
        self.admissions.append({"row_id": hadm, "subject_id": subject, "hadm_id": hadm, "admittime": fmt(admit),
                                "dischtime": fmt(admit + pd.Timedelta(hours=hospital_hours)),
                                "hospital_expire_flag": y, "has_chartevents_data": has_chartevents_data})
        for icustay, begin, length in stays:
            intime = admit + pd.Timedelta(hours=begin)
            self.intime[icustay] = intime
            self.icustays.append({"row_id": icustay, "subject_id": subject, "hadm_id": hadm, "icustay_id": icustay,
                                  "dbsource": "metavision", "intime": fmt(intime),
                                  "outtime": fmt(intime + pd.Timedelta(hours=length)), "los": length / 24})
        self.first_stay[hadm] = stays[0][0]
        if anchors:  # events at 0.5 h and 47.5 h satisfy the span rule
            self.chart(stays[0][0], HR, 0.5, 80.0)
            self.chart(stays[0][0], HR, 47.5, 80.0)
        return stays[0][0]

    def lab(self, hadm: int, itemid: int, t: float, value: float | None, hadm_id_empty: bool = False) -> None:
        icustay = self.first_stay[hadm]
        when = self.intime[icustay] + pd.Timedelta(hours=t)
        self.labs.append({"row_id": len(self.labs) + 1, "subject_id": hadm - 100000 + 1,
                          "hadm_id": "" if hadm_id_empty else hadm, "itemid": itemid, "charttime": fmt(when),
                          "value": "" if value is None else value, "valuenum": "" if value is None else value})

    def chart(self, icustay: int, itemid: int, t: float, value: float | None, error: int | str = 0) -> None:
        when = self.intime[icustay] + pd.Timedelta(hours=t)
        self.charts.append({"row_id": len(self.charts) + 1, "icustay_id": icustay, "itemid": itemid,
                            "charttime": fmt(when), "value": "" if value is None else value,
                            "valuenum": "" if value is None else value, "error": error})

    def fill_every_feature(self, hadm: int, t: float = 10.0) -> None:
        """One plausible event of every feature, so that every feature has percentiles."""
        icustay = self.first_stay[hadm]
        for f in FEATURES:
            value = filler_value(f.name)
            if f.table == "LABEVENTS":
                self.lab(hadm, f.itemids[0], t, value)
            else:
                self.chart(icustay, f.itemids[0], t, value)

    def write(self, folder: Path, upper: bool = True, gz: bool = True) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        tables = {"PATIENTS": self.patients, "ADMISSIONS": self.admissions, "ICUSTAYS": self.icustays,
                  "LABEVENTS": self.labs, "CHARTEVENTS": self.charts}
        for name, rows in tables.items():
            df = pd.DataFrame(rows)
            if upper:
                df.columns = [c.upper() for c in df.columns]
            fname = (name if upper else name.lower()) + (".csv.gz" if gz else ".csv")
            text = df.to_csv(index=False)
            if gz:
                with gzip.open(folder / fname, "wt") as f:
                    f.write(text)
            else:
                (folder / fname).write_text(text)
        return folder


def filler_value(name: str) -> float:
    """The value `fill_every_feature` writes for a feature: inside its plausible range."""
    f = next(f for f in FEATURES if f.name == name)
    return (f.lo + min(f.hi, 3 * max(f.lo, 1) + 10)) / 2


def baseline() -> Tables:
    """One ordinary admission (hadm 100001) carrying an event of every feature."""
    t = Tables()
    t.admission(100001)
    t.fill_every_feature(100001)
    return t


def with_unparseable_values(demo_dir: Path, where: Path) -> Path:
    """A copy of the demo's tables at `where` with 'abc' in ~1,000 CHARTEVENTS valuenum cells."""
    import csv
    import io
    import shutil

    shutil.copytree(demo_dir, where)
    path = where / "CHARTEVENTS.csv.gz"
    path.chmod(0o644)
    rows = list(csv.reader(io.StringIO(gzip.open(path, "rt").read())))
    column = [c.lower() for c in rows[0]].index("valuenum")
    for i in range(1, len(rows), len(rows) // 1000):
        rows[i][column] = "abc"
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    with gzip.open(path, "wt") as f:
        f.write(out.getvalue())
    return where


def prepare_repeatedly(tables: Path, runs: Path, times: int, timeout: float = 60) -> list[tuple[int, str]]:
    """`python -m pipeline prepare` on `tables` `times` times, two at once, each into runs/rK; (exit code, stderr)
    of each, 124 for one that did not end within `timeout` seconds."""
    import subprocess
    import sys
    from concurrent.futures import ThreadPoolExecutor

    def prepare(k: int) -> tuple[int, str]:
        try:
            done = subprocess.run([sys.executable, "-m", "pipeline", "prepare", "--run-dir", str(runs / f"r{k}"),
                                   "--mimic-dir", str(tables)], capture_output=True, text=True, timeout=timeout,
                                  cwd=Path(__file__).resolve().parents[2])
        except subprocess.TimeoutExpired:
            return 124, "timed out"
        return done.returncode, done.stderr

    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(prepare, range(times)))


def write_edited_tables(demo_dir, out, cells: pd.DataFrame) -> None:
    """The demo's tables with every event of each cell in `cells` (hadm_id, icustay_id, intime, feature,
    hour, after) set to `after`: the cell's mean becomes the edited value, as in an edited record."""
    out.mkdir()
    for f in demo_dir.glob("*.csv.gz"):
        if not f.name.startswith(("LABEVENTS", "CHARTEVENTS")):
            shutil.copy(f, out / f.name)
    for table, key in (("LABEVENTS", "hadm_id"), ("CHARTEVENTS", "icustay_id")):
        events = pd.read_csv(demo_dir / f"{table}.csv.gz", dtype=str, keep_default_na=False)  # written back as read
        charttime = pd.to_datetime(events["charttime"])
        valuenum = pd.to_numeric(events["valuenum"], errors="coerce")
        itemid = pd.to_numeric(events["itemid"])
        for c in cells[cells.table == table].itertuples():
            feature = FEATURES[c.feature]
            hours = (charttime - c.intime).dt.total_seconds() / 3600
            rows = (events[key] == str(getattr(c, key))) & itemid.isin(feature.all_itemids) \
                & valuenum.notna() & (hours >= c.hour) & (hours < c.hour + 1)
            if table == "CHARTEVENTS":
                rows &= events["error"] != "1"
            assert rows.any(), f"no event behind cell {c}"
            fahrenheit = itemid[rows].isin(feature.fahrenheit_itemids).to_numpy()
            new = np.where(fahrenheit, c.after * 9 / 5 + 32, c.after)  # as the chart would hold it
            events.loc[rows, "valuenum"] = [repr(float(v)) for v in new]
            events.loc[rows, "value"] = [repr(float(v)) for v in new]
        events.to_csv(out / f"{table}.csv", index=False)
