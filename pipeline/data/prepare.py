"""Stage `prepare`: MIMIC-III tables → ``dataset.zarr`` (the rules are docs/dataset.md's; counts in attrs).

1. cohort from PATIENTS, ADMISSIONS, ICUSTAYS (cohort.py), exact duplicate rows dropped, a key on two
   different rows an error (mimic.py)
2. LABEVENTS and CHARTEVENTS streamed to Parquet, keeping the valid events of the features, exact
   duplicate events dropped (mimic.py), both tables at once on two threads
3. Dask dataframes over the Parquet: events → samples, span rule, hourly bins (timeseries.py)
4. interpolation, median fill, winsorize and scale; written with xarray as Zarr v3, chunked along
   `sample`, to a temporary name renamed into place when complete
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd
import xarray as xr

from pipeline.config import ConfigError, PipelineConfig, PrepareConfig
from pipeline.data import label_file, meds, mimic, timeseries
from pipeline.data.cohort import build_cohort
from pipeline.data.record import STATS, feature_stats
from pipeline.errors import InputError
from pipeline.features import CHART, FEATURES, LAB, NAMES
from pipeline.hashing import file_sha256
from pipeline.infra import cf, layout
from pipeline.infra.provenance import package_versions
from pipeline.infra.rundir import RunDir, atomic_path, consolidated_zarr_v3

log = logging.getLogger(__name__)

SMALL_TABLES = ("PATIENTS", "ADMISSIONS", "ICUSTAYS")


def mimic_dir_of(cfg: PipelineConfig, run_dir: RunDir) -> Path:
    return Path(cfg.prepare.mimic_dir) if cfg.prepare.mimic_dir else run_dir.raw_dir


def source_of(cfg: PipelineConfig, run_dir: RunDir) -> Path:
    """The folder prepare reads: MIMIC-III's tables, or the MEDS root."""
    if cfg.prepare.source == "meds":
        if cfg.prepare.meds_dir:
            return Path(cfg.prepare.meds_dir)
        if not cfg.synth.meds:
            raise ConfigError("[prepare] source = \"meds\" needs prepare.meds_dir (the MEDS root), or synthetic "
                              "data written as MEDS too (synth.meds = true: <run-dir>/raw/meds)")
        return run_dir.raw_dir / layout.MEDS
    return mimic_dir_of(cfg, run_dir)


def prepare(cfg: PipelineConfig, run_dir: RunDir) -> None:
    """The stage: read the tables (or MEDS root) in the configured folder, write run_dir/dataset.zarr."""
    source = source_of(cfg, run_dir)
    if cfg.prepare.stats_from:
        frozen_stats(cfg.prepare)  # a mismatched store stops the stage before anything is read or written
    with atomic_path(run_dir / layout.DATASET) as tmp:
        ds = build_dataset(source, cfg.prepare, work_dir=run_dir.path, workers=cfg.run.workers,
                           seed=cfg.run.seed)
        write_store(ds, tmp, cfg.prepare.chunk_samples)
    log.info("wrote %s: %d samples (%d positive), %.1f%% of cells observed", run_dir / layout.DATASET,
             ds.sizes["sample"], int(ds.y.sum()), 100 * float(ds["mask"].mean()))


def read_mimic3(mimic_dir: Path, parquet: dict[str, Path], cfg: PrepareConfig, workers: int) -> Read:
    """MIMIC-III's CSV tables: the small ones first (the cohort, so that its rules fail before the long
    read), then the events, filtered into `parquet`."""
    paths = {name: mimic.find_table(mimic_dir, name) for name in (*SMALL_TABLES, LAB, CHART)}
    for warning in mimic.check_dictionaries(mimic_dir):
        log.warning("%s", warning)
    small, duplicates = {}, {}
    for name in SMALL_TABLES:
        small[name], duplicates[name] = mimic.drop_duplicate_rows(mimic.read_table(paths[name], name),
                                                                  paths[name], name)
    cohort, counts = cohort_of(small, cfg)
    results = filter_both(paths, parquet, workers)
    event_counts = {t: r[0] for t, r in zip((LAB, CHART), results, strict=True)}
    checksums = {paths[t].name: r[1] for t, r in zip((LAB, CHART), results, strict=True)}
    checksums.update({paths[t].name: file_sha256(paths[t]) for t in SMALL_TABLES})
    counts["label_from"] = {"hospital_expire_flag": len(cohort)}  # the table's own flag: MIMIC-III's label
    return Read(cohort, counts, event_counts, checksums, duplicates, {t: paths[t] for t in (LAB, CHART)})


def read_meds(root: Path, parquet: dict[str, Path], cfg: PrepareConfig) -> Read:
    """A MEDS root (meds.py): one pass over its events gives the small tables and the filtered events; the
    cohort is the event rules' (cohort.py) or, with `cfg.labels`, the label file's rows (label_file.py)."""
    fmap = meds.FeatureMap.load(cfg.feature_map)
    labels = label_file.read_labels(Path(cfg.labels)) if cfg.labels else None  # a bad file fails before the read
    small, event_counts, checksums, duplicates = meds.read(root, fmap, parquet, by_subject=labels is not None,
                                                            lab_time=cfg.lab_time)
    if labels is not None:
        rows, label_sums, duplicates["labels"] = labels
        cohort, counts = label_file.label_cohort(rows, small, cfg.window_hours, f"[prepare] labels = {cfg.labels!r}")
        cohort["sample"] = np.arange(len(cohort))
        log.info("cohort: %s", ", ".join(f"{k} {v}" for k, v in counts.items()))
        counts["label_from"] = {"label_file": len(cohort)}
        return Read(cohort, counts, event_counts, {**checksums, **label_sums}, duplicates,
                    {t: root for t in (LAB, CHART)})
    cohort, counts = cohort_of(small, cfg)
    evidence = small["ADMISSIONS"].set_index("hadm_id")["label_from"]
    counts["label_from"] = {k: int(v) for k, v in cohort.hadm_id.map(evidence).value_counts().sort_index().items()}
    log.info("cohort: in-hospital death label from %s", ", ".join(f"{k} {v}" for k, v in counts["label_from"].items()))
    return Read(cohort, counts, event_counts, checksums, duplicates, {t: root for t in (LAB, CHART)})


@dataclass
class Read:
    """What a source gives prepare: the cohort (one row a sample) and its rule counts, the filtered events'
    counts, the inputs' checksums, exact duplicates dropped per table, and the file each table came from."""

    cohort: pd.DataFrame
    counts: dict
    event_counts: dict
    checksums: dict
    duplicates: dict
    origin: dict


def cohort_of(small: dict, cfg: PrepareConfig):
    cohort, counts = build_cohort(small["PATIENTS"], small["ADMISSIONS"], small["ICUSTAYS"], cfg)
    log.info("cohort: %s", ", ".join(f"{k} {v}" for k, v in counts.items()))
    cohort["sample"] = np.arange(len(cohort))
    return cohort, counts


def synthetic_origin(source: Path, kind: str) -> dict:
    """The generator's oracle AUROC when `source` is the synth stage's output (raw/, or raw/meds/ read as
    MEDS), so that the report names synthetic data even after raw/ is deleted; {} for real data. Read as a
    number or not at all (None)."""
    folder = source.parent if kind == "meds" else source
    path = folder / "synth.json"
    if not path.is_file():
        return {}
    try:
        oracle = json.loads(path.read_text()).get("oracle_auroc")
    except (OSError, ValueError, AttributeError):
        oracle = None
    ok = isinstance(oracle, int | float) and not isinstance(oracle, bool) and 0 <= oracle <= 1
    return {"oracle_auroc": float(oracle) if ok else None}


def build_dataset(source: Path, cfg: PrepareConfig, work_dir: Path | None = None, workers: int = 2,
                  seed: int = 0) -> xr.Dataset:
    """The dataset of the tables in `source` (or of the MEDS root, cfg.source = "meds"); filtered events are
    staged in a temp dir under `work_dir`.

    With ``cfg.stats_from`` the feature statistics are that store's (checked first), not this cohort's."""
    source = Path(source)
    if cfg.source != "meds" and (cfg.labels or cfg.lab_time != "result"):
        raise ConfigError("[prepare] labels and lab_time = \"draw\" read a MEDS dataset: set source = \"meds\"")
    frozen = frozen_stats(cfg) if cfg.stats_from else None
    splits = meds.subject_splits(source) if cfg.source == "meds" else None  # checked before the long read
    with tempfile.TemporaryDirectory(prefix="prepare-events-", dir=work_dir) as tmp:
        parquet = {table: Path(tmp) / f"{table}.parquet" for table in (LAB, CHART)}
        read = read_meds(source, parquet, cfg) if cfg.source == "meds" else read_mimic3(source, parquet, cfg, workers)
        cohort, counts, event_counts, checksums, duplicates, origin = (
            read.cohort, read.counts, read.event_counts, read.checksums, read.duplicates, read.origin)
        for table, c in event_counts.items():
            log.info("%s: %d rows → %d feature events kept", table, c.rows, c.in_range - c.duplicates)
            duplicates[table] = c.duplicates
            if c.in_range - c.duplicates == 0:  # every feature of the table would be missing: name the file
                raise InputError(f"{origin[table]}: no event of the features kept ({c.rows} rows read; "
                                 f"counts rule by rule: {vars(c)})")
        log.info("exact duplicate rows dropped: %s", ", ".join(f"{k} {v}" for k, v in duplicates.items()))
        # a label file's samples take the subject's events (meds.read keyed them so); its task is the cohort,
        # so the span rule is not applied
        keys = ("subject_id", "subject_id") if cfg.labels else ("hadm_id", "icustay_id")
        with dask.config.set(scheduler="threads", num_workers=max(1, workers)):
            events = dd.concat([  # one partition per Parquet row group: streamed, never whole
                timeseries.attach_samples(dd.read_parquet(parquet[table], split_row_groups=True), cohort, key)
                for table, key in zip((LAB, CHART), keys, strict=True)])
            if cfg.labels:
                keep = np.ones(len(cohort), bool)
            else:
                keep = timeseries.span_ok(events, len(cohort), cfg)
                counts["span_rule"] = int(keep.sum())
            if not keep.any():
                raise InputError(f"the cohort is empty after rule 'span_rule' (counts so far: {counts})")
            per_cell, values = timeseries.window_cells(events, keep, cfg, len(FEATURES))

    cohort = cohort[keep].reset_index(drop=True)
    if frozen is None:
        stats = timeseries.feature_stats(values, len(FEATURES), cfg)
        unseen = [NAMES[k] for k in range(len(FEATURES)) if np.isnan(stats["median"][k])]
        if unseen:
            raise InputError(f"{source}: no kept event inside any window for feature(s) {', '.join(unseen)}; "
                             "cannot compute their percentiles")
    else:
        stats = frozen
    del values
    record = timeseries.build_record(per_cell, len(cohort), cfg.window_hours, len(FEATURES), stats)
    attrs = {
        "description": f"{len(FEATURES)} features in {cfg.window_hours} hourly bins "
                       + (f"before the prediction times of {cfg.labels}" if cfg.labels
                          else "from ICU intime; in-hospital mortality"),
        # the source read (MIMIC-III tables or a MEDS root: `source` says which); relative when it is in the
        # run directory (synth's raw/), so that a run directory copied or moved makes the same dataset again
        "mimic_dir": in_run(source, work_dir),
        "source": cfg.source,
        "cohort_config": dataclasses.asdict(cfg),
        "counts": {**{k: v for k, v in counts.items() if k != "label_from"}, "positive": int(cohort.y.sum())},
        "label_from": counts.get("label_from", {}),  # the death label's evidence, per kind (of the chosen stays)
        "event_counts": {t: vars(c) for t, c in event_counts.items()},
        "duplicates_dropped": duplicates,
        "input_sha256": checksums,
        "versions": package_versions(),
        "seed": seed,
        "sample_order": "label file: ascending subject_id, prediction_time" if cfg.labels else "ascending hadm_id",
        "stats_from": cfg.stats_from,
        "synthetic": synthetic_origin(source, cfg.source),
    }
    ds = to_dataset(record, cohort, stats, attrs)
    if splits is not None:
        ds["meds_split"] = ("sample", cohort.subject_id.map(splits).fillna(-1).to_numpy(np.int8), {
            "long_name": "the subject's MEDS split (metadata/subject_splits.parquet); -1: in none",
            "flag_values": np.arange(-1, len(meds.SPLITS), dtype=np.int8),
            "flag_meanings": "none " + " ".join(meds.SPLITS)})
    return ds


def in_run(source: Path, run_path: Path | None) -> str:
    resolved = source.resolve()
    if run_path is not None and resolved.is_relative_to(Path(run_path).resolve()):
        return resolved.relative_to(Path(run_path).resolve()).as_posix()
    return str(source)


def filter_both(paths: dict[str, Path], parquet: dict[str, Path], workers: int) -> list:
    """LABEVENTS and CHARTEVENTS streamed at once (pyarrow releases the GIL); waits for both before
    raising, so that no thread is still writing when the staging folder is removed."""
    with ThreadPoolExecutor(max_workers=max(1, min(2, workers))) as pool:
        futures = [pool.submit(mimic.filter_events, paths[t], t, parquet[t], i) for i, t in enumerate((LAB, CHART))]
        wait(futures)
    return [f.result() for f in futures]


def frozen_stats(cfg: PrepareConfig) -> dict[str, np.ndarray]:
    """p5, median and p95 of the store `cfg.stats_from` (a trained model's dataset.zarr), after checking
    that it was made with the same features, units and window settings and that each feature's statistics
    are finite with p95 > p5 (ConfigError, one line, otherwise: a damaged store must not scale anything)."""
    where = f"[prepare] stats_from = {cfg.stats_from!r}"
    try:
        ds = xr.open_zarr(cfg.stats_from, consolidated=None)
        lacking = [v for v in ("feature", "unit", *STATS) if v not in ds.variables]
        if not lacking:
            features, units = [str(f) for f in ds.feature.values], [str(u) for u in ds.unit.values]
            stats = feature_stats(ds)
    except (OSError, ValueError, KeyError) as e:  # zarr's metadata errors (a truncated zarr.json) are ValueErrors
        raise ConfigError(f"{where}: not a dataset.zarr that can be read ({type(e).__name__}: {e})") from None
    if lacking:
        raise ConfigError(f"{where}: not a dataset.zarr made by `prepare` (it has no {', '.join(lacking)})")
    if features != list(NAMES) or units != [f.unit for f in FEATURES]:
        raise ConfigError(f"{where}: its features or units differ from this version's ({', '.join(NAMES)})")
    theirs = ds.attrs.get("cohort_config", {})
    mine = dataclasses.asdict(cfg)
    differ = [k for k in FROZEN_KEYS if theirs.get(k) != mine[k]]
    if differ:
        raise ConfigError(f"{where}: made with other window settings: "
                          + ", ".join(f"{k} = {theirs.get(k)!r} there, {mine[k]!r} here" for k in differ))
    ok = np.isfinite(np.stack(list(stats.values()))).all(axis=0) & (stats["p95"] > stats["p5"])
    if not ok.all():
        raise ConfigError(f"{where}: its statistics are not finite with p95 > p5 for "
                          f"{', '.join(np.array(NAMES)[~ok])} (a damaged store?)")
    return stats


# the settings that give x its meaning: the statistics of a store made with other ones do not apply
FROZEN_KEYS = ("window_hours", "lower_percentile", "upper_percentile")


def to_dataset(record: dict[str, np.ndarray], cohort, stats: dict[str, np.ndarray], attrs: dict) -> xr.Dataset:
    x = record["x"]
    n, n_time, _ = x.shape
    units = np.array([f.unit for f in FEATURES], dtype=object)
    clinical = "in the feature's clinical unit (coordinate `unit`)"
    return xr.Dataset(
        data_vars={
            "x": (("sample", "time", "feature"), x,
                  {"long_name": "value scaled to the feature's p5…p95 range, winsorized to [0, 1]",
                   "units": cf.DIMENSIONLESS, "description": "scaled value, (v − p5)/(p95 − p5) in [0, 1]"}),
            "mask": (("sample", "time", "feature"), record["mask"],
                     {"long_name": "the cell holds a measurement (false: imputed)",
                      "description": "the cell had ≥ 1 measured event"}),
            "value": (("sample", "time", "feature"), record["value"],
                      {"long_name": f"recorded value: the mean of the cell's events, {clinical}; NaN where none",
                       "description": "what the record says; x is derived from it (pipeline/data/record.py)"}),
            "count": (("sample", "time", "feature"), record["count"],
                      {"long_name": "number of recorded events in the cell", "units": cf.DIMENSIONLESS}),
            "y": ("sample", cohort["y"].to_numpy(np.int8),
                  {"long_name": "in-hospital mortality (hospital_expire_flag)", **cf.CLASSES,
                   "description": "in-hospital mortality"}),
            "p5": ("feature", stats["p5"], {"long_name": f"5th percentile of the kept event values, {clinical}",
                                            "description": "5th percentile, clinical units"}),
            "median": ("feature", stats["median"], {"long_name": f"median of the kept event values, {clinical}",
                                                    "description": "median, clinical units"}),
            "p95": ("feature", stats["p95"], {"long_name": f"95th percentile of the kept event values, {clinical}",
                                              "description": "95th percentile, clinical units"}),
        },
        coords={
            "sample": ("sample", np.arange(n), {"long_name": "sample index (one per admission, by ascending hadm_id)"}),
            "hadm_id": ("sample", cohort["hadm_id"].to_numpy(np.int64),
                        {"long_name": "MIMIC-III hospital admission id (HADM_ID)"}),
            "icustay_id": ("sample", cohort["icustay_id"].to_numpy(np.int64),
                           {"long_name": "MIMIC-III ICU stay id (ICUSTAY_ID) of the admission's first ICU stay"}),
            "subject_id": ("sample", cohort["subject_id"].to_numpy(np.int64),
                           {"long_name": "MIMIC-III patient id (SUBJECT_ID)"}),
            # integer seconds with no CF `units`: xarray leaves it as stored (a CF time would be decoded to
            # datetime64 and re-encoded on write)
            "intime": ("sample", cohort["intime"].to_numpy("datetime64[s]").astype(np.int64),
                       {"long_name": "ICU intime (hour 0 of the window), seconds since 1970-01-01 in the "
                                     "dataset's own (shifted) dates"}),
            "time": ("time", np.arange(n_time), cf.TIME),
            "feature": ("feature", np.array(NAMES, dtype=object), cf.FEATURE),
            "unit": ("feature", units, cf.UNIT),
        },
        attrs={**cf.GLOBAL, **attrs},
    )


def write_store(ds: xr.Dataset, path: Path, chunk_samples: int) -> None:
    """Zarr v3, chunked along `sample` only; consolidated metadata once, at the end."""
    along = min(chunk_samples, ds.sizes["sample"])
    encoding = {name: {"chunks": tuple(along if d == "sample" else ds.sizes[d] for d in var.dims)}
                for name, var in ds.variables.items() if "sample" in var.dims}
    with consolidated_zarr_v3():
        ds.to_zarr(path, mode="w", zarr_format=3, consolidated=True, encoding=encoding)
