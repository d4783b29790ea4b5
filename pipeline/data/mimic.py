"""Reading MIMIC-III tables: find them, check their columns, stream the feature events out of them.

Tables are ``NAME.csv`` or ``NAME.csv.gz`` with file and column names in any case (the full release
has upper-case headers, the open demo lower-case). LABEVENTS and CHARTEVENTS are never loaded whole:
:func:`filter_events` streams them block by block and keeps only the features' rows that pass the
event rules, written to Parquet.

Duplicates: a row of PATIENTS, ADMISSIONS or ICUSTAYS identical to an earlier one in every column read
is dropped and counted, and a key (subject_id, hadm_id, icustay_id) on two different rows is an error;
an event identical to an earlier kept one (key, item id, charttime, value) is dropped and counted.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from pipeline.errors import InputError, write_failure
from pipeline.features import CHART, FAHRENHEIT_ITEMIDS, FEATURES, LAB, fahrenheit_to_celsius, itemid_to_feature

# columns read from each table (lower-case); everything else is ignored
COLUMNS = {
    "PATIENTS": {"subject_id": pa.int64(), "dob": pa.timestamp("s")},
    "ADMISSIONS": {"subject_id": pa.int64(), "hadm_id": pa.int64(), "admittime": pa.timestamp("s"),
                   "dischtime": pa.timestamp("s"), "hospital_expire_flag": pa.int64(),
                   "has_chartevents_data": pa.int64()},
    "ICUSTAYS": {"subject_id": pa.int64(), "hadm_id": pa.int64(), "icustay_id": pa.int64(),
                 "intime": pa.timestamp("s"), "outtime": pa.timestamp("s")},
    LAB: {"hadm_id": pa.int64(), "itemid": pa.int64(), "charttime": pa.timestamp("s"), "valuenum": pa.float64()},
    CHART: {"icustay_id": pa.int64(), "itemid": pa.int64(), "charttime": pa.timestamp("s"),
            "valuenum": pa.float64(), "error": pa.float64()},
}
# the key of a small table's rows: at most one row per key
TABLE_KEY = {"PATIENTS": "subject_id", "ADMISSIONS": "hadm_id", "ICUSTAYS": "icustay_id"}
# the key that ties an event to a sample
EVENT_KEY = {LAB: "hadm_id", CHART: "icustay_id"}
# a filtered event equal to an earlier one in these is a duplicate. The feature is compared too: a MEDS map's
# rule by feature writes item id −1 for every feature (two features of one value at one time are two events)
DUPLICATE_EVENT = ["key", "feature", "itemid", "charttime", "value"]
DICTIONARIES = {"D_ITEMS": CHART, "D_LABITEMS": LAB}
# itemid only tells duplicates apart: two item ids of one feature at one time are two measurements
EVENT_SCHEMA = pa.schema([("key", pa.int64()), ("feature", pa.int8()), ("itemid", pa.int32()),
                          ("charttime", pa.timestamp("s")), ("value", pa.float64())])
BLOCK_BYTES = 4 << 20  # the reader holds a few blocks ahead: memory ∝ block, speed flat from 1 MB on
ROW_GROUP_ROWS = 1 << 18  # filtered rows per Parquet row group (= a Dask partition downstream)
DEDUPE_BUCKET_ROWS = 1 << 22  # filtered events deduplicated at once in memory (~0.3 GB at peak)


def find_table(mimic_dir: Path, name: str, required: bool = True) -> Path | None:
    """The file of table `name` in `mimic_dir` (NAME.csv.gz or NAME.csv, any case)."""
    mimic_dir = Path(mimic_dir)
    if not mimic_dir.is_dir():
        raise InputError(f"{mimic_dir}: MIMIC-III folder not found")
    wanted = {f"{name}.csv.gz".lower(), f"{name}.csv".lower()}
    hits = sorted(p for p in mimic_dir.iterdir() if p.name.lower() in wanted)
    if not hits and required:
        raise InputError(f"{mimic_dir}: table {name} not found (expected {name}.csv.gz or {name}.csv, any case)")
    if len(hits) > 1:  # which one is the table is not ours to guess: they may differ
        raise InputError(f"{mimic_dir}: table {name} is there more than once ({', '.join(p.name for p in hits)}); "
                         "keep one")
    return hits[0] if hits else None


def _open_text(path: Path):
    return gzip.open(path, "rt", newline="") if path.name.lower().endswith(".gz") else open(path, newline="")


def read_header(path: Path) -> list[str]:
    try:
        with _open_text(path) as f:
            line = f.readline()
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot read the header ({e}); is it a corrupt gzip file?") from None
    if not line.strip():
        raise InputError(f"{path}: empty file, expected a CSV header")
    return next(csv.reader([line]))


def column_names(path: Path, table: str) -> dict[str, str]:
    """lower-case name → name in the file, for the columns we read; names the first missing one."""
    in_file = {c.strip().lower(): c for c in read_header(path)}
    for col in COLUMNS[table]:
        if col not in in_file:
            raise InputError(f"{path}: missing column '{col}' (table {table}; found: {', '.join(in_file)})")
    return {col: in_file[col] for col in COLUMNS[table]}


def _convert_options(path: Path, table: str) -> pacsv.ConvertOptions:
    names = column_names(path, table)
    return pacsv.ConvertOptions(include_columns=list(names.values()),
                                column_types={names[c]: t for c, t in COLUMNS[table].items()},
                                strings_can_be_null=True)


def _explain(path: Path, table: str, err: Exception) -> InputError:
    """Turn a pyarrow error into one naming the file and, for a bad value, the column."""
    msg = str(err).split("\n")[0]
    m = re.search(r"CSV column #(\d+)", msg)
    if m:
        header = read_header(path)
        col = header[int(m.group(1))].lower() if int(m.group(1)) < len(header) else f"#{m.group(1)}"
        return InputError(f"{path}: column '{col}': {msg}")
    if any(word in msg.lower() for word in ("gzip", "zlib", "inflate", "compress")):
        return InputError(f"{path}: corrupt or truncated gzip file ({msg})")
    return InputError(f"{path}: cannot read table {table} ({msg})")


def read_table(path: Path, table: str) -> pd.DataFrame:
    """A small table (PATIENTS, ADMISSIONS, ICUSTAYS) with lower-case column names."""
    try:
        data = pacsv.read_csv(_input_stream(path), convert_options=_convert_options(path, table))
    except (pa.ArrowInvalid, OSError, EOFError, zlib.error) as e:
        raise _explain(path, table, e) from None
    df = data.to_pandas()
    df.columns = [c.lower() for c in df.columns]
    return df


def _show(row: pd.Series) -> str:
    return ", ".join(f"{c}={'' if pd.isna(v) else int(v) if isinstance(v, float) and v.is_integer() else v}"
                     for c, v in row.items())


def drop_duplicate_rows(df: pd.DataFrame, path: Path, table: str) -> tuple[pd.DataFrame, int]:
    """`df` (from :func:`read_table`) without rows identical to an earlier one in every column read, and
    how many were dropped; a key on two rows that differ is an error naming the key and both rows.

    A doubled row changes nothing but the counts; two versions of one stay or admission would join
    twice (or pick one silently), so there is no safe choice between them.
    """
    exact = df.duplicated(keep="first")
    unique = df[~exact]
    key = TABLE_KEY[table]
    clash = unique[key].notna() & unique[key].duplicated(keep=False)
    if clash.any():
        value = unique.loc[clash, key].iloc[0]
        first, second = unique[unique[key] == value].index[:2]  # read_table's index: data row − 1
        raise InputError(f"{path}: {key} {int(value)} on data rows {first + 1} and {second + 1} with different "
                         f"values: {_show(df.loc[first])} / {_show(df.loc[second])}")
    return unique.reset_index(drop=True), int(exact.sum())


def _input_stream(path: Path, source=None) -> pa.NativeFile:
    source = pa.PythonFile(source, mode="r") if source is not None else pa.OSFile(str(path))
    if path.name.lower().endswith(".gz"):
        return pa.CompressedInputStream(source, "gzip")
    return source


class _HashingReader:
    """A binary file that hashes (and counts, for the progress bar) the bytes read through it."""

    def __init__(self, path: Path, bar: tqdm):
        self._file = open(path, "rb")
        self.sha256 = hashlib.sha256()
        self._bar = bar
        self.closed = False

    def read(self, n: int = -1) -> bytes:
        data = self._file.read(n)
        self.sha256.update(data)
        self._bar.update(len(data))
        return data

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._file.close()
        self.closed = True


@dataclass
class EventCounts:
    """Rows of an event table after each event rule (stored in dataset.zarr's attrs)."""

    rows: int = 0
    feature_items: int = 0
    with_key: int = 0
    with_time: int = 0  # a MEDS event may have none (a static one): nothing to bin it in
    not_error: int = 0
    with_valuenum: int = 0
    in_range: int = 0
    duplicates: int = 0  # in-range events identical to an earlier one, then dropped
    # in-range events per feature, duplicates included
    per_feature: dict[str, int] = field(default_factory=dict)
    # MEDS: per feature, {code: events} of unit spellings the map does not read (dropped, and said)
    unit_dropped: dict[str, dict[str, int]] = field(default_factory=dict)
    # MEDS with lab_time = "draw": results paired with their draw, by kind (pipeline/data/meds_draws.py)
    draw_time: dict[str, int] = field(default_factory=dict)


def _feature_lookup(table: str) -> tuple[np.ndarray, np.ndarray]:
    mapping = itemid_to_feature(table)
    items = np.array(sorted(mapping), dtype=np.int64)
    return items, np.array([mapping[i] for i in items], dtype=np.int8)


LO = np.array([f.lo for f in FEATURES])
HI = np.array([f.hi for f in FEATURES])
FAHRENHEIT = np.array(sorted(FAHRENHEIT_ITEMIDS), dtype=np.int64)


def _filter_batch(batch: pa.RecordBatch, table: str, items: np.ndarray, features: np.ndarray,
                  counts: EventCounts) -> pa.Table | None:
    """The event rules on one block: feature items, a key, a time, no error flag, a value, in range."""
    counts.rows += batch.num_rows
    t = pa.Table.from_batches([batch]).rename_columns([c.lower() for c in batch.schema.names])
    t = t.filter(pc.is_in(t["itemid"], value_set=pa.array(items)))
    counts.feature_items += t.num_rows
    t = t.filter(pc.is_valid(t[EVENT_KEY[table]]))
    counts.with_key += t.num_rows
    t = t.filter(pc.is_valid(t["charttime"]))
    counts.with_time += t.num_rows
    if table == CHART:  # ERROR = 1 marks a value the nurse flagged; empty means no error
        t = t.filter(pc.invert(pc.fill_null(pc.equal(t["error"], 1), False)))
    counts.not_error += t.num_rows
    t = t.filter(pc.is_valid(t["valuenum"]))
    counts.with_valuenum += t.num_rows
    if t.num_rows == 0:
        return None
    itemid = t["itemid"].to_numpy()
    feature = features[np.searchsorted(items, itemid)]
    value = t["valuenum"].to_numpy(zero_copy_only=False).astype(np.float64)
    fahrenheit = np.isin(itemid, FAHRENHEIT)
    value[fahrenheit] = fahrenheit_to_celsius(value[fahrenheit])
    keep = (value > LO[feature]) & (value <= HI[feature])
    counts.in_range += int(keep.sum())
    for k, c in zip(*np.unique(feature[keep], return_counts=True), strict=True):
        name = FEATURES[k].name
        counts.per_feature[name] = counts.per_feature.get(name, 0) + int(c)
    return pa.table({"key": t[EVENT_KEY[table]].filter(pa.array(keep)),
                     "feature": pa.array(feature[keep], pa.int8()),
                     "itemid": pa.array(itemid[keep], pa.int32()),
                     "charttime": t["charttime"].filter(pa.array(keep)),
                     "value": pa.array(value[keep])}, schema=EVENT_SCHEMA)


def filter_events(path: Path, table: str, out: Path, position: int = 0) -> tuple[EventCounts, str]:
    """Stream `path` (LABEVENTS or CHARTEVENTS) into Parquet `out` with only valid feature events, exact
    duplicates dropped.

    Returns the counts after each rule and the sha256 of the input file.
    """
    staged = out.with_name(f"{out.stem}-with-duplicates.parquet")
    items, features = _feature_lookup(table)
    counts = EventCounts()
    bar = tqdm(total=path.stat().st_size, unit="B", unit_scale=True, desc=f"filter {table}", position=position,
               leave=False, mininterval=1.0)
    source = _HashingReader(path, bar)
    reader, error = None, None
    try:
        reader = pacsv.open_csv(_input_stream(path, source),
                                read_options=pacsv.ReadOptions(block_size=BLOCK_BYTES),
                                convert_options=_convert_options(path, table))
        with pq.ParquetWriter(staged, EVENT_SCHEMA, compression="snappy") as writer:
            pending: list[pa.Table] = []
            for batch in reader:
                kept = _filter_batch(batch, table, items, features, counts)
                if kept is not None and kept.num_rows:
                    pending.append(kept)
                if sum(t.num_rows for t in pending) >= ROW_GROUP_ROWS:
                    writer.write_table(pa.concat_tables(pending))
                    pending = []
            if pending:
                writer.write_table(pa.concat_tables(pending))
        counts.duplicates = drop_duplicate_events(staged, out)  # in the `try`: a full disk here is named too
    except (pa.ArrowInvalid, OSError, EOFError, zlib.error) as e:
        error = write_failure(e, out) or _explain(path, table, e)  # a full disk is not the input's fault
    finally:
        # stop the reader's read-ahead thread before anything else: left alive (held by a traceback),
        # it made interpreter shutdown wait forever after a parse error
        if reader is not None:
            reader.close()
        source.close()
        bar.close()
    if error is not None:
        raise error  # outside the handler: no traceback that keeps pyarrow's frames alive
    staged.unlink()
    return counts, source.sha256.hexdigest()


def drop_duplicate_events(src: Path, out: Path) -> int:
    """Copy the filtered events from Parquet `src` to `out` without exact duplicates (same key, feature, item
    id, charttime and value; the error flag is not compared: only unflagged rows get here); returns how many
    were dropped. Same key, item and time with another value is a repeated measurement and stays.

    Duplicates share their key, so the events are split into buckets by key, one pass over `src` per
    bucket, each deduplicated in memory. The first copy stays and a key's events keep their order, so a
    cell's mean sums them in the same order as without the duplicates.
    """
    source = pq.ParquetFile(src)
    schema = source.schema_arrow  # Parquet has no seconds: charttime comes back in ms
    buckets = max(1, -(-source.metadata.num_rows // DEDUPE_BUCKET_ROWS))
    dropped = 0
    with pq.ParquetWriter(out, schema, compression="snappy") as writer:
        for bucket in range(buckets):
            parts = [batch.filter(pa.array(batch["key"].to_numpy() % buckets == bucket))
                     for batch in source.iter_batches(batch_size=ROW_GROUP_ROWS)]
            events = pa.Table.from_batches(parts, schema=schema).to_pandas()
            unique = events[~events.duplicated(DUPLICATE_EVENT, keep="first")]
            dropped += len(events) - len(unique)
            if len(unique):
                writer.write_table(pa.Table.from_pandas(unique, schema=schema, preserve_index=False),
                                   row_group_size=ROW_GROUP_ROWS)
    return dropped


def check_dictionaries(mimic_dir: Path) -> list[str]:
    """Warnings where D_ITEMS / D_LABITEMS (when present) lack a feature's item id."""
    warnings = []
    for name, table in DICTIONARIES.items():
        path = find_table(mimic_dir, name, required=False)
        if path is None:
            continue
        header = {c.lower(): c for c in read_header(path)}
        if "itemid" not in header:
            raise InputError(f"{path}: missing column 'itemid'")
        known = set(pacsv.read_csv(_input_stream(path),
                                   convert_options=pacsv.ConvertOptions(include_columns=[header["itemid"]]))
                    .column(0).to_pylist())
        for f in FEATURES:
            if f.table == table:
                missing = [i for i in f.all_itemids if i not in known]
                if missing:
                    warnings.append(f"{path.name}: item id(s) {missing} of feature {f.name} not listed")
    return warnings
