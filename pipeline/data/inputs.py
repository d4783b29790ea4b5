"""The files `prepare` reads from outside the run directory (MIMIC-III's tables, a MEDS root, or synth's
``raw/``), as its marker records them: a complete `prepare` whose tables changed since is stale, and
`run` must not skip it silently (the stages after it would describe data that is no longer there)."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline import hashing
from pipeline.config import PipelineConfig
from pipeline.data import meds, mimic
from pipeline.features import CHART, LAB
from pipeline.infra import layout

TABLES = ("PATIENTS", "ADMISSIONS", "ICUSTAYS", LAB, CHART)


def source_files(cfg: PipelineConfig, run_dir) -> dict[str, Path]:
    """{name in dataset.zarr's input_sha256: path} of every file prepare reads."""
    from pipeline.data.prepare import source_of  # deferred: prepare imports Dask

    source = source_of(cfg, run_dir)
    if cfg.prepare.source == "meds":
        return {str(p.relative_to(source)): p for p in meds.data_files(source)}
    return {p.name: p for p in (mimic.find_table(source, name) for name in TABLES)}


def record(cfg: PipelineConfig, run_dir) -> dict[str, dict]:
    """What prepare's marker keeps of its input files: size and stat key from disk, and the sha256 that
    prepare took while it streamed them (dataset.zarr's input_sha256; nothing is read twice)."""
    attrs = json.loads((run_dir / layout.DATASET / "zarr.json").read_text()).get("attributes", {})
    sha = attrs.get("input_sha256", {})
    return {name: {"size": p.stat().st_size, "stat": hashing.stat_key(p), "sha256": sha.get(name)}
            for name, p in source_files(cfg, run_dir).items()}


def changes(cfg: PipelineConfig, run_dir, recorded: dict[str, dict]) -> list[str]:
    """What differs between the input files now and `recorded` (:func:`record`): files added, gone, or
    whose content changed (a file whose size and stat key are as recorded is not read)."""
    now = source_files(cfg, run_dir)
    found = [f"{name} is new" for name in sorted(set(now) - set(recorded))]
    found += [f"{name} is gone" for name in sorted(set(recorded) - set(now))]
    found += [f"{name} changed" for name in sorted(set(now) & set(recorded))
              if not hashing.unchanged(now[name], recorded[name], chunk=False)]
    return found
