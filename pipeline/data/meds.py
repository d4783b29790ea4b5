"""prepare's MEDS source: a dataset in the Medical Event Data Standard (MEDS 0.4) instead of MIMIC-III's CSV
tables (docs/dataset.md, "MEDS input").

A MEDS root holds ``data/**/*.parquet`` (one event a row: ``subject_id``, ``time``, ``code``,
``numeric_value`` and any extra columns) and ``metadata/``. A feature map (``maps/*.toml``, or a file
of the user's) says which codes are which of the features and which codes are the cohort's events:
birth, death, hospital and ICU admission and discharge. From those the source builds the three small
tables the CSV path reads — PATIENTS, ADMISSIONS, ICUSTAYS, with the columns cohort.py uses — and
streams the feature events, batch by batch, into the same Parquet the CSV path writes (mimic.py's
EVENT_SCHEMA). Everything after that is the CSV path's, so the same cohort rules, span rule, binning
and statistics apply.

Events are tied to samples by the map's `admission_id` (labs) and `stay_id` (chart events) columns, as
the CSV tables tie them by HADM_ID and ICUSTAY_ID. MEDS stores `numeric_value` as float32, so values are
the CSV's rounded to float32 (a named difference, tested).
"""

from __future__ import annotations

import logging
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from pipeline.config import ConfigError
from pipeline.data import meds_draws
from pipeline.data.meds_cohort import COHORT_EVENTS, check_one_owner, drop_duplicate_cohort_events, small_tables
from pipeline.data.mimic import EVENT_SCHEMA, HI, LO, ROW_GROUP_ROWS, EventCounts, drop_duplicate_events
from pipeline.errors import InputError, blaming, write_failure
from pipeline.features import FAHRENHEIT_ITEMIDS, FEATURES, LAB, NAMES, fahrenheit_to_celsius
from pipeline.hashing import file_sha256

log = logging.getLogger(__name__)
MAPS = Path(__file__).parent / "maps"
BATCH_ROWS = 1 << 20  # events read at once from a data file


@dataclass(frozen=True)
class Rule:
    """Codes matching `pattern` are `feature` (or, with a named group `itemid`, the feature of that MIMIC
    item id), in the feature's unit after v · factor + offset — or, `fahrenheit`, after °F → °C."""

    pattern: re.Pattern
    feature: int | None = None
    factor: float = 1.0
    offset: float = 0.0
    fahrenheit: bool = False
    any_unit: re.Pattern | None = None  # the feature's codes in any unit: one of them `pattern` misses is counted



@dataclass(frozen=True)
class FeatureMap:
    name: str
    description: str
    admission_id: str  # the event column that names the hospital admission ("subject_id": one per subject)
    stay_id: str  # the event column that names the ICU stay
    cohort: dict[str, re.Pattern]
    rules: list[Rule]
    by_itemid: dict[int, tuple[int, str]] = field(default_factory=dict)  # MIMIC item id → (feature, table)
    path: Path | None = None  # the map's file
    died_at_discharge: re.Pattern | None = None  # hospital discharge codes that mean the patient died
    lab_draw: re.Pattern | None = None  # a lab specimen's collection, its item id in group `itemid` (meds_draws.py)

    @classmethod
    def load(cls, spec: str) -> FeatureMap:
        """A map shipped in pipeline/data/maps (by name) or a TOML file of its form (by path)."""
        path = MAPS / f"{spec}.toml" if (MAPS / f"{spec}.toml").is_file() else Path(spec)
        where = f"[prepare] feature_map = {spec!r}"
        if not path.is_file():
            shipped = ", ".join(sorted(p.stem for p in MAPS.glob("*.toml")))
            raise ConfigError(f"{where}: no such map (shipped: {shipped}) and no such file")
        try:
            raw = tomllib.loads(path.read_text())
            cohort = {k: re.compile(raw["cohort"][k]) for k in COHORT_EVENTS}
            rules = [rule(entry) for entry in raw["features"]]
            died, draw = raw.get("died_at_discharge"), raw.get("lab_draw")
            if draw and "itemid" not in re.compile(draw).groupindex:
                raise ValueError(f"lab_draw {draw!r} has no group (?P<itemid>…) naming the lab item")
            by_itemid = {i: (k, f.table) for k, f in enumerate(FEATURES) for i in f.all_itemids}
            for alias, item in raw.get("item_aliases", {}).items():  # a later id of the same test
                if not (alias.isdigit() and isinstance(item, int) and item in by_itemid) or item in FAHRENHEIT_ITEMIDS:
                    raise ValueError(f"item_aliases: {alias} = {item!r} is not an item id = a feature's item id")
                by_itemid[int(alias)] = by_itemid[item]
            return cls(path.stem, raw.get("description", ""), raw["admission_id"], raw["stay_id"], cohort, rules,
                       by_itemid, path, re.compile(died) if died else None, re.compile(draw) if draw else None)
        except KeyError as e:
            raise ConfigError(f"{path}: missing key {e}") from None
        except (tomllib.TOMLDecodeError, re.error, ValueError) as e:
            raise ConfigError(f"{path}: {e}") from None

    def classify(self, code: str) -> tuple[int, int, str, float, float, bool] | str | None:
        """(feature, item id or −1, table, factor, offset, fahrenheit) for a feature's code, the cohort
        event's name for a cohort code, None for any other code."""
        for kind, pattern in self.cohort.items():
            if pattern.search(code):
                return kind
        for r in self.rules:
            m = r.pattern.search(code)
            if not m:
                continue
            if r.feature is not None:
                return r.feature, -1, FEATURES[r.feature].table, r.factor, r.offset, r.fahrenheit
            text = m.group("itemid") or ""
            if not (text.isascii() and text.isdigit()):  # \d and int() also read '５０９７１' as 50971
                raise InputError(f"{self.path}: the rule {r.pattern.pattern!r} reads item id {text!r} from code "
                                 f"{code!r}: not an item id (ASCII digits: write [0-9], not \\d or .)")
            item = int(text)
            if item in self.by_itemid:  # °F items converted as from the CSV tables
                k, table = self.by_itemid[item]
                return k, item, table, 1.0, 0.0, item in FAHRENHEIT_ITEMIDS
        return None


def unit_missed(fmap: FeatureMap, code: str) -> int | None:
    """The feature whose codes in any unit (a rule's `any_unit`) include `code`, which no rule read: a unit
    spelling the map does not know, whose events are dropped — counted, never silently."""
    return next((r.feature for r in fmap.rules if r.any_unit is not None and r.any_unit.search(code)), None)


def rule(entry: dict) -> Rule:
    pattern = re.compile(entry["pattern"])
    if "feature" in entry:
        if entry["feature"] not in NAMES:
            raise ValueError(f"feature {entry['feature']!r} is none of {', '.join(NAMES)}")
        unit = entry.get("unit", "")
        if unit not in ("", "degF"):
            raise ValueError(f"unit {unit!r}: the only conversion by name is 'degF' (else factor/offset)")
        return Rule(pattern, NAMES.index(entry["feature"]), float(entry.get("factor", 1)),
                    float(entry.get("offset", 0)), unit == "degF",
                    re.compile(entry["any_unit"]) if entry.get("any_unit") else None)
    if "itemid" not in pattern.groupindex:
        raise ValueError(f"pattern {entry['pattern']!r} names neither a feature nor a group (?P<itemid>…)")
    return Rule(pattern)


SPLITS = ("train", "tuning", "held_out")  # MEDS's split names, coded 0, 1, 2 in dataset.zarr's `meds_split`


def subject_splits(root: Path) -> pd.Series | None:
    """{subject_id: 0 train, 1 tuning, 2 held_out} from metadata/subject_splits.parquet (None: the dataset
    has none). Other split names (a MEDS dataset may add its own) are left out of all three."""
    # meds (0.3 s to import): only a MEDS run imports it
    from meds import SubjectSplitSchema, subject_splits_filepath

    path = Path(root) / subject_splits_filepath
    if not path.is_file():
        return None
    try:
        table = SubjectSplitSchema.align(pq.read_table(path))
    except (pa.ArrowInvalid, OSError) as e:
        raise InputError(f"{path}: not a readable Parquet file ({e})") from None
    except Exception as e:  # flexible_schema's SchemaValidationError
        raise InputError(f"{path}: not MEDS subject splits: {e}") from None
    frame = table.to_pandas().drop_duplicates(["subject_id", "split"])
    twice = frame.subject_id.duplicated(keep=False)
    if twice.any():  # MEDS's splits are disjoint: which one holds the subject is not ours to guess
        subject = frame.subject_id[twice].iloc[0]
        raise InputError(f"{path}: subject {subject} is in two splits "
                         f"({', '.join(frame.split[frame.subject_id == subject])})")
    code = frame.split.map({name: k for k, name in enumerate(SPLITS)})
    return pd.Series(code.to_numpy(), index=frame.subject_id.to_numpy()).dropna().astype(np.int8)


def data_files(root: Path) -> list[Path]:
    root = Path(root)
    if not (root / "data").is_dir():
        raise InputError(f"{root}: not a MEDS root (no data/ folder)")
    files = sorted((root / "data").rglob("*.parquet"))
    if not files:
        raise InputError(f"{root / 'data'}: no .parquet file")
    return files


def batches(path: Path, columns: list[str]):
    """The file's events in batches, each aligned to MEDS's DataSchema (numeric_value as float32)."""
    from meds import DataSchema  # the MEDS schema: imported only by a MEDS run

    try:
        source = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise InputError(f"{path}: not a readable Parquet file ({e})") from None
    if source.metadata.num_rows == 0:
        raise InputError(f"{path}: an empty shard (no events)")
    names = source.schema_arrow.names
    for extra in columns:
        if extra not in names:
            raise InputError(f"{path}: missing column {extra!r} (found: {', '.join(names)})")
    wanted = [c for c in ("subject_id", "time", "code", "numeric_value", *columns) if c in names]
    for batch in source.iter_batches(batch_size=BATCH_ROWS, columns=wanted):
        try:
            table = DataSchema.align(pa.Table.from_batches([batch]))
        except Exception as e:  # flexible_schema's SchemaValidationError: missing or mistyped columns
            raise InputError(f"{path}: not MEDS data: {e}") from None
        for name in columns:
            table = table.set_column(table.schema.get_field_index(name), name, integer_ids(table[name], name, path))
        yield table


def integer_ids(column: pa.ChunkedArray, name: str, path: Path) -> pa.ChunkedArray:
    """An id column (the map's admission or stay id) as int64: integers of any width, whole floats (NaN: no
    id, as pandas writes an integer column with gaps) or text of ASCII digits; anything else is one line
    naming the file, the column and the first value that is no integer id."""
    if pa.types.is_dictionary(column.type):  # pandas' categorical ids
        column = column.cast(column.type.value_type)
    if pa.types.is_floating(column.type):
        column = pc.if_else(pc.is_nan(column), pa.scalar(None, column.type), column)
        whole = pc.equal(pc.floor(column), column)
    elif pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        whole = pc.match_substring_regex(column, r"^-?[0-9]+$")
    elif pa.types.is_integer(column.type):
        whole = None
    else:
        raise InputError(f"{path}: column {name!r} holds {column.type}, not integer ids")
    wrong = column.filter(pc.invert(pc.fill_null(whole, True))) if whole is not None else []
    if len(wrong):
        raise InputError(f"{path}: {wrong[0].as_py()!r} in column {name!r}, not an integer id")
    try:
        return pc.cast(column, pa.int64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:  # out of int64's range
        raise InputError(f"{path}: column {name!r}: not int64 ids ({e})") from None


def read(root: Path, fmap: FeatureMap, out: dict[str, Path], by_subject: bool = False,
         lab_time: str = "result") -> tuple[dict[str, pd.DataFrame], dict, dict, dict]:
    """Stream the MEDS data under `root`: the small tables (PATIENTS, ADMISSIONS, ICUSTAYS as cohort.py
    reads them), the feature events of LABEVENTS and CHARTEVENTS into `out[table]` (EVENT_SCHEMA, exact
    duplicates dropped), their EventCounts, the sha256 of every data file, and the exact duplicate cohort
    events dropped per small table. Events are keyed by the map's admission (labs) and stay (chart) ids, or
    with `by_subject` (a label file's cohort, whose windows need not lie in one stay) by the subject. With
    `lab_time` "draw", each file is read twice: lab results are first paired with their draws (meds_draws.py)."""
    if lab_time == "draw" and fmap.lab_draw is None:
        raise ConfigError(f"[prepare] lab_time = \"draw\": the feature map {fmap.name} names no draw codes (lab_draw)")
    files = data_files(root)
    keys = sorted({fmap.admission_id, fmap.stay_id} - {"subject_id"})
    event_keys = {t: "subject_id" if by_subject else fmap.admission_id if t == LAB else fmap.stay_id for t in out}
    staged = {t: p.with_name(f"{p.stem}-with-duplicates.parquet") for t, p in out.items()}
    counts = {t: EventCounts() for t in out}
    known: dict[str, tuple | str | None] = {}
    missed: dict[str, int] = {}  # code → feature: a unit spelling no rule reads
    cohort_rows, checksums, charted = [], {}, set()
    writers = {t: pq.ParquetWriter(staged[t], EVENT_SCHEMA, compression="snappy") for t in out}
    try:
        for number, path in enumerate(tqdm(files, desc="read MEDS", unit="file", leave=False, disable=None)):
            checksums[str(path.relative_to(root))] = file_sha256(path)
            drawn, offset = None, 0
            if lab_time == "draw":
                drawn = draw_times(path, fmap, keys, event_keys[LAB], known, counts[LAB].draw_time)
            for table in batches(path, keys):
                if drawn is not None:
                    table, offset = meds_draws.at_draw(table, drawn[offset:][:table.num_rows]), offset + table.num_rows
                codes = table["code"].unique().to_pylist()
                for code in codes:
                    if code not in known:
                        known[code] = item_of_code(fmap.classify(code), len(known))
                        if known[code] is None and (f := unit_missed(fmap, code)) is not None:
                            missed[code] = f
                index = pc.index_in(table["code"], value_set=pa.array(codes)).to_numpy()
                count_missed(codes, index, missed, counts)
                kind = np.array([known[c] if isinstance(known[c], str) else "" for c in codes], dtype=object)[index]
                is_cohort = kind != ""
                if is_cohort.any():
                    rows = table.filter(pa.array(is_cohort)).to_pandas()
                    rows["event"] = kind[is_cohort]
                    cohort_rows.append(rows.assign(file=number))
                feature_events(table, codes, index, known, event_keys, writers, counts, staged)
                if fmap.stay_id in table.column_names:  # stays with any event of their own (charted)
                    charted.update(pc.unique(table[fmap.stay_id].filter(pa.array(~is_cohort))).to_pylist())
        for t, w in writers.items():
            with blaming(staged[t]):
                w.close()
        for t in out:
            with blaming(out[t]):
                counts[t].duplicates = drop_duplicate_events(staged[t], out[t])
            staged[t].unlink()
    except OSError as e:  # a failed write the blocks above did not name: the scratch folder
        raise write_failure(e, e.filename or staged[LAB].parent) or InputError(f"{root}: cannot read ({e})") from None
    finally:
        for w in writers.values():
            w.close()
    for c in counts.values():
        for name, by_code in c.unit_dropped.items():
            log.warning("MEDS: %d %s events dropped: unit spelling(s) the map %s does not read (%s)",
                        sum(by_code.values()), name, fmap.name, ", ".join(sorted(by_code)))
    events = pd.concat(cohort_rows, ignore_index=True) if cohort_rows else pd.DataFrame(
        columns=["subject_id", "time", "code", "event", "file", *keys])
    events, duplicates = drop_duplicate_cohort_events(events)
    for column, owner in ((fmap.admission_id, "subject_id"), (fmap.stay_id, "subject_id"),
                          (fmap.stay_id, fmap.admission_id)):
        check_one_owner(events, column, owner, files)
    return small_tables(events, fmap, root, charted - {None}), counts, checksums, duplicates


def draw_times(path: Path, fmap: FeatureMap, keys: list[str], key: str, known: dict, counts: dict) -> np.ndarray:
    """Per event of the data file, the draw time paired with it when it is a lab result of a feature, NaT
    otherwise (meds_draws.pair_draws, whose counts are added to `counts`): the first of two passes."""
    parts, n = [], 0
    draw_item: dict[str, int] = {}
    for table in batches(path, keys):
        codes = table["code"].unique().to_pylist()
        for code in codes:
            if code not in known:
                known[code] = item_of_code(fmap.classify(code), len(known))
            if code not in draw_item:
                m = fmap.lab_draw.search(code)
                item = int(m.group("itemid")) if m and m.group("itemid").isdigit() else -1
                draw_item[code] = item if fmap.by_itemid.get(item, (0, ""))[1] == LAB else -1  # a feature's draw
        index = pc.index_in(table["code"], value_set=pa.array(codes)).to_numpy()
        lab = np.array([isinstance(known[c], tuple) and known[c][2] == LAB for c in codes])[index]
        is_draw = np.array([draw_item[c] >= 0 for c in codes])[index]
        item = np.array([known[c][1] if isinstance(known[c], tuple) else draw_item[c] for c in codes])[index]
        ids = table[key].to_numpy(zero_copy_only=False)
        time = table["time"].to_numpy(zero_copy_only=False)
        rows = np.flatnonzero((lab | is_draw) & pc.is_valid(table[key]).to_numpy(zero_copy_only=False)
                              & ~np.isnat(time))
        parts.append((rows + n, ids[rows].astype(np.int64), item[rows], time[rows], is_draw[rows]))
        n += table.num_rows
    rows, ids, item, time, is_draw = (np.concatenate(p) for p in zip(*parts, strict=True))
    paired, found = meds_draws.pair_draws(ids, item, time, is_draw)
    for name, value in found.items():
        counts[name] = counts.get(name, 0) + value
    drawn = np.full(n, np.datetime64("NaT"), dtype=time.dtype)
    drawn[rows] = paired
    return drawn


def count_missed(codes: list[str], index: np.ndarray, missed: dict[str, int], counts: dict[str, EventCounts]) -> None:
    """Per feature and code, the batch's events of a unit spelling no rule reads (EventCounts.unit_dropped)."""
    rows = np.bincount(index, minlength=len(codes))
    for k, code in enumerate(codes):
        if code in missed and rows[k]:
            feature = FEATURES[missed[code]]
            dropped = counts[feature.table].unit_dropped.setdefault(feature.name, {})
            dropped[code] = dropped.get(code, 0) + int(rows[k])


def item_of_code(info, n: int):
    """A feature's code read by a rule by feature (item id −1) gets an item id of its own, −1 − n (n: codes
    seen before it): duplicates are dropped by item id, and two codes of one feature are two measurements,
    as two MIMIC item ids are (an arterial and a cuff blood pressure of the same value at the same time)."""
    if isinstance(info, tuple) and info[1] == -1:
        return (info[0], -1 - n, *info[2:])
    return info


def feature_events(table: pa.Table, codes: list[str], index: np.ndarray, known: dict, event_keys: dict[str, str],
                   writers: dict, counts: dict[str, EventCounts], staged: dict[str, Path]) -> None:
    """The batch's events of the features, as the CSV path's rules keep them: a key, a time, a value, in
    range. MEDS allows events without a time (static ones): a feature event without one lies in no hour of
    any window, so it is dropped by the rule `with_time` (counted there, never as kept or a duplicate)."""
    info = [known[c] if isinstance(known[c], tuple) else None for c in codes]
    feature = np.array([-1 if i is None else i[0] for i in info], np.int64)[index]
    for tname in writers:
        in_table = np.array([i is not None and i[2] == tname for i in info])[index]
        counts[tname].rows += table.num_rows
        t = table.filter(pa.array(in_table))
        counts[tname].feature_items += t.num_rows
        key_col = event_keys[tname]
        valid = pc.is_valid(t[key_col]).to_numpy(zero_copy_only=False)
        counts[tname].with_key += int(valid.sum())
        valid &= pc.is_valid(t["time"]).to_numpy(zero_copy_only=False)
        counts[tname].with_time += int(valid.sum())
        counts[tname].not_error += int(valid.sum())  # MEDS has no error flag
        has_value = valid & pc.is_valid(t["numeric_value"]).to_numpy(zero_copy_only=False) \
            if "numeric_value" in t.column_names else np.zeros(t.num_rows, bool)
        counts[tname].with_valuenum += int(has_value.sum())
        t, k = t.filter(pa.array(has_value)), feature[in_table][has_value]
        if not t.num_rows:
            continue
        rows = index[in_table][has_value]
        factor = np.array([1.0 if i is None else i[3] for i in info])[rows]
        offset = np.array([0.0 if i is None else i[4] for i in info])[rows]
        fahrenheit = np.array([i is not None and i[5] for i in info])[rows]
        item = np.array([-1 if i is None else i[1] for i in info])[rows]
        value = t["numeric_value"].to_numpy(zero_copy_only=False).astype(np.float64)
        value = np.where((factor != 1) | (offset != 0), value * factor + offset, value)
        value[fahrenheit] = fahrenheit_to_celsius(value[fahrenheit])
        keep = (value > LO[k]) & (value <= HI[k])
        counts[tname].in_range += int(keep.sum())
        for f, c in zip(*np.unique(k[keep], return_counts=True), strict=True):
            counts[tname].per_feature[FEATURES[f].name] = counts[tname].per_feature.get(FEATURES[f].name, 0) + int(c)
        if keep.any():
            mask = pa.array(keep)
            kept = pa.table({
                "key": pc.cast(t[key_col], pa.int64()).filter(mask), "feature": pa.array(k[keep], pa.int8()),
                "itemid": pa.array(item[keep], pa.int32()),
                "charttime": pc.cast(t["time"], pa.timestamp("s"), safe=False).filter(mask),
                "value": pa.array(value[keep])}, schema=EVENT_SCHEMA)
            with blaming(staged[tname]):  # a full disk names the file it was writing
                writers[tname].write_table(kept, row_group_size=ROW_GROUP_ROWS)
