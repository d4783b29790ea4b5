"""Stage `analyze`: susceptibility scores, ranked tables, figures and ``report.md`` (xarray).

Reads ``attack.zarr`` and ``dataset.zarr`` lazily, computes the scores of docs/methods.md §6 per
direction (``0to1``, ``1to0``: prediction 0 → 1 and 1 → 0) and kind (first, best) and writes

- ``susceptibility.zarr``: dims (direction, kind, time, feature); GMP, GAP, GANZP also in clinical
  units (× (p95 − p5) of the feature)
- ``tables/susceptibility_<dir>.csv`` (every feature) and ``.md`` (the top features, next to Sun et
  al.'s published ranking), ``tables/clinical_<dir>.csv`` (perturbation sizes in clinical units)
- ``figures/*.png`` and ``report.md``, which ties them together.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from pipeline.config import ModelParams, PipelineConfig
from pipeline.errors import InputError
from pipeline.infra import cf, layout, rundir
from pipeline.infra.rundir import RunDir
from pipeline.model import load_model
from pipeline.susceptibility import checks_report, confidence, entry_report, figures, report, trust
from pipeline.susceptibility.one_edit_map import feature_table, one_edit_scores
from pipeline.susceptibility.realizable import imputed_share, record_edits, rederived_flips
from pipeline.susceptibility.scores import CLINICAL_ATTRS, DIRECTIONS, direction_of, norms, scores, to_clinical

log = logging.getLogger(__name__)

# Sun et al. 2018, S_j of their first five features and their last, as transcribed by a later
# reproduction (docs/methods.md §6); names mapped to this project's features.
PUBLISHED = {
    "0to1": [(1, "sodium", 0.64), (2, "pco2", 0.61), (3, "bicarbonate", 0.57), (4, "glucose", 0.51),
            (5, "creatinine", 0.46), (19, "diasbp", 0.04)],
    "1to0": [(1, "creatinine", 1.95), (2, "sodium", 1.48), (3, "lactate", 0.72), (4, "bicarbonate", 0.56),
            (5, "ph", 0.54), (19, "tempc", 0.04)],
}


def open_run(run_dir: Path) -> tuple[xr.Dataset, xr.Dataset]:
    """attack.zarr and dataset.zarr of a run, lazily."""
    run = RunDir(run_dir)
    return run.attack_store(), run.dataset()


def examples(attack: xr.Dataset) -> xr.Dataset:
    """Per target and kind: direction, found, iteration and the L0/L1/L∞ of the example (of the change of
    the model's input); for a record-space run also `edits`, the number of edited recorded values, and
    `edit_l1`, the L1 of the edit (scaled units)."""
    out = norms(attack.perturbation).where(attack.found)
    if "edit" in attack:
        edit = norms(attack["edit"]).where(attack.found)
        out["edits"], out["edit_l1"] = edit.l0, edit.l1
    out["found"] = attack.found
    if "method" in attack:  # decoded with the store's own codes
        out["method"] = cf.decode(attack.method.compute())
    out["iteration"] = attack.iteration.where(attack.iteration >= 0)  # NaN: none, or another search's example
    return out.assign_coords(direction=("sample", direction_of(attack.pred).values)).compute()


def realizability(attack: xr.Dataset, data: xr.Dataset, run_dir: Path,
                  model_params: ModelParams | None = None) -> dict[str, np.ndarray]:
    """Per kind, per target: the example re-derives from the edited record to a flipped prediction."""
    if "value" not in data:  # a dataset.zarr made before the record was kept: nothing to re-derive from
        return {}
    model = load_model(run_dir, model=model_params)
    return {str(k): rederived_flips(attack, data, model, str(k)) for k in attack.kind.values}


def compute(attack: xr.Dataset, data: xr.Dataset) -> xr.Dataset:
    """The susceptibility dataset (in memory), with clinical-unit copies of GMP, GAP and GANZP."""
    sus = scores(attack.perturbation, attack.found, direction_of(attack.pred)).compute()
    for name in ("gmp", "gap", "ganzp"):
        sus[f"{name}_clinical"] = to_clinical(sus[name], data.p5, data.p95).compute()
        sus[f"{name}_clinical"].attrs = dict(CLINICAL_ATTRS[f"{name}_clinical"])
    if "edit" in attack:  # record space: the same scores over the edits of the recorded values
        edits = scores(attack["edit"], attack.found, direction_of(attack.pred)).compute()
        for name in EDIT_SCORES:
            sus[f"edit_{name}"] = edits[name]
            sus[f"edit_{name}"].attrs = {**edits[name].attrs,
                                         "long_name": edits[name].attrs["long_name"].replace("P", "δ")
                                         + ", over the edits δ of the recorded values (by hour of recording)"}
    if "one_edit" in attack:  # record space: what each recorded value can do alone
        sus = sus.merge(one_edit_scores(attack, data))
    sus = sus.assign_coords(unit=("feature", data["unit"].values), time=("time", data.time.values))
    cf.annotate(sus, {"time": cf.TIME, "feature": cf.FEATURE, "unit": cf.UNIT, "kind": dict(attack.kind.attrs)})
    sus.attrs = {**cf.GLOBAL, "seed": attack.attrs.get("seed"), "attack_config": attack.attrs.get("attack_config"),
                 "attack_params_source": attack.attrs.get("params_source"),
                 "targets": attack.attrs.get("targets"), "weights_sha256": attack.attrs.get("weights_sha256"),
                 "description": "susceptibility scores of Sun et al. 2018 (docs/methods.md §6) "
                                "over successful examples"}
    return sus


EDIT_SCORES = ("gmp", "gap", "gpp", "s", "s_j", "ganzp", "sensitivity", "sensitivity_j")


def edit_table(edits: pd.DataFrame, data: xr.Dataset, direction: str) -> pd.DataFrame:
    """Per feature, over the edits of the best examples of `direction`: how many examples edit it, how
    many values, which way (raised, lowered), the median signed edit and the median and max size of an
    edit in clinical units — most edited first."""
    rows = edits[edits["direction"] == direction]
    signed = rows["after"] - rows["before"]
    change = signed.abs()
    table = pd.DataFrame({"feature": data.feature.values, "unit": data["unit"].values})
    grouped = rows.assign(change=change).groupby("feature")
    table["examples"] = table.feature.map(grouped["sample"].nunique()).fillna(0).astype(int)
    table["edited_values"] = table.feature.map(grouped.size()).fillna(0).astype(int)
    way = rows.assign(up=signed > 0, down=signed < 0, signed=signed).groupby("feature")
    table["raised"] = table.feature.map(way["up"].sum()).fillna(0).astype(int)
    table["lowered"] = table.feature.map(way["down"].sum()).fillna(0).astype(int)
    table["median_edit"] = table.feature.map(way["signed"].median())
    table["median_abs_edit"] = table.feature.map(grouped["change"].median())
    table["max_abs_edit"] = table.feature.map(grouped["change"].max())
    return table.sort_values(["examples", "edited_values"], ascending=False, kind="stable").reset_index(drop=True)


def ranking_table(sus: xr.Dataset, direction: str) -> pd.DataFrame:
    """Every feature with S_j and sensitivity_j of first and best examples, ranked by S_j of the best."""
    d = sus.sel(direction=direction)
    table = pd.DataFrame({"feature": d.feature.values, "unit": d.unit.values})
    for kind in d.kind.values:
        table[f"s_j_{kind}"] = d.s_j.sel(kind=kind).values
        table[f"sensitivity_j_{kind}"] = d.sensitivity_j.sel(kind=kind).values
    table = table.sort_values("s_j_best", ascending=False, na_position="last", kind="stable")
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    return table.reset_index(drop=True)


def ranking_markdown(table: pd.DataFrame, direction: str, top: int, compare: bool = True) -> str:
    """The top features next to the published ranking (ranks 1–5 and 19 are known) where `compare` (the
    data are real MIMIC-III of a size to compare with), else the same columns without it."""
    published = {rank: f"{name} {value:.2f}" for rank, name, value in PUBLISHED[direction]} if compare else {}
    lines = ["| rank | feature | S_j (best) | S_j (first) | sensitivity_j (best) | Sun et al. 2018 |",
             "|---:|---|---:|---:|---:|---|"]
    shown = list(range(min(top, len(table))))
    if len(table) - 1 not in shown:
        shown.append(len(table) - 1)
    for i in shown:
        row = table.iloc[i]
        if i == shown[-1] and i != shown[-2] + 1:
            lines.append("| … | | | | | |")
        lines.append(f"| {row['rank']} | {row.feature} | {row.s_j_best:.3f} | {row.s_j_first:.3f} | "
                     f"{row.sensitivity_j_best:.1f} | {published.get(int(row['rank']), '')} |")
    return "\n".join(lines) + "\n"


def clinical_table(attack: xr.Dataset, data: xr.Dataset, direction: str, kind: str = "best") -> pd.DataFrame:
    """Per feature: how many cells the successful examples changed and by how much, in clinical units."""
    chosen = (attack.found.sel(kind=kind) & (direction_of(attack.pred) == direction)).values
    p = attack.perturbation.sel(kind=kind).values[chosen]  # (n, time, feature), scaled units
    span = (data.p95 - data.p5).values
    delta = np.abs(p) * span
    rows = []
    for j, name in enumerate(data.feature.values):
        changed = delta[:, :, j][p[:, :, j] != 0]
        rows.append({"feature": name, "unit": data.unit.values[j], "cells_changed": int(changed.size),
                     "examples_touching": int((p[:, :, j] != 0).any(axis=1).sum()),
                     "median_abs_change": float(np.median(changed)) if changed.size else np.nan,
                     "max_abs_change": float(changed.max()) if changed.size else np.nan,
                     "p5_to_p95_range": float(span[j])})
    return pd.DataFrame(rows)


def changed_cells(attack: xr.Dataset, data: xr.Dataset, kind: str = "best") -> pd.DataFrame:
    """Every cell that a successful example changes: before → after in clinical units, one row each.

    "before" is the model's input (interpolated, winsorized to [p5, p95]) mapped back to clinical units.
    """
    found = attack.found.sel(kind=kind).values
    p = attack.perturbation.sel(kind=kind).values  # (sample, time, feature), scaled units
    sample, hour, feature = np.nonzero(p * found[:, None, None])
    index = attack.dataset_index.values[sample]
    span, low = (data.p95 - data.p5).values, data.p5.values
    before = data.x.values[index, hour, feature]
    direction = direction_of(attack.pred).values
    return pd.DataFrame({
        "sample": sample, "hadm_id": data.hadm_id.values[index], "direction": direction[sample],
        "feature": data.feature.values[feature], "hour": hour, "unit": data["unit"].values[feature],
        "before": before * span[feature] + low[feature],
        "after": (before + p[sample, hour, feature]) * span[feature] + low[feature],
        "change_scaled": p[sample, hour, feature]})


def draw(run_dir: RunDir, sus: xr.Dataset, ex: xr.Dataset, max_iter: int) -> dict[str, str]:
    """Every figure of the report; returns file name → caption."""
    captions = {}

    def fig(name: str, caption: str) -> Path:
        captions[name] = caption
        return run_dir.figure(name)

    figures.score_heatmaps(sus.gpp, sus.n,
                           fig("gpp_heatmap.png", "GPP: share of successful examples that changed a cell"),
                           "GPP: how often each cell is perturbed", "GPP (share of successful examples)",
                           per_panel=True)
    if "edit_gpp" in sus:
        figures.score_heatmaps(sus.edit_gpp, sus.n,
                               fig("edit_gpp_heatmap.png", "record space: share of successful examples that edit "
                                                           "the value recorded at each hour"),
                               "how often each recorded value is edited", "share of successful examples",
                               per_panel=True)
    figures.score_heatmaps(sus.s, sus.n, fig("s_heatmap.png", "S = GMP · GPP per cell"),
                           "susceptibility S = GMP · GPP per cell", "S (scaled units, 1 = p5…p95 range)",
                           per_panel=True)
    figures.score_heatmaps(sus.gap, sus.n,
                           fig("gap_heatmap.png", "GAP: mean |P| per cell over the successful examples"),
                           "GAP: mean |perturbation| per cell", "GAP (scaled units: 1 = the feature's p5…p95 range)",
                           per_panel=True)
    if "one_edit_share" in sus:
        share = sus.one_edit_share.expand_dims(kind=["one edit"])
        targets = sus.one_edit_targets.expand_dims(kind=["one edit"])
        figures.score_heatmaps(share, targets, fig("one_edit_heatmap.png", "one edit: share of targets whose "
                                                   "prediction the value recorded at each hour can flip alone"),
                               "which single recorded value can flip the prediction by itself", "share of targets",
                               count="targets")
        size = sus.one_edit_median_scaled.expand_dims(kind=["one edit"])
        finite = size.values[np.isfinite(size.values)]
        cap = float(np.quantile(finite, 0.95)) if finite.size and np.quantile(finite, 0.95) > 0 else None
        figures.score_heatmaps(size, targets, fig("one_edit_size_heatmap.png", "one edit: median smallest flipping "
                                                  "edit, in units of the feature's p5…p95 range"),
                               "how large the smallest flipping edit of one value is (median over the targets)",
                               "|edit| / (p95 − p5), scale capped at the 95th percentile", count="targets",
                               vmax=cap)
    figures.ranking_bars(sus.s_j, sus.n, fig("s_j_ranking.png", "S_j per feature, per kind of example"),
                         "S_j = Σ over hours of GMP · GPP")
    figures.norm_histograms(ex, ex.found, fig("norms.png", "L0, L1, L∞ of the examples, per kind"),
                            (sus.sizes["time"], sus.sizes["feature"]), report.SPARSE_CELLS)
    iterated = [k for k in ex.kind.values if bool((ex.iteration.sel(kind=k).notnull() | ~ex.found.sel(kind=k)).all())]
    figures.iteration_cdf(ex.iteration.sel(kind=iterated), ex.found.sel(kind=iterated), ex.direction, max_iter,
                          fig("iteration_cdf.png", "iteration at which the L1 attack found its examples (CDF), "
                                                   "up to max_iter; the legend gives the share found in its last "
                                                   "10%"))
    folds, test = run_dir.held_out_predictions()
    if folds and report.cross_validated(run_dir.model_record()["model"]):
        figures.cv_curves(folds, test, fig("cv_roc_pr.png", "ROC and precision–recall curves of the held-out "
                                                           "CV folds and of the test set"))
    return captions


def entry_errors(run_dir: RunDir, data: xr.Dataset, captions: dict[str, str],
                 model_params: ModelParams | None = None) -> tuple[list[str], pd.DataFrame | None]:
    """The `errors` stage's results, when it ran: verified, tabulated, drawn; the report's lines and the
    k-error table."""
    store = entry_report.load(run_dir)
    if store is None:
        return [], None
    verified = entry_report.verify(store, data, load_model(run_dir.path, model=model_params))
    unverified = int((store.flipped.values & ~verified).sum())
    if unverified:  # every flip the search reported is one; anything else is a store that lost data
        raise InputError(f"{run_dir / layout.ERRORS}: {unverified} of {int(store.flipped.sum())} flips do not flip "
                         "the model when their errors are written into the record again: the store is not what "
                         "`errors` found (damaged, or made with another model); redo it with "
                         "`python -m pipeline errors --force`")
    errors = entry_report.errors_table(store)
    k, kinds, features = (entry_report.k_table(store, verified), entry_report.by_kind(errors, store),
                          entry_report.by_feature(errors))
    for name, frame in (("errors", errors), ("errors_k", k), ("errors_kind", kinds), ("errors_feature", features)):
        rundir.write_text(run_dir.table(f"{name}.csv"), frame.to_csv(index=False))
    share, flips = entry_report.heat(errors, store, data.sizes["time"])
    name = "errors_heatmap.png"
    captions[name] = "entry errors: share of flipped targets with an erroneous entry at each hour and feature"
    figures.score_heatmaps(share, flips, run_dir.figure(name), "where the flipping entry errors were made",
                           "share of flipped targets")
    for row in k.itertuples():
        log.info("analyze: entry errors, %s: %d of %d targets flipped, %d verified", row.direction, row.flipped,
                 row.targets, row.verified)
    return entry_report.section(k, kinds, features, errors, store, report.table), k


def analyze(cfg: PipelineConfig, run_dir: RunDir) -> None:
    with run_dir.staged(layout.TABLES, layout.FIGURES):  # tables and figures of this run only
        write_results(cfg, run_dir)


def write_results(cfg: PipelineConfig, run_dir: RunDir) -> None:
    """Everything analyze writes: susceptibility.zarr, the tables, the figures and report.md."""
    attack, data = open_run(run_dir.path)
    log.info("analyze: %d targets, %d with a successful example", attack.sizes["sample"],
             int(attack.found.sel(kind="first").sum()))
    sus = compute(attack, data)
    with rundir.atomic_path(run_dir / layout.SUSCEPTIBILITY) as tmp, rundir.consolidated_zarr_v3():
        sus.to_zarr(tmp, mode="w", zarr_format=3, consolidated=True)
    identity = trust.data_identity(run_dir.path, data.attrs, data.sizes["sample"])
    tables: dict[str, dict] = {}
    for d in DIRECTIONS:
        ranked = ranking_table(sus, d)
        clinical = clinical_table(attack, data, d)
        rundir.write_text(run_dir.table(f"susceptibility_{d}.csv"), ranked.to_csv(index=False))
        markdown = ranking_markdown(ranked, d, cfg.analyze.top_features, identity.published_comparable)
        rundir.write_text(run_dir.table(f"susceptibility_{d}.md"), markdown)
        rundir.write_text(run_dir.table(f"clinical_{d}.csv"), clinical.to_csv(index=False))
        tables[d] = {"ranking": markdown, "clinical": clinical, "successes": int(sus.n.sel(direction=d).max())}
        if tables[d]["successes"]:
            top = ranked.iloc[0]
            log.info("analyze: %s, most susceptible feature %s (S_j %.3f, best examples)", d, top.feature,
                     top.s_j_best)
        else:  # no scores to rank (they are NaN): say so rather than name the first feature
            log.info("analyze: %s, no successful example: no susceptibility scores", d)
    ex = examples(attack)
    edits_record = "edit" in attack  # the examples are edits of the record (else changes of the model's input)
    captions = draw(run_dir, sus, ex, int(attack.attrs["attack_config"]["max_iter"]))
    realizable = realizability(attack, data, run_dir.path, cfg.model)
    imputed = {(d, str(k)): imputed_share(attack, data, str(k), d) for d in DIRECTIONS for k in attack.kind.values}
    summary = report.summary(sus, ex, realizable, None if edits_record else imputed)
    for row in summary:
        if edits_record and row.get("realizable", row["successes"]) < row["successes"]:
            raise InputError(f"{run_dir / layout.ATTACK}: {row['successes'] - row['realizable']} of "
                             f"{row['successes']} {row['kind']} examples ({row['direction']}) do not re-derive to a "
                             "flip: the store is not what `attack` found (damaged, or made with another model); "
                             "redo it with `python -m pipeline attack --force`")
    rundir.write_json(run_dir.table(layout.SUMMARY), summary)
    for row in summary:
        if row["kind"] == "best" and "realizable" in row:
            log.info("analyze: %s, %d of %d best examples re-derive from the edited record to a flip", row["direction"],
                     row["realizable"], row["successes"])
    changes = changed_cells(attack, data)
    rundir.write_text(run_dir.table("changes_best.csv"), changes.to_csv(index=False))
    edits = record_edits(attack, data) if edits_record else None
    if edits is not None:
        rundir.write_text(run_dir.table("edits_best.csv"), edits.to_csv(index=False))
        for d in DIRECTIONS:
            tables[d]["edits"] = edit_table(edits, data, d)
            rundir.write_text(run_dir.table(f"edits_{d}.csv"), tables[d]["edits"].to_csv(index=False))
            tables[d]["one_edit"] = feature_table(attack, data, d)
            rundir.write_text(run_dir.table(f"one_edit_{d}.csv"), tables[d]["one_edit"].to_csv(index=False))
    entry, k_errors = entry_errors(run_dir, data, captions, cfg.model)
    fewest = report.fewest_section(summary, k_errors, sus, tables) if edits is not None else []
    headline, confident, probability = "", [], None
    if run_dir.model_dir.exists():  # a hand-made store without a model has no clean predictions to stratify by
        model = load_model(run_dir.path, model=cfg.model)
        headline, confident, probability = confidence.write(run_dir, attack, data, ex, model,
                                                             entry_report.load(run_dir), captions)
    checked = checks_report.write(run_dir, attack, data, captions, cfg.model, edits)
    successes = {d: next(r["successes"] for r in summary if r["direction"] == d and r["kind"] == "best")
                 for d in DIRECTIONS}
    problems = trust.gates(run_dir, successes, cfg.analyze.min_targets)
    for problem in problems:
        log.warning("analyze: this run means little: %s", problem)
    trusted = report.Trust(identity, problems, headline, cfg.analyze.min_targets, probability)
    rundir.write_text(run_dir.report, report.render(run_dir.path, data, attack, summary, tables, captions, changes,
                                                        edits, [*fewest, *confident, *checked, *entry], trusted))
    log.info("analyze: report %s (%d figures)", run_dir.report, len(captions))
