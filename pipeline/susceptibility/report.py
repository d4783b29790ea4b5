"""``report.md``: one page that ties a run together (data, model, attack, susceptibility, figures).

Every model figure says where it was measured: held-out CV folds or the held-out test set, never the
training data.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from pipeline.attack import wiring
from pipeline.infra import layout
from pipeline.infra.rundir import RunDir
from pipeline.model.archs import ARCHS, TRAINING
from pipeline.model.cv import curve_warnings
from pipeline.susceptibility import examples_text, trust
from pipeline.susceptibility.scores import DIRECTIONS, label
from pipeline.susceptibility.shares import pct
from pipeline.susceptibility.space_text import TEXT

METRICS = ("auroc", "auprc", "f1", "precision", "recall", "accuracy")
SPARSE_CELLS = 10  # an example that changes at most this many cells reads as a few data-entry errors


EDIT_COUNTS = (1, 2, 3, 10)  # the report gives the share of targets flipped by at most this many edited values
FEWEST_COUNTS = (1, 2, 3)  # the columns of the table of the fewest edits and errors


def summary(sus: xr.Dataset, ex: xr.Dataset, realizable: dict[str, np.ndarray] | None = None,
            imputed: dict[tuple[str, str], float] | None = None) -> list[dict]:
    """Per direction and kind: targets, successes, success rate, median L0/L1/L∞ and iteration, and the
    share of targets whose example changes at most SPARSE_CELLS cells. With `realizable` (per kind, per
    target: re-derived to a flip) the count and share of such examples; for a record-space run the
    median number of edited values and the share of targets flipped by ≤ 1, 3, 10 edits; with
    `imputed` (tensor space, per direction and kind) the share of changed cells never recorded."""
    rows = []
    for d in DIRECTIONS:
        members = ex.direction == d
        for k in ex.kind.values:
            ok = (ex.found.sel(kind=k) & members).values
            row = {"direction": d, "kind": str(k), "targets": int(members.sum()), "successes": int(ok.sum()),
                   "success_rate": float(sus.success_rate.sel(direction=d, kind=k))}
            for name in ("l0", "l1", "linf", "iteration", "edits", "edit_l1"):
                if name in ex:
                    values = ex[name].sel(kind=k).values[ok]
                    values = values[~np.isnan(values)]  # iteration: NaN for another search's examples
                    row[f"median_{name}"] = float(np.median(values)) if values.size else float("nan")
            sparse = int((ex.l0.sel(kind=k).values[ok] <= SPARSE_CELLS).sum())
            row[f"share_l0_le_{SPARSE_CELLS}"] = sparse / row["targets"] if row["targets"] else float("nan")
            if "edits" in ex:
                for at_most in EDIT_COUNTS:
                    flipped = int((ex.edits.sel(kind=k).values[ok] <= at_most).sum())
                    row[f"share_edits_le_{at_most}"] = flipped / row["targets"] if row["targets"] else float("nan")
            if "method" in ex:
                found_by = ex.method.sel(kind=k).values[ok]
                row["found_by"] = {m: int((found_by == m).sum()) for m in np.unique(found_by)}
            if realizable:
                row["realizable"] = int((realizable[str(k)] & ok).sum())
                row["realizable_share"] = row["realizable"] / row["successes"] if row["successes"] else float("nan")
            if imputed is not None:
                row["imputed_share"] = imputed[(d, str(k))]
            rows.append(row)
    return rows


def _fmt(value: float) -> str:
    return "–" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.4g}"


def model_lines(model: dict) -> list[str]:
    """What the model is: the architecture and the keys that shape it, or the external model's file."""
    if "external" in model:
        ext = model["external"]
        return [f"External model ({ext['form']}: {ext.get('factory', ext['source'])}, sha256 "
                f"{ext['sha256'][:12]}…), trained elsewhere: not tuned or cross-validated here, evaluated once "
                "on this run's test set."]
    params = model.get("params", {})
    arch = params.get("arch", "lstm")
    used = {k: params[k] for k in (*ARCHS[arch].keys, *TRAINING) if k in params}
    if params.get("robust", "none") != "none":  # the budget it was trained against (docs/methods.md §2.3)
        used |= {k: params[k] for k in ("robust_share", "robust_edits") if k in params}
    epochs = model.get("epochs", "?")
    return [f"{trust.model_name(model)}: " + _params(used),
            f"(parameters from {model.get('params_source', '?')}; {epochs} epoch{'' if epochs == 1 else 's'} from "
            f"{model.get('epochs_source', '?')})."]


def cross_validated(model: dict) -> bool:
    """Whether the run's cv/ can describe its model (model.json's record): a model trained elsewhere never
    is, whatever an earlier model of the run left there."""
    return "external" not in model


def _params(values: dict) -> str:
    return ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in values.items())


def table(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---:" if pd.api.types.is_numeric_dtype(frame[c]) else "---" for c in frame.columns) + "|"
    body = ["| " + " | ".join(_fmt(v) if isinstance(v, float) else str(v) for v in row) + " |"
            for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"


def data_section(data: xr.Dataset) -> list[str]:
    counts = data.attrs.get("counts", {})
    n, positive = data.sizes["sample"], int(data.y.sum())
    config = data.attrs.get("cohort_config", {})
    labels = config.get("labels") if isinstance(config, dict) else None
    what = (f"rows of the label file `{labels}`), {positive} labelled true" if labels
            else f"ICU stays), {positive} died in hospital")
    lines = ["## Data", "",
             f"- source: `{data.attrs.get('mimic_dir', '?')}`",
             f"- {n} samples ({what} ({100 * positive / max(n, 1):.1f}%); "
             f"{100 * float(data['mask'].mean()):.1f}% of the {data.sizes['time']} × {data.sizes['feature']} cells "
             "hold a measurement",
             "- cohort, rule by rule: " + ", ".join(f"{k} {v}" for k, v in counts.items())]
    if isinstance(data.attrs.get("label_from"), dict):  # absent from stores prepared before it was counted
        lines.append("- in-hospital death label from: " + ", ".join(
            f"{k.replace('_', ' ')} {v}" for k, v in data.attrs["label_from"].items()))
    if data.attrs.get("source") == "meds":
        lines.append(f"- lab time: {trust.lab_time_text(data.attrs)}")
    if "duplicates_dropped" in data.attrs:  # absent from stores written before it was counted
        lines.append("- exact duplicate rows dropped: "
                     + ", ".join(f"{k} {v}" for k, v in data.attrs["duplicates_dropped"].items()))
    return [*lines, ""]


def model_section(run_dir: Path) -> list[str]:
    run = RunDir(run_dir)
    model = run.model_record()["model"] if run.model_dir.exists() else {}
    cv = run.cv_summary() if cross_validated(model) else None  # an old cv/ is of another model
    test = run.test_metrics()
    chosen = (cv or {}).get("chosen_epoch")  # absent from a cv/ written before the chosen epoch was summarized
    shown = chosen or cv
    lines = ["## Model", "", *model_lines(model), ""]
    header = ("| metric | CV, held-out folds (mean ± sd) | test set, final model |")
    rows = [header, "|---|---:|---:|"]
    for m in METRICS:
        cv_text = f"{shown['mean'][m]:.3f} ± {shown['sd'][m]:.3f}" if shown else "–"
        rows.append(f"| {m} | {cv_text} | {_fmt(test[m]) if test else '–'} |")
    if chosen:
        last = cv.get("learning_curve", {}).get("last_epoch", "?")
        epoch = (f"CV figures at epoch {chosen['epoch']} of {last}: the epoch count the final model was trained "
                 f"for ({cv.get('best_epoch_rule', 'lowest mean held-out loss')}); at the last epoch the held-out "
                 f"AUROC was {cv['mean']['auroc']:.3f} ± {cv['sd']['auroc']:.3f}. ")
    else:
        epoch = "CV figures of the last epoch (this cv/ predates the chosen epoch's; `cv --force` adds them). " \
            if cv else ""
    cv_note = (f"CV: {cv['folds']} folds of the non-test samples, each scored on the fold it was not trained on. "
               + epoch if cv else "CV: none. ")
    lines += rows + ["",
                     f"{cv_note}Test set ({test_set(run_dir)}): never seen by tuning or CV, scored "
                     "once. Threshold 0.5 for F1, precision, recall and accuracy.", ""]
    lines += [f"- **Warning**: {w}." for w in (curve_warnings(cv) if cv else [])]
    return lines + ([""] if cv and curve_warnings(cv) else [])


def test_set(run_dir: Path) -> str:
    """Where the test set came from, in words (split.json's `test_from`)."""
    path = RunDir(run_dir) / layout.SPLIT
    if not path.exists():
        return "not made"
    split = json.loads(path.read_text())
    if split.get("test_from") == "meds":
        return f"the MEDS dataset's own split: its {len(split['test'])} held_out samples"
    return (f"{len(split['test'])} samples, {split['test_fraction']:.0%} stratified by the project's split, "
            f"seed {split['seed']}")


def attack_section(attack: xr.Dataset, rows: list[dict], changes: pd.DataFrame,
                   edits: pd.DataFrame | None = None, probability: dict[int, float] | None = None) -> list[str]:
    cfg = attack.attrs.get("attack_config", {})
    text = TEXT[wiring.name_of(attack)]
    hours, features = attack.sizes["time"], attack.sizes["feature"]
    record_lines = realizability_lines(rows, text.realizable)
    rows = pd.DataFrame(rows)
    rows = rows.drop(columns=[c for c in rows.columns if c.startswith(("realizable", "imputed", "share_edits",
                                                                       "found_by"))])
    rows["direction"] = rows["direction"].map(label)  # 0to1 → 0→1: the report is read, not typed
    for share in ("success_rate", f"share_l0_le_{SPARSE_CELLS}"):
        rows[share] = [pct(v, n) for v, n in zip(rows[share], rows["targets"], strict=True)]
    rows = rows.rename(columns={"median_edits": "median edited values", "median_edit_l1": "median L1 of the edit",
                                "median_l0": "median L0 (cells)", "median_l1": "median L1",
                                "median_linf": "median L∞", "median_iteration": "median iteration",
                                "success_rate": "success rate",
                                f"share_l0_le_{SPARSE_CELLS}": f"share of targets, ≤ {SPARSE_CELLS} cells"})
    return ["## Attack", "",
            f"{attack.sizes['sample']} targets: the correctly classified samples of the "
            f"{attack.attrs.get('targets', '?')} set. Parameters ({attack.attrs.get('params_source', '?')}): "
            + _params(cfg) + f"; seed {attack.attrs.get('seed')}.", "",
            "A direction is the prediction before → after (`0to1`, `1to0` in susceptibility.zarr and "
            "`tables/`). " + text.kinds + f" L0 counts the changed cells of the {hours} × {features} = "
            f"{hours * features}; L1 and L∞ "
            "in scaled units (1 = the feature's p5…p95 range). The last column is the share of all targets in "
            f"the direction whose example changes at most {SPARSE_CELLS} cells.", "",
            text.paragraph.format(hours=hours, features=features), "",
            table(rows), *record_lines,
            *(examples_text.telling_edits(edits, probability) if edits is not None
              else examples_text.sparsest_examples(changes))]


def realizability_lines(rows: list[dict], realizable: str) -> list[str]:
    """The edit counts, the realizability check and (tensor space) the share of imputed cells changed."""
    lines = []
    for row in rows:
        if row["kind"] != "best":
            continue
        d = label(row["direction"])
        if row["targets"] == 0:
            lines.append(f"- {d}: no targets in this direction.")
            continue
        parts = []
        if "share_edits_le_1" in row:
            parts.append(f"median {_fmt(row.get('median_edits'))} edited values; of the {row['targets']} targets, "
                         + ", ".join(f"{pct(row[f'share_edits_le_{n}'], row['targets'])} flipped by ≤ {n}"
                                     for n in EDIT_COUNTS))
        if "found_by" in row and row["found_by"]:
            parts.append("found by " + ", ".join(f"{METHOD_NAMES.get(m, m)} {n}" for m, n in row["found_by"].items()))
        if "realizable" in row:
            parts.append(f"{row['realizable']} of {row['successes']} examples {realizable}")
        if "imputed_share" in row:
            parts.append(f"{pct(row['imputed_share'])} of the changed cells were never recorded (imputed)")
        if parts:
            lines.append(f"- {d}, best examples: " + "; ".join(parts) + ".")
    return [*lines, ""] if lines else []


METHOD_NAMES = {"l1": "the L1 attack", "scan": "the one-edit scan", "search": "the fewest-edit search",
                "pruned": "pruning the L1 example"}
FEWEST_ROWS = {  # the rows of the fewest-edits table, what each measures
    "best": ("fewest edited values, any value",
             "the sparsest example any search found: ≤ 1 is exact (every recorded value alone, over its whole "
             "plausible range), ≤ 2 and ≤ 3 are what the fewest-edit search and the pruned L1 examples reach"),
    "errors": ("fewest plausible entry errors",
               "only mistakes that happen at data entry — a slipped decimal point, transposed digits, a unit "
               "mix-up, a lost value (the `errors` stage, docs/methods.md §9)"),
    "l1_best": ("the L1 attack's own examples",
                "the sparsest iterate of the L1 attack, which minimizes how much the record changes, not in how "
                "many values"),
}


def fewest_section(rows: list[dict], k_errors: pd.DataFrame | None, sus: xr.Dataset,
                   tables: dict[str, dict]) -> list[str]:
    """How few edits flip a prediction: per direction the k-edit shares (best), the k-error shares (the
    errors stage, when it ran) and the L1 attack's own (l1_best), then what one value alone can do."""
    head = "| direction | targets | flipped by | " + " | ".join(f"≤ {k}" for k in FEWEST_COUNTS) + " |"
    lines = ["## How few edits flip a prediction", "",
             "Share of the targets of each direction flipped by at most k changed recorded values:", "",
             head, "|---|---:|---|" + "---:|" * len(FEWEST_COUNTS)]
    for d in DIRECTIONS:
        by_kind = {r["kind"]: r for r in rows if r["direction"] == d}
        if k_errors is not None and (k_errors.direction == d).any():
            e = k_errors[k_errors.direction == d].iloc[0]
            by_kind["errors"] = {"targets": int(e.targets), **{f"share_edits_le_{k}": float(e[f"share_le_{k}"])
                                                               for k in FEWEST_COUNTS if f"share_le_{k}" in e}}
        for kind, (name, _) in FEWEST_ROWS.items():
            if kind in by_kind:
                r = by_kind[kind]
                shares = " | ".join(pct(r.get(f"share_edits_le_{k}", float("nan")), r["targets"])
                                    for k in FEWEST_COUNTS)
                lines.append(f"| {label(d)} | {r['targets']} | {name} | {shares} |")
    lines += ["", *[f"- *{name}*: {what}." for kind, (name, what) in FEWEST_ROWS.items()
                    if kind != "errors" or k_errors is not None], ""]
    if "one_edit_share" in sus:
        lines += ["**One value alone.** The one-edit scan tries every recorded value of every target alone, over "
                  "its whole plausible range. Per hour and feature, the share of targets whose prediction that "
                  "one value can flip is `one_edit_share` in susceptibility.zarr (figure "
                  "`figures/one_edit_heatmap.png`), the median smallest flipping edit `one_edit_median`; per "
                  "feature (`tables/one_edit_<direction>.csv`):", ""]
        for d in DIRECTIONS:
            flippable, n = float(sus.one_edit_flippable.sel(direction=d)), int(sus.one_edit_targets.sel(direction=d))
            table_ = tables[d].get("one_edit")
            lines += [f"{label(d)}: {pct(flippable, n)} of {n} targets can "
                      "be flipped by one edited value.", ""]
            if table_ is not None and (table_.flipped_by_one_edit > 0).any():
                shown = table_[table_.flipped_by_one_edit > 0].head(8)
                lines += [table(shown.drop(columns=["targets"]).rename(columns={
                    "flipped_by_one_edit": "targets one edit flips", "median_smallest_edit": "median smallest edit",
                    "busiest_hour": "hour flipped most"})), ""]
    return lines


def susceptibility_section(tables: dict[str, dict], published: bool = True, min_targets: int = 0) -> list[str]:
    compared = ("Sun et al.'s figures are as transcribed by a later reproduction, which could not reproduce them."
                if published else "Sun et al.'s published ranking (real MIMIC-III) is not set beside these: this "
                "run's data are not MIMIC-III of a size that could compare (the data line above).")
    lines = ["## Susceptibility", "",
             "S_j = Σ over hours of GMP · GPP over the successful examples (docs/methods.md §6); full tables in "
             "`tables/` and every score per cell in `susceptibility.zarr`. " + compared, ""]
    for d, t in tables.items():
        lines += [f"### Direction {label(d)}", ""]
        if t["successes"] == 0:
            lines += ["No successful example in this direction: no scores.", ""]
            continue
        if t["successes"] < min_targets:
            lines += [f"**Only {t['successes']} successful examples** (fewer than analyze.min_targets = "
                      f"{min_targets}): this direction's ranking is noise.", ""]
        if "edits" in t:
            lines += [f"Edits of the record by the best examples ({label(d)}), most edited feature first "
                      f"(`tables/edits_{d}.csv`):", "",
                      table(t["edits"].rename(columns={"edited_values": "edited values", "median_edit": "median edit",
                                                        "median_abs_edit": "median abs. edit",
                                                        "max_abs_edit": "max abs. edit"})), "",
                      "The same scores over the change of the model's input that these edits cause:", ""]
        lines += [t["ranking"],
                  f"Perturbations of the best examples in clinical units ({label(d)}):", "",
                  table(t["clinical"].drop(columns=["p5_to_p95_range"]).rename(columns={
                      "cells_changed": "cells changed", "examples_touching": "examples",
                      "median_abs_change": "median abs. change", "max_abs_change": "max abs. change"})), ""]
    return lines


def render(run_dir: Path, data: xr.Dataset, attack: xr.Dataset, rows: list[dict], tables: dict[str, dict],
           captions: dict[str, str], changes: pd.DataFrame, edits: pd.DataFrame | None = None,
           entry: list[str] = (), trusted: Trust | None = None) -> str:
    """The report; `rows` are :func:`summary`'s, `tables` per direction the ranking (Markdown), the
    clinical table and the number of successes, `captions` figure file name → caption, `changes` every
    changed cell of the best examples in clinical units, `edits` (record space) every edited recorded value,
    `entry` the sections of the later searches (when they ran), `trusted` what the run describes and whether
    it means anything (its gates, the headline on confidence)."""
    run = RunDir(run_dir)
    model = run.model_record()["model"] if run.model_dir.exists() else {}
    identity = trusted.data if trusted else None
    lines = [f"# Adversarial susceptibility of an in-hospital mortality model: {trust.model_name(model)}", "",
             f"Run directory `{run_dir}`, seed {attack.attrs.get('seed')}, written "
             f"{time.strftime('%Y-%m-%d %H:%M')}.", ""]
    if trusted:
        lines += trust.banner(trusted.problems)
        lines += ["## Summary", "", f"- Data: {identity.text}.",
                  f"- Model: {model_lines(model)[0]}; {trust.test_line(run)}."]
        lines += [f"- {trusted.headline}"] if trusted.headline else []
        lines += [""]
    lines += data_section(data)
    lines += model_section(run_dir)
    lines += attack_section(attack, rows, changes, edits, trusted.probability if trusted else None)
    lines += list(entry)
    lines += susceptibility_section(tables, identity.published_comparable if identity else True,
                                    trusted.min_targets if trusted else 0)
    lines += ["## Figures", ""]
    for name, caption in captions.items():
        lines += [f"**{caption}**", "", f"![{caption}](figures/{name})", ""]
    return "\n".join(lines)


@dataclass(frozen=True)
class Trust:
    """What the report says before its numbers: the data it describes, why the run means little (if it does),
    the one-sentence finding on confidence, and the examples a direction needs for its ranking."""
    data: trust.Data
    problems: list[str]
    headline: str
    min_targets: int
    probability: dict[int, float] | None = None  # per target (attack.zarr's sample): the clean prediction
