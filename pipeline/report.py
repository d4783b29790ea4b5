"""``report.md``: one page that ties a run together (data, model, attack, susceptibility, figures).

Every model figure says where it was measured: held-out CV folds or the held-out test set, never the
training data.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from .rundir import RunDir
from .susceptibility import DIRECTIONS, label

METRICS = ("auroc", "auprc", "f1", "precision", "recall", "accuracy")
SPARSE_CELLS = 10  # an example that changes at most this many cells reads as a few data-entry errors
SHOWN_EXAMPLES = 5


def summary(sus: xr.Dataset, ex: xr.Dataset) -> list[dict]:
    """Per direction and kind: targets, successes, success rate, median L0/L1/L∞ and iteration, and the
    share of targets whose example changes at most SPARSE_CELLS cells."""
    rows = []
    for d in DIRECTIONS:
        members = ex.direction == d
        for k in ex.kind.values:
            ok = (ex.found.sel(kind=k) & members).values
            row = {"direction": d, "kind": str(k), "targets": int(members.sum()), "successes": int(ok.sum()),
                   "success_rate": float(sus.success_rate.sel(direction=d, kind=k))}
            for name in ("l0", "l1", "linf", "iteration"):
                values = ex[name].sel(kind=k).values[ok]
                row[f"median_{name}"] = float(np.median(values)) if values.size else float("nan")
            sparse = int((ex.l0.sel(kind=k).values[ok] <= SPARSE_CELLS).sum())
            row[f"share_l0_le_{SPARSE_CELLS}"] = sparse / row["targets"] if row["targets"] else float("nan")
            rows.append(row)
    return rows


def _fmt(value: float) -> str:
    return "–" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.4g}"


def _params(values: dict) -> str:
    return ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in values.items())


def _table(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---:" if pd.api.types.is_numeric_dtype(frame[c]) else "---" for c in frame.columns) + "|"
    body = ["| " + " | ".join(_fmt(v) if isinstance(v, float) else str(v) for v in row) + " |"
            for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"


def data_section(data: xr.Dataset) -> list[str]:
    counts = data.attrs.get("counts", {})
    n, positive = data.sizes["sample"], int(data.y.sum())
    lines = ["## Data", "",
             f"- source: `{data.attrs.get('mimic_dir', '?')}`",
             f"- {n} samples (ICU stays), {positive} died in hospital ({100 * positive / max(n, 1):.1f}%); "
             f"{100 * float(data['mask'].mean()):.1f}% of the 48 × 19 cells hold a measurement",
             "- cohort, rule by rule: " + ", ".join(f"{k} {v}" for k, v in counts.items())]
    if "duplicates_dropped" in data.attrs:  # absent from stores written before it was counted
        lines.append("- exact duplicate rows dropped: "
                     + ", ".join(f"{k} {v}" for k, v in data.attrs["duplicates_dropped"].items()))
    return [*lines, ""]


def model_section(run_dir: Path) -> list[str]:
    run = RunDir(run_dir)
    model = run.model_record()["model"] if (run_dir / "model").exists() else {}
    cv = run.cv_summary()
    test = run.test_metrics()
    params = model.get("params", {})
    lines = ["## Model", "",
             "LSTM: " + _params(params),
             f"(parameters from {model.get('params_source', '?')}; {model.get('epochs', '?')} epochs from "
             f"{model.get('epochs_source', '?')}).", ""]
    header = "| metric | CV, held-out folds (mean ± sd) | test set, final model |"
    rows = [header, "|---|---:|---:|"]
    for m in METRICS:
        cv_text = f"{cv['mean'][m]:.3f} ± {cv['sd'][m]:.3f}" if cv else "–"
        rows.append(f"| {m} | {cv_text} | {_fmt(test[m]) if test else '–'} |")
    lines += rows + ["",
                     f"CV: {cv['folds'] if cv else '?'} folds of the non-test samples, each scored on the fold "
                     "it was not trained on. Test set: never seen by tuning or CV, scored once. Threshold 0.5 "
                     "for F1, precision, recall and accuracy.", ""]
    return lines


def attack_section(attack: xr.Dataset, rows: list[dict], changes: pd.DataFrame) -> list[str]:
    cfg = attack.attrs.get("attack_config", {})
    rows = pd.DataFrame(rows)
    rows["direction"] = rows["direction"].map(label)  # 0to1 → 0→1: the report is read, not typed
    for share in ("success_rate", f"share_l0_le_{SPARSE_CELLS}"):
        rows[share] = [f"{100 * v:.1f}%" if v == v else "–" for v in rows[share]]  # v != v: NaN
    rows = rows.rename(columns={"median_l0": "median L0 (cells)", "median_l1": "median L1",
                                "median_linf": "median L∞", "median_iteration": "median iteration",
                                "success_rate": "success rate",
                                f"share_l0_le_{SPARSE_CELLS}": f"share of targets, ≤ {SPARSE_CELLS} cells"})
    return ["## Attack", "",
            f"{attack.sizes['sample']} targets: the correctly classified samples of the "
            f"{attack.attrs.get('targets', '?')} set. Parameters ({attack.attrs.get('params_source', '?')}): "
            + _params(cfg) + f"; seed {attack.attrs.get('seed')}.", "",
            "A direction is the prediction before → after (`0to1`, `1to0` in susceptibility.zarr and "
            "`tables/`); *first* is the first iterate that flipped the "
            "prediction, *best* the flipped iterate with the smallest L1 (over the whole budget and every run "
            "of the λ search). L0 counts the changed cells of the 48 × 19 = 912; L1 and L∞ in scaled units "
            "(1 = the feature's p5…p95 range). The last column is the share of all targets in the direction "
            f"whose example changes at most {SPARSE_CELLS} cells.", "",
            _table(rows), *sparsest_examples(changes)]


def sparsest_examples(changes: pd.DataFrame) -> list[str]:
    """The best examples that change the fewest cells, each change in clinical units."""
    if changes.empty:
        return []
    cells = changes.groupby("sample").size().sort_values(kind="stable")
    lines = [f"The {min(SHOWN_EXAMPLES, len(cells))} best examples that change the fewest cells (every changed "
             "cell of every example, in clinical units: `tables/changes_best.csv`):", ""]
    for sample in cells.index[:SHOWN_EXAMPLES]:
        rows = changes[changes["sample"] == sample]
        first = rows.iloc[0]
        edits = "; ".join(f"{r.feature} at hour {r.hour} {r.before:.4g} → {r.after:.4g} {r.unit}"
                          for r in rows.itertuples())
        cells_text = "1 cell" if len(rows) == 1 else f"{len(rows)} cells"
        lines.append(f"- hadm_id {first.hadm_id} ({label(first.direction)}, {cells_text}): {edits}")
    return lines + [""]


def susceptibility_section(tables: dict[str, dict]) -> list[str]:
    lines = ["## Susceptibility", "",
             "S_j = Σ over hours of GMP · GPP over the successful examples (METHODS.md §6); full tables in "
             "`tables/` and every score per cell in `susceptibility.zarr`. Sun et al.'s figures are as "
             "transcribed by a later reproduction, which could not reproduce them.", ""]
    for d, t in tables.items():
        lines += [f"### Direction {label(d)}", ""]
        if t["successes"] == 0:
            lines += ["No successful example in this direction: no scores.", ""]
            continue
        lines += [t["ranking"],
                  f"Perturbations of the best examples in clinical units ({label(d)}):", "",
                  _table(t["clinical"].drop(columns=["p5_to_p95_range"]).rename(columns={
                      "cells_changed": "cells changed", "examples_touching": "examples",
                      "median_abs_change": "median abs. change", "max_abs_change": "max abs. change"})), ""]
    return lines


def render(run_dir: Path, data: xr.Dataset, attack: xr.Dataset, rows: list[dict], tables: dict[str, dict],
           captions: dict[str, str], changes: pd.DataFrame) -> str:
    """The report; `rows` are :func:`summary`'s, `tables` per direction the ranking (Markdown), the
    clinical table and the number of successes, `captions` figure file name → caption, `changes` every
    changed cell of the best examples in clinical units."""
    lines = ["# Adversarial susceptibility of an in-hospital mortality LSTM", "",
             f"Run directory `{run_dir}`, seed {attack.attrs.get('seed')}, written "
             f"{time.strftime('%Y-%m-%d %H:%M')}.", ""]
    lines += data_section(data)
    lines += model_section(run_dir)
    lines += attack_section(attack, rows, changes)
    lines += susceptibility_section(tables)
    lines += ["## Figures", ""]
    for name, caption in captions.items():
        lines += [f"**{caption}**", "", f"![{caption}](figures/{name})", ""]
    return "\n".join(lines)
