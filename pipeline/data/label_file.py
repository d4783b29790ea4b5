"""prepare's cohort from a MEDS label file (`prepare.labels`; docs/dataset.md, "A task's label file").

A label file is the MEDS way to say who is predicted when: one row a prediction, `subject_id`,
`prediction_time` and `boolean_value` (the `meds` package's LabelSchema), as ACES writes it from a task
config. Each row becomes one sample: its window is the `window_hours` before `prediction_time`, its label
`boolean_value`. The task defines the cohort, so prepare's own cohort rules and span rule are not applied;
the admission and ICU stay whose time holds the window's start are recorded (−1: none), for comparison with
the cohort of the event rules.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import InputError
from pipeline.hashing import file_sha256

READ = ("subject_id", "prediction_time", "boolean_value")


def label_files(path: Path) -> list[Path]:
    """The label file, or the Parquet files of a folder of them (ACES writes one per data shard when sharded)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(path.rglob("*.parquet"))
        if files:
            return files
        raise InputError(f"[prepare] labels = {str(path)!r}: a folder with no .parquet label file")
    raise InputError(f"[prepare] labels = {str(path)!r}: no such file or folder")


def read_labels(path: Path) -> tuple[pd.DataFrame, dict[str, str], int]:
    """The labels (subject_id, prediction_time, y; sorted), the sha256 of each file, and how many exact
    duplicate rows were dropped. A row without a time or a label (LabelSchema refuses nulls), a file without
    boolean labels, or one prediction with two labels is one line naming the file."""
    # meds (0.3 s to import): only a run with a label file imports it
    from meds import LabelSchema

    frames, checksums = [], {}
    for f in label_files(path):
        try:
            table = pq.read_table(f)
        except (pa.ArrowInvalid, OSError) as e:
            raise InputError(f"{f}: not a readable Parquet file ({e})") from None
        if "boolean_value" not in table.column_names:
            raise InputError(f"{f}: no column 'boolean_value' (found: {', '.join(table.column_names)}); prepare reads "
                             "a binary task's labels")
        try:  # only the columns read: ACES writes the other label columns all null, which meds 0.4.1 refuses
            table = LabelSchema.align(table.select([c for c in READ if c in table.column_names]))
        except Exception as e:  # flexible_schema's SchemaValidationError: missing or mistyped columns
            raise InputError(f"{f}: not a MEDS label file: {e}") from None
        frame = table.to_pandas()
        checksums[f"labels/{f.relative_to(path if Path(path).is_dir() else f.parent)}"] = file_sha256(f)
        frames.append(frame.assign(file=str(f)))
    labels = pd.concat(frames, ignore_index=True)
    doubled = labels.duplicated(["subject_id", "prediction_time", "boolean_value"])
    labels = labels[~doubled]
    twice = labels.duplicated(["subject_id", "prediction_time"], keep=False)
    if twice.any():
        row = labels[twice].iloc[0]
        raise InputError(f"{row.file}: subject {int(row.subject_id)} at {row.prediction_time} labelled both true "
                         "and false")
    labels = labels.sort_values(["subject_id", "prediction_time"], ignore_index=True)
    labels["y"] = labels.pop("boolean_value").astype(np.int64)
    labels["prediction_time"] = labels["prediction_time"].astype("datetime64[s]")
    return labels.drop(columns="file"), checksums, int(doubled.sum())


def label_cohort(labels: pd.DataFrame, small: dict[str, pd.DataFrame], window_hours: int,
                 where: str) -> tuple[pd.DataFrame, dict[str, int]]:
    """The samples of the labels: subject_id, hadm_id, icustay_id, intime (the window's start), y. A subject
    the MEDS data does not hold is an error: its labels would be samples with an empty record."""
    known = set(small["PATIENTS"].subject_id) | set(small["ADMISSIONS"].subject_id)
    unknown = labels.subject_id[~labels.subject_id.isin(known)]
    if len(unknown):
        raise InputError(f"{where}: {unknown.nunique()} subject(s) with labels have no birth or admission in the "
                         f"MEDS data (first: {int(unknown.iloc[0])}); a label file of another dataset?")
    cohort = labels.assign(intime=labels.prediction_time - pd.Timedelta(hours=window_hours))
    # MIMIC's ICU intime can precede the admission's admittime (a stay begun in the emergency department):
    # the admission is the one the window overlaps, the ICU stay the one holding the window's start
    cohort["hadm_id"] = holding(cohort, small["ADMISSIONS"], "hadm_id", "admittime", "dischtime", overlap=True)
    cohort["icustay_id"] = holding(cohort, small["ICUSTAYS"], "icustay_id", "intime", "outtime")
    counts = {"labels": len(cohort), "in_an_admission": int((cohort.hadm_id >= 0).sum()),
              "in_an_icu_stay": int((cohort.icustay_id >= 0).sum())}
    return cohort[["subject_id", "hadm_id", "icustay_id", "intime", "y"]], counts


def holding(cohort: pd.DataFrame, spans: pd.DataFrame, key: str, start: str, end: str,
            overlap: bool = False) -> np.ndarray:
    """Per sample, the `key` of the subject's span (admission or ICU stay) with start ≤ the window's start <
    end (with `overlap`: any span the window overlaps); the latest-starting one where several do; −1: none."""
    spans = spans[["subject_id", key, start, end]].rename(columns={start: "span_start", end: "span_end"})
    pairs = cohort[["subject_id", "intime", "prediction_time"]].reset_index().merge(spans, on="subject_id")
    begun = pairs.span_start < pairs.prediction_time if overlap else pairs.span_start <= pairs.intime
    inside = pairs[begun & (pairs.intime < pairs.span_end)]
    chosen = inside.sort_values("span_start").groupby("index")[key].last()
    return chosen.reindex(range(len(cohort))).fillna(-1).to_numpy(np.int64)
