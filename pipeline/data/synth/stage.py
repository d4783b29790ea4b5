"""The entry points: :func:`generate` writes the tables of one seed into a folder, :func:`synth` is the stage.

The admissions and the small tables are drawn from the seed's stream first; the events are generated and
written in chunks of :data:`CHUNK_ADMISSIONS` admissions, each from a stream of its own, so memory stays
flat and the same seed gives byte-identical files.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipeline.config import PipelineConfig
from pipeline.data import meds_export
from pipeline.data.synth.admissions import SCENARIO, draw_admissions, place_in_time
from pipeline.data.synth.events import chart_table, lab_table
from pipeline.data.synth.tables import (
    admissions_table,
    d_items_table,
    d_labitems_table,
    icustays_table,
    patients_table,
    true_risk_table,
)
from pipeline.data.synth.writing import GzipCsv, WriterThreads, write_table
from pipeline.infra import layout
from pipeline.infra.rundir import RunDir, atomic_path
from pipeline.metrics import auroc

log = logging.getLogger(__name__)

NOISE_FRACTION = 0.65  # share of non-feature rows in CHARTEVENTS and LABEVENTS (real MIMIC: ~0.89 / ~0.75)
CHUNK_ADMISSIONS = 500  # admissions whose events are generated and written at once


def generate(out_dir: Path, admissions: int, seed: int, noise_fraction: float = NOISE_FRACTION) -> dict:
    """Write the seven MIMIC-III tables (+ TRUE_RISK.csv.gz and synth.json) into `out_dir`; return the summary."""
    if admissions < 1:
        raise ValueError(f"admissions must be ≥ 1, got {admissions}")
    if not 0 <= noise_fraction < 1:
        raise ValueError(f"noise_fraction must be in [0, 1), got {noise_fraction}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    adm = draw_admissions(rng, admissions)
    place_in_time(rng, adm)
    small = {
        "PATIENTS": patients_table(rng, adm),
        "ADMISSIONS": admissions_table(rng, adm),
        "ICUSTAYS": icustays_table(rng, adm),
        "D_ITEMS": d_items_table(),
        "D_LABITEMS": d_labitems_table(),
        "TRUE_RISK": true_risk_table(adm),
    }
    log.info("synth: %d admissions, %d subjects, %d ICU stays; writing events to %s", admissions,
             small["PATIENTS"].num_rows, small["ICUSTAYS"].num_rows, out_dir)
    rows = {}
    with WriterThreads() as threads:
        for name, table in small.items():
            rows[name] = write_table(out_dir / f"{name}.csv.gz", table, threads)
        with GzipCsv(out_dir / "CHARTEVENTS.csv.gz", threads) as chart, \
                GzipCsv(out_dir / "LABEVENTS.csv.gz", threads) as lab:
            starts = range(0, admissions, CHUNK_ADMISSIONS)
            for chunk, start in enumerate(tqdm(starts, desc="synth events", unit="chunk", disable=None)):
                adms = np.arange(start, min(start + CHUNK_ADMISSIONS, admissions))
                stays = np.arange(*np.searchsorted(adm.stays.adm, [adms[0], adms[-1] + 1]))
                chunk_rng = np.random.default_rng([seed, chunk])  # chunks are independent streams
                chart.append(chart_table(chunk_rng, adm, stays, noise_fraction, chart.rows + 1))
                lab.append(lab_table(chunk_rng, adm, adms, noise_fraction, lab.rows + 1))
        rows["CHARTEVENTS"], rows["LABEVENTS"] = chart.rows, lab.rows
    summary = {
        "seed": seed,
        "admissions": admissions,
        "noise_fraction": noise_fraction,
        "rows": dict(sorted(rows.items())),
        "mortality_rate": float(adm.died.mean()),
        "oracle_auroc": None if np.isnan(oracle := auroc(adm.risk, adm.died)) else oracle,  # None: one class only
        "scenarios": {name: int((adm.scenario == code).sum()) for name, code in SCENARIO.items()},
    }
    (out_dir / "synth.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary


def synth(cfg: PipelineConfig, run_dir: RunDir) -> None:
    """Stage `synth`: the synthetic MIMIC-III tables in run_dir/raw, written whole or not at all."""
    noise_fraction = cfg.synth.noise_fraction
    with atomic_path(run_dir.raw_dir) as tmp:
        summary = generate(tmp, cfg.synth.admissions, cfg.run.seed, noise_fraction)
        if cfg.synth.meds:
            meds_export.write_meds(tmp, tmp / layout.MEDS, seed=cfg.run.seed, dataset_name="synthetic MIMIC-III")
            log.info("synth: the cohort as MEDS too in %s", run_dir.raw_dir / layout.MEDS)
    for name, n in summary["rows"].items():
        log.info("synth: %-12s %12d rows", name, n)
    oracle = summary["oracle_auroc"]
    log.info("synth: in-hospital mortality %.1f %%, oracle AUROC (true risk vs label) %s",
             100 * summary["mortality_rate"], "n/a (one class)" if oracle is None else f"{oracle:.3f}")
