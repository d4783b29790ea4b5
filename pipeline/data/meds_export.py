"""MIMIC-III's CSV tables written as a MEDS 0.4 dataset with the MIMIC-IV MEDS ETL's codes.

`synth` uses it to write its cohort as MEDS (prepare.source = "meds"); the tests use it on the real demo
to check that prepare reads the same samples from MEDS as from the CSV tables. The codes are those the
shipped map `mimic-iv` reads: `LAB//{itemid}//{unit}` for lab and chart events (with the `hadm_id` and,
for chart events, `icustay_id` columns), `HOSPITAL_ADMISSION//{type}//{location}`,
`HOSPITAL_DISCHARGE//{location}`, `ICU_ADMISSION//{unit}`, `ICU_DISCHARGE//{unit}`, `MEDS_BIRTH` at the
date of birth and `MEDS_DEATH` at the first hospital deathtime, else the date of death.

What MEDS cannot say is left out: chart rows flagged ERROR = 1 (MEDS has no error flag; prepare drops
them from the CSV tables too) and ADMISSIONS' HAS_CHARTEVENTS_DATA (the MEDS source derives it: a stay
with any event of its own). `numeric_value` is float32, as MEDS defines it.

Events are streamed: each table is read block by block and appended to one staging file per shard
(subjects split between shards whole), then each shard is sorted by subject and time and written; memory
is one shard's events. Same tables, same bytes.
"""

from __future__ import annotations

import importlib.metadata
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from pipeline.data.mimic import BLOCK_BYTES, _input_stream, find_table, read_header
from pipeline.features import CHART, LAB

SCHEMA = pa.schema([("subject_id", pa.int64()), ("time", pa.timestamp("us")), ("code", pa.string()),
                    ("numeric_value", pa.float32()), ("hadm_id", pa.int64()), ("icustay_id", pa.int64())])
EVENT_COLUMNS = {LAB: ["subject_id", "hadm_id", "itemid", "charttime", "valuenum", "valueuom"],
                 CHART: ["subject_id", "hadm_id", "icustay_id", "itemid", "charttime", "valuenum", "valueuom",
                         "error"]}
SHARD_SUBJECTS = 2000  # subjects per data file (~3 M events of the synthetic cohort)
SPLIT_SHARES = (0.8, 0.1, 0.1)  # train, tuning, held_out: the MEDS ETLs' default


def write_meds(mimic_dir: Path, root: Path, seed: int = 0, shard_subjects: int = SHARD_SUBJECTS,
               dataset_name: str = "MIMIC-III (MEDS, MIMIC-IV ETL codes)") -> Path:
    """The MIMIC-III tables in `mimic_dir` as a MEDS root at `root` (made; must not exist): data/*.parquet,
    metadata/codes.parquet, metadata/subject_splits.parquet (a split drawn with `seed`), dataset.json."""
    root = Path(root)
    small = {name: _read_small(find_table(mimic_dir, name)) for name in ("PATIENTS", "ADMISSIONS", "ICUSTAYS")}
    subjects = np.sort(small["PATIENTS"].subject_id.unique())
    shard_of = pd.Series(np.arange(len(subjects)) // shard_subjects, index=subjects)
    shards = int(shard_of.max()) + 1 if len(subjects) else 0
    staging = root / "staging"
    (root / "data").mkdir(parents=True)
    staging.mkdir()
    writers = [pq.ParquetWriter(staging / f"{k}.parquet", SCHEMA) for k in range(shards)]
    codes: set[str] = set()
    try:
        for part in (cohort_events(small), *(e for t in (LAB, CHART) for e in event_blocks(mimic_dir, t))):
            codes.update(pc.unique(part["code"]).to_pylist())
            shard = shard_of.reindex(part["subject_id"].to_numpy()).to_numpy()
            for k in np.unique(shard[~np.isnan(shard)]).astype(int):
                writers[k].write_table(part.filter(pa.array(shard == k)))
    finally:
        for w in writers:
            w.close()
    for k in range(shards):  # MEDS order: by subject, then time (every event here has a time)
        table = pq.read_table(staging / f"{k}.parquet")
        order = pc.sort_indices(table, [("subject_id", "ascending"), ("time", "ascending")])
        pq.write_table(table.take(order), root / "data" / f"{k}.parquet")
    shutil.rmtree(staging)
    write_metadata(root, sorted(codes), subjects, seed, dataset_name)
    return root


def _read_small(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path, low_memory=False)
    df.columns = [c.lower() for c in df.columns]
    return df


def cohort_events(t: dict[str, pd.DataFrame]) -> pa.Table:
    """Birth, death, hospital and ICU admission and discharge: one row each."""
    p, a, i = t["PATIENTS"], t["ADMISSIONS"], t["ICUSTAYS"]
    time = pd.to_datetime
    first_death = a.dropna(subset=["deathtime"]).groupby("subject_id")["deathtime"].min()
    death = time(p.subject_id.map(first_death)).fillna(time(p.dod))
    unknown = "UNK"
    parts = [
        pd.DataFrame({"subject_id": p.subject_id, "time": time(p.dob), "code": "MEDS_BIRTH"}),
        pd.DataFrame({"subject_id": p.subject_id, "time": death, "code": "MEDS_DEATH"})[death.notna()],
        pd.DataFrame({"subject_id": a.subject_id, "time": time(a.admittime), "hadm_id": a.hadm_id,
                      "code": "HOSPITAL_ADMISSION//" + a.admission_type.fillna(unknown) + "//"
                              + a.admission_location.fillna(unknown)}),
        pd.DataFrame({"subject_id": a.subject_id, "time": time(a.dischtime), "hadm_id": a.hadm_id,
                      "code": "HOSPITAL_DISCHARGE//" + a.discharge_location.fillna(unknown)}),
        pd.DataFrame({"subject_id": i.subject_id, "time": time(i.intime), "hadm_id": i.hadm_id,
                      "icustay_id": i.icustay_id, "code": "ICU_ADMISSION//" + i.first_careunit.fillna(unknown)}),
        pd.DataFrame({"subject_id": i.subject_id, "time": time(i.outtime), "hadm_id": i.hadm_id,
                      "icustay_id": i.icustay_id, "code": "ICU_DISCHARGE//" + i.last_careunit.fillna(unknown)}),
    ]
    frame = pd.concat(parts, ignore_index=True).reindex(columns=SCHEMA.names)
    return pa.Table.from_pandas(frame, schema=SCHEMA, preserve_index=False)


def event_blocks(mimic_dir: Path, table: str):
    """The table's rows as MEDS events, block by block (chart rows flagged ERROR = 1 left out)."""
    path = find_table(mimic_dir, table)
    in_file = {c.strip().lower(): c for c in read_header(path)}
    wanted = [in_file[c] for c in EVENT_COLUMNS[table]]
    types = {in_file["charttime"]: pa.timestamp("s"), in_file["valuenum"]: pa.float64(),
             in_file["valueuom"]: pa.string()}
    reader = pacsv.open_csv(_input_stream(path), read_options=pacsv.ReadOptions(block_size=BLOCK_BYTES),
                            convert_options=pacsv.ConvertOptions(include_columns=wanted, column_types=types,
                                                                 strings_can_be_null=True))
    for batch in reader:
        b = pa.Table.from_batches([batch]).rename_columns([c.lower() for c in batch.schema.names])
        if table == CHART:
            b = b.filter(pc.invert(pc.fill_null(pc.equal(b["error"], 1), False)))
        code = pc.binary_join_element_wise("LAB", pc.cast(b["itemid"], pa.string()),
                                           pc.fill_null(b["valueuom"], "UNK"), "//")
        yield pa.table({
            "subject_id": pc.cast(b["subject_id"], pa.int64()), "time": pc.cast(b["charttime"], pa.timestamp("us")),
            "code": code, "numeric_value": pc.cast(b["valuenum"], pa.float32()),
            "hadm_id": pc.cast(b["hadm_id"], pa.int64()),
            "icustay_id": pc.cast(b["icustay_id"], pa.int64()) if "icustay_id" in b.column_names
            else pa.nulls(b.num_rows, pa.int64())}, schema=SCHEMA)


def write_metadata(root: Path, codes: list[str], subjects: np.ndarray, seed: int, dataset_name: str) -> None:
    # meds (0.3 s to import): only a MEDS run imports it
    from meds import code_metadata_filepath, dataset_metadata_filepath, subject_splits_filepath

    (root / "metadata").mkdir()
    pq.write_table(pa.table({"code": pa.array(codes, pa.string()),
                             "description": pa.nulls(len(codes), pa.string()),
                             "parent_codes": pa.nulls(len(codes), pa.list_(pa.string()))}),
                   root / code_metadata_filepath)
    order = np.random.default_rng(seed).permutation(len(subjects))
    bounds = np.cumsum(np.round(np.array(SPLIT_SHARES) * len(subjects))).astype(int)[:2]
    split = np.empty(len(subjects), dtype=object)
    for name, members in zip(("train", "tuning", "held_out"), np.split(order, bounds), strict=True):
        split[members] = name
    pq.write_table(pa.table({"subject_id": pa.array(subjects, pa.int64()), "split": pa.array(split, pa.string())}),
                   root / subject_splits_filepath)
    (root / dataset_metadata_filepath).write_text(json.dumps({
        "dataset_name": dataset_name, "dataset_version": "1.4", "etl_name": "pipeline.data.meds_export",
        "meds_version": importlib.metadata.version("meds"), "split_seed": seed}, indent=1))
