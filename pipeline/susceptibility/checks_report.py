"""Would the hospital's checks catch it? (docs/methods.md §11) For `analyze`: which of the attack's examples
and which entry-error flips the range and delta checks flag, per direction the share of targets flipped by
≤ k edits / errors that no check flags, the sparsest undetected examples the record space searched (checked
again here: each re-derives to a flip and passes the checks), the checks' false-alarm rates on the clean
targets, and the undetectable one-edit map.

The limits are the ones attack.zarr keeps (the ones its searches used), read back and checked.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import torch
import xarray as xr

from pipeline.attack import wiring
from pipeline.attack.core import margin
from pipeline.checks import table
from pipeline.checks.limits import Limits, caught, false_alarm_rate, flags
from pipeline.config import ModelParams
from pipeline.data.entry_errors import mean_after
from pipeline.data.record import derive, feature_stats, width
from pipeline.errors import InputError
from pipeline.features import BY_NAME
from pipeline.infra import layout, rundir
from pipeline.infra.rundir import RunDir
from pipeline.model import load_model
from pipeline.susceptibility import entry_report, examples_text, figures
from pipeline.susceptibility.one_edit_map import one_edit_scores
from pipeline.susceptibility.realizable import record_edits
from pipeline.susceptibility.scores import DIRECTIONS, direction_of, label
from pipeline.susceptibility.shares import pct

log = logging.getLogger(__name__)

CHECKS = ("range", "delta", "any")
UNDETECTED = "undetected_edit"


def limits_of(attack: xr.Dataset, where: str) -> Limits | None:
    """The limits attack.zarr keeps (None: a store without them — tensor space, or made before the checks)."""
    try:
        return table.from_store(attack, where)
    except ValueError as e:  # ConfigError: a damaged store is an input error of this stage
        raise InputError(str(e)) from None


def clean(attack: xr.Dataset, data: xr.Dataset) -> np.ndarray:
    """The targets' clean records (sample, time, feature; NaN: none)."""
    return data["value"].values[attack.dataset_index.values]


def undetected_values(attack: xr.Dataset, data: xr.Dataset, rows: np.ndarray) -> np.ndarray:
    """The records of targets `rows` with their undetected example written in, v + δ·(p95 − p5)."""
    value = clean(attack, data)[rows]
    delta = attack[UNDETECTED].values[rows].astype(np.float64)
    return np.where(delta != 0, value + delta * width(feature_stats(data)), value)


def caught_by(attack: xr.Dataset, data: xr.Dataset, limits: Limits, kind: str) -> dict[str, np.ndarray]:
    """Per target (bool), for the examples of `kind` (a kind of the store, or "undetected"): whether each check
    raises an alarm on it; False where there is no example."""
    n = attack.sizes["sample"]
    found = undetected_found(attack) if kind == "undetected" else attack.found.sel(kind=kind).values
    rows = np.flatnonzero(found)
    out = {c: np.zeros(n, bool) for c in CHECKS}
    if len(rows):
        edited = undetected_values(attack, data, rows) if kind == "undetected" else \
            wiring.of(attack).edited_values(attack, data, kind, rows)
        for c, flagged in caught(clean(attack, data)[rows], edited, limits).items():
            out[c][rows] = flagged
    return out


def undetected_found(attack: xr.Dataset) -> np.ndarray:
    return attack.undetected_method.values >= 0


def edits_of(attack: xr.Dataset, kind: str) -> np.ndarray:
    """Per target, the edited values of its example of `kind` (0: none)."""
    if kind == "undetected":
        return np.where(undetected_found(attack), (attack[UNDETECTED].values != 0).sum(axis=(1, 2)), 0)
    found = attack.found.sel(kind=kind).values
    return np.where(found, (attack["edit"].sel(kind=kind).values != 0).sum(axis=(1, 2)), 0)


def verify(attack: xr.Dataset, data: xr.Dataset, model: torch.nn.Module, limits: Limits, where: str) -> None:
    """Every stored undetected example re-derives to a flip and no check flags it; InputError otherwise (a
    store that is not what `attack` found)."""
    rows = np.flatnonzero(undetected_found(attack))
    if not len(rows):
        return
    edited = undetected_values(attack, data, rows)
    x = derive(edited, data["mask"].values[attack.dataset_index.values[rows]], feature_stats(data))
    with torch.no_grad():
        m = margin(model(torch.from_numpy(x)), torch.from_numpy(attack.y.values[rows].astype(np.int64))).numpy()
    flagged = caught(clean(attack, data)[rows], edited, limits)["any"]
    lost = ~(m > 0)  # NaN too: a lost chunk reads as NaN edits
    if lost.any() or flagged.any():
        raise InputError(f"{where}: {int(lost.sum())} undetected examples do not re-derive to a flip and "
                         f"{int(flagged.sum())} are flagged by its own checks: the store is not what `attack` "
                         "found (damaged, or made with another model); redo it with `python -m pipeline attack "
                         "--force`")


def kind_table(attack: xr.Dataset, data: xr.Dataset, limits: Limits) -> pd.DataFrame:
    """Per direction and kind of example: how many, and the share each check flags (and any)."""
    direction = direction_of(attack.pred).values
    rows = []
    kinds = [str(k) for k in attack.kind.values] + (["undetected"] if UNDETECTED in attack else [])
    for kind in kinds:
        found = undetected_found(attack) if kind == "undetected" else attack.found.sel(kind=kind).values
        flagged = caught_by(attack, data, limits, kind)
        for d in DIRECTIONS:
            mine = found & (direction == d)
            n = int(mine.sum())
            rows.append({"direction": d, "kind": kind, "examples": n,
                         **{f"flagged_{c}": float(flagged[c][mine].mean()) if n else np.nan for c in CHECKS}})
    return pd.DataFrame(rows)


def k_table(attack: xr.Dataset, data: xr.Dataset, limits: Limits, max_k: int) -> pd.DataFrame:
    """Per direction: the targets, and for k = 1 … max_k the share flipped by ≤ k edits (best example), the
    share whose best example has ≤ k edits and no check flags it, and (when the search ran) the share with an
    undetected example of ≤ k edits."""
    direction = direction_of(attack.pred).values
    best = edits_of(attack, "best")
    passes = ~caught_by(attack, data, limits, "best")["any"]
    searched = edits_of(attack, "undetected") if UNDETECTED in attack else None
    rows = []
    for d in DIRECTIONS:
        mine = direction == d
        n = int(mine.sum())
        row = {"direction": d, "targets": n}
        for k in range(1, max_k + 1):
            row[f"any_le_{k}"] = _share((best > 0) & (best <= k), mine)
            row[f"unflagged_best_le_{k}"] = _share((best > 0) & (best <= k) & passes, mine)
            if searched is not None:
                row[f"undetected_le_{k}"] = _share((searched > 0) & (searched <= k), mine)
        rows.append(row)
    return pd.DataFrame(rows)


def _share(hit: np.ndarray, mine: np.ndarray) -> float:
    return float(hit[mine].mean()) if mine.any() else np.nan


def error_records(store: xr.Dataset, data: xr.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """The clean and the erroneous record of every target of errors.zarr (its flipping errors, or the set
    that came closest), as the errors stage made them."""
    column = {str(name): k for k, name in enumerate(data.feature.values)}
    feature = entry_report.names(store, "feature")
    index = store.dataset_index.values
    value, count = data["value"].values[index], data["count"].values[index]
    edited = value.copy()
    for i in range(store.sizes["sample"]):
        for j in range(int(store.n_errors.values[i])):
            h, f = int(store.hour.values[i, j]), column[feature[i, j]]
            after = mean_after(BY_NAME[feature[i, j]], float(value[i, h, f]), float(store.erroneous.values[i, j]),
                               max(int(count[i, h, f]), 1))
            if after is not None:
                edited[i, h, f] = after
    return value, edited


def searched_view(store: xr.Dataset) -> xr.Dataset:
    """errors.zarr's check-aware search (its `undetected_*` variables) under the names of the plain search's."""
    names = [str(v) for v in store.data_vars if str(v).startswith("undetected_")]
    return store.drop_vars([n.removeprefix("undetected_") for n in names]).rename(
        {n: n.removeprefix("undetected_") for n in names})


def errors_k(store: xr.Dataset, data: xr.Dataset, limits: Limits, model: torch.nn.Module,
             where: str) -> pd.DataFrame:
    """Per direction and k: the share of targets flipped by ≤ k entry errors, by ≤ k that no check flags, and
    (when the errors stage searched them) by ≤ k found by the search restricted to errors no check flags —
    each of those verified here: it flips, and no check flags it (InputError otherwise)."""
    value, edited = error_records(store, data)
    passes = ~caught(value, edited, limits)["any"]
    hits = {"any": store.flipped.values, "unflagged": store.flipped.values & passes}
    counts = {"any": store.n_errors.values, "unflagged": store.n_errors.values}
    if "undetected_flipped" in store:
        view = searched_view(store)
        clean_, erroneous = error_records(view, data)
        ok = entry_report.verify(view, data, model) & ~caught(clean_, erroneous, limits)["any"]
        if (view.flipped.values & ~ok).any():
            raise InputError(f"{where}: {int((view.flipped.values & ~ok).sum())} flips of the check-aware search do "
                             "not flip the model or are flagged by the checks when their errors are written into the "
                             "record again: the store is not what `errors` found; redo it with `python -m pipeline "
                             "errors --force`")
        hits["searched"], counts["searched"] = view.flipped.values, view.n_errors.values
    direction = entry_report.direction(store)
    rows = []
    for d in DIRECTIONS:
        mine = direction == d
        row = {"direction": d, "targets": int(mine.sum())}
        for k in range(1, store.sizes["error"] + 1):
            for name, hit in hits.items():
                row[f"{name}_le_{k}"] = _share(hit & (counts[name] <= k), mine)
        rows.append(row)
    return pd.DataFrame(rows)


def false_alarms(attack: xr.Dataset, data: xr.Dataset, limits: Limits) -> dict[str, float]:
    """Each check's per-value false-alarm rate on the clean records of the targets (held-out samples)."""
    value = clean(attack, data)
    return {**false_alarm_rate(value, limits), "values": int((~np.isnan(value)).sum())}


def undetected_map(attack: xr.Dataset, data: xr.Dataset) -> xr.Dataset:
    """The one-edit map of the values that can flip a target alone without any check noticing."""
    return one_edit_scores(attack.assign(one_edit=attack["one_edit_undetected"]), data)


def section(k: pd.DataFrame, kinds: pd.DataFrame, errors: pd.DataFrame | None, alarms: dict[str, float],
            provenance: dict, one_map: xr.Dataset | None, spelled: list[str]) -> list[str]:
    """The report's section "Would the checks catch it?"."""
    max_k = max(int(c.rsplit("_", 1)[1]) for c in k.columns if c.startswith("any_le_"))
    source = ("a limits table (" + str(provenance.get("table")) + ")" if provenance.get("source") == "table" else
              f"the {provenance.get('training_records', '?')} training records of {provenance.get('run', '?')} "
              "(the split's non-test samples): "
              f"range the {provenance.get('range_quantiles')} quantiles of their values, delta the "
              f"{provenance.get('delta_quantiles')} quantiles of the change between consecutive recorded values")
    lines = ["## Would the checks catch it?", "",
             "A laboratory or a charting system screens a value before anyone acts on it: a **range check** and a "
             "**delta check** (its change from the previous and to the next recorded value of the same feature; "
             "docs/methods.md §11). The limits here come from " + source + ". On the clean records of the "
             f"targets they flag {pct(alarms['any'], alarms.get('values'))} of the "
             f"{alarms.get('values', '?')} recorded values (range {pct(alarms['range'], alarms.get('values'))}, "
             f"delta {pct(alarms['delta'], alarms.get('values'))}): the per-value false-alarm rate.", "",
             "Share of the targets of each direction flipped by at most k edited values — by any edit, by the "
             "best example when no check flags it, and by the sparsest example the check-aware searches found "
             "(`undetected_edit` in attack.zarr):", "",
             "| direction | targets | flipped by | " + " | ".join(f"≤ {j}" for j in range(1, max_k + 1)) + " |",
             "|---|---:|---|" + "---:|" * max_k]
    names = {"any": "any edit", "unflagged_best": "best example, unflagged", "undetected": "edits no check flags"}
    for r in k.itertuples():
        for key, name in names.items():
            if f"{key}_le_1" in k.columns:
                shares = " | ".join(pct(getattr(r, f"{key}_le_{j}"), r.targets) for j in range(1, max_k + 1))
                lines.append(f"| {label(r.direction)} | {r.targets} | {name} | {shares} |")
    if errors is not None:
        max_e = max(int(c.rsplit("_", 1)[1]) for c in errors.columns if c.startswith("any_le_"))
        lines += ["", "Entry errors (the errors stage): share flipped by at most k errors, by the same errors when no "
                  "check flags them, and by the fewest errors the search restricted to errors no check flags found:",
                  "",
                  "| direction | targets | flipped by | " + " | ".join(f"≤ {j}" for j in range(1, max_e + 1)) + " |",
                  "|---|---:|---|" + "---:|" * max_e]
        for r in errors.itertuples():
            for key, name in (("any", "any errors"), ("unflagged", "those errors, unflagged"),
                              ("searched", "errors no check flags")):
                if f"{key}_le_1" not in errors.columns:
                    continue
                shares = " | ".join(pct(getattr(r, f"{key}_le_{j}"), r.targets) for j in range(1, max_e + 1))
                lines.append(f"| {label(r.direction)} | {r.targets} | {name} | {shares} |")
    lines += ["", "Share of each kind of example that a check flags (`tables/checks_kind.csv`):", "",
              "| direction | kind | examples | range | delta | any |", "|---|---|---:|---:|---:|---:|"]
    for r in kinds.itertuples():
        lines.append(f"| {label(r.direction)} | {r.kind} | {r.examples} | {pct(r.flagged_range, r.examples)} | "
                     f"{pct(r.flagged_delta, r.examples)} | {pct(r.flagged_any, r.examples)} |")
    if one_map is not None:
        lines += ["", "**One value alone, unnoticed.** " + "; ".join(
            f"{label(d)}: {pct(float(one_map.one_edit_flippable.sel(direction=d)), n)} of {n} targets"
            for d in DIRECTIONS if (n := int(one_map.one_edit_targets.sel(direction=d))) is not None)
            + " can be flipped by one edited value that no check flags (figure "
              "`figures/one_edit_undetected_heatmap.png`, `one_edit_undetected` in attack.zarr)."]
    return [*lines, "", *spelled]


def undetected_edits(attack: xr.Dataset, data: xr.Dataset) -> pd.DataFrame:
    """Every edited value of the undetected examples, one row each (as realizable.record_edits)."""
    view = xr.Dataset({"edit": attack[UNDETECTED].expand_dims(kind=["undetected"], axis=1),
                       "found": (("sample", "kind"), undetected_found(attack)[:, None])},
                      coords={"dataset_index": attack.dataset_index, "pred": attack.pred})
    return record_edits(view, data, "undetected")


def flag_edits(edits: pd.DataFrame, attack: xr.Dataset, data: xr.Dataset, limits: Limits, kind: str) -> pd.DataFrame:
    """`edits` (one row per edited value of the examples of `kind`, as realizable.record_edits) with the checks
    that flag each edited value in its edited record: columns `range_check`, `delta_check` (bool)."""
    out = edits.assign(range_check=False, delta_check=False)
    if edits.empty:
        return out
    rows = np.unique(edits["sample"].to_numpy())
    edited = undetected_values(attack, data, rows) if kind == "undetected" else \
        wiring.of(attack).edited_values(attack, data, kind, rows)
    found = flags(edited, limits)
    at = np.searchsorted(rows, edits["sample"].to_numpy())
    column = {str(name): k for k, name in enumerate(data.feature.values)}
    f = edits["feature"].map(column).to_numpy()
    for check in ("range", "delta"):
        out[f"{check}_check"] = found[check][at, edits["hour"].to_numpy(), f]
    return out


def write(run_dir: RunDir, attack: xr.Dataset, data: xr.Dataset, captions: dict[str, str],
          model_params: ModelParams | None = None, edits: pd.DataFrame | None = None) -> list[str]:
    """The checks' tables, figure and report lines of a record-space run (none for a store without limits);
    `edits` (the best examples' edited values) is written again with the checks that flag each one."""
    where = str(run_dir / layout.ATTACK)
    limits = limits_of(attack, where)
    if limits is None or "value" not in data:
        return []
    provenance = attack.attrs.get("checks", {})
    if edits is not None:
        rundir.write_text(run_dir.table("edits_best.csv"),
                          flag_edits(edits, attack, data, limits, "best").to_csv(index=False))
    searched = bool(provenance.get("search")) and UNDETECTED in attack
    if searched:
        verify(attack, data, load_model(run_dir.path, model=model_params), limits, where)
    else:
        attack = attack.drop_vars([v for v in attack.data_vars if str(v).startswith("undetected")])
    k = k_table(attack, data, limits, int(attack.attrs["attack_config"].get("max_edits", 3)))
    kinds = kind_table(attack, data, limits)
    store = entry_report.load(run_dir)
    errors = None
    if store is not None:
        where_errors = str(run_dir / layout.ERRORS)
        own = limits_of(store, where_errors)  # the limits the errors stage searched with, when it kept them
        errors = errors_k(store, data, own if own is not None else limits, load_model(run_dir.path, model=model_params),
                          where_errors)
    alarms = false_alarms(attack, data, limits)
    for name, frame in (("checks_k", k), ("checks_kind", kinds), ("checks_errors_k", errors)):
        if frame is not None:
            rundir.write_text(run_dir.table(f"{name}.csv"), frame.to_csv(index=False))
    rundir.write_json(run_dir.table("checks_false_alarms.json"), {**alarms, "limits": provenance})
    log.info("analyze: the checks flag %.2f%% of the clean targets' recorded values (range %.2f%%, delta %.2f%%)",
             100 * alarms["any"], 100 * alarms["range"], 100 * alarms["delta"])
    for r in k.itertuples():
        log.info("analyze: %s, flipped by ≤ 1/2/3 edits: %s; no check flags: %s", r.direction,
                 " / ".join(pct(getattr(r, f"any_le_{j}", np.nan)) for j in (1, 2, 3)),
                 " / ".join(pct(getattr(r, f"undetected_le_{j}" if searched else f"unflagged_best_le_{j}", np.nan))
                            for j in (1, 2, 3)))
    one_map, spelled = None, []
    if searched:
        one_map = undetected_map(attack, data)
        name = "one_edit_undetected_heatmap.png"
        captions[name] = "one edit no check flags: share of targets whose prediction the value recorded at each " \
                         "hour can flip alone, unnoticed"
        figures.score_heatmaps(one_map.one_edit_share.expand_dims(kind=["undetected"]),
                               one_map.one_edit_targets.expand_dims(kind=["undetected"]), run_dir.figure(name),
                               "which single recorded value can flip the prediction without any check noticing",
                               "share of targets", count="targets")
        unnoticed = undetected_edits(attack, data)
        rundir.write_text(run_dir.table("edits_undetected.csv"), unnoticed.to_csv(index=False))
        spelled = examples_text.sparsest_undetected(unnoticed)
    return section(k, kinds, errors, alarms, provenance, one_map, spelled)
