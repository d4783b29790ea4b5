"""Several runs side by side — architectures, or the same one on other data: is the fragility the model's
or the data's? One table and one figure of, per run: the model, its CV and test AUROC/AUPRC, the attack's
success, the median edited values of the sparsest examples and the share flipped by ≤ 1, 2, 3 edits, the
share flipped by ≤ 1, 2, 3 plausible entry errors, the share flipped by ≤ 1, 2, 3 edits that no range or delta
check flags, and the most susceptible features. With two runs or more, a second table and figure
(FIGURE_bands.png) of the targets every run shares, by each model's confidence band (robust training,
docs/methods.md §2.3).

    python analysis/compare_models.py RUN [RUN ...] [--out FIGURE.png] [--table TABLE]

Reads what the stages wrote in each run directory (model/, cv/summary.json, tables/ of `analyze`);
needs only pandas and matplotlib. A run without some of them shows "–" there.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

K = (1, 2, 3)


def read_json(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


def model_name(run: Path) -> str:
    meta = read_json(run / "model" / "model.json")
    if meta is None:
        sys.exit(f"error: {run / 'model' / 'model.json'} not found (run the pipeline's `train` stage first)")
    if "external" in meta:
        return f"external ({Path(meta['external'].get('factory') or meta['external']['source']).name})"
    params = meta["params"]
    robust = params.get("robust", "none")  # a robust training mode is part of the model's name
    return params.get("arch", "lstm") + ("" if robust == "none" else f" ({robust} training)")


def pooled(frame: pd.DataFrame, share: str, weight: str = "targets") -> float:
    """A share over both directions: each direction's share weighted by its targets."""
    total = frame[weight].sum()
    return float((frame[share] * frame[weight]).sum() / total) if total else float("nan")


def row(run: Path, top: int) -> dict:
    """One run's line of the table."""
    cv, test = read_json(run / "cv" / "summary.json"), read_json(run / "model" / "test_metrics.json")
    summary = read_json(run / "tables" / "summary.json")
    chosen = (cv or {}).get("chosen_epoch", cv)  # the trained model's epoch (a cv/ of an older run: its last)
    out = {"run": run.name, "model": model_name(run),
           "cv_auroc": chosen["mean"]["auroc"] if chosen else np.nan,
           "cv_auroc_sd": chosen["sd"]["auroc"] if chosen else np.nan,
           "test_auroc": test["auroc"] if test else np.nan, "test_auprc": test["auprc"] if test else np.nan}
    if summary:
        best = pd.DataFrame([r for r in summary if r["kind"] == "best"])
        out["targets"] = int(best.targets.sum())
        out["success"] = float(best.successes.sum() / max(1, best.targets.sum()))
        for d in best.itertuples():
            out[f"median_edits_{d.direction}"] = d.median_edits
        for k in K:
            if f"share_edits_le_{k}" in best:
                out[f"edits_le_{k}"] = pooled(best, f"share_edits_le_{k}")
    errors = run / "tables" / "errors_k.csv"
    if errors.exists():
        frame = pd.read_csv(errors)
        for k in K:
            if f"share_le_{k}" in frame:  # not with errors.max_errors < k: "–"
                out[f"errors_le_{k}"] = pooled(frame, f"share_le_{k}")
    checked = run / "tables" / "checks_k.csv"  # the flips no range or delta check catches (methods §11)
    if checked.exists():
        frame = pd.read_csv(checked)
        for k in K:
            if f"undetected_le_{k}" in frame:
                out[f"undetected_le_{k}"] = pooled(frame, f"undetected_le_{k}")
    ranking = run / "tables" / "susceptibility_0to1.csv"
    if ranking.exists():
        out["top_features_0to1"] = ", ".join(pd.read_csv(ranking).sort_values("rank").feature.head(top))
    return out


def markdown(table: pd.DataFrame) -> str:
    cols = {"model": "model", "cv_auroc": "CV AUROC", "test_auroc": "test AUROC", "test_auprc": "test AUPRC",
            "targets": "targets", "success": "attack success", "median_edits_0to1": "median edits 0→1",
            "median_edits_1to0": "median edits 1→0", **{f"edits_le_{k}": f"≤ {k} edits" for k in K},
            **{f"errors_le_{k}": f"≤ {k} errors" for k in K},
            **{f"undetected_le_{k}": f"≤ {k} edits no check flags" for k in K},
            "top_features_0to1": "most susceptible (0→1)"}
    shown = table.reindex(columns=["run", *cols])
    lines = ["| run | " + " | ".join(cols.values()) + " |", "|---|" + "---|" * len(cols)]
    for r, sd in zip(shown.itertuples(index=False), table.cv_auroc_sd, strict=True):  # two runs may share a name
        cells = []
        for name, v in zip(shown.columns, r, strict=True):
            if isinstance(v, float) and np.isnan(v):
                cells.append("–")
            elif name == "cv_auroc":
                cells.append(f"{v:.3f} ± {sd:.3f}")
            elif name.startswith(("edits_le", "errors_le", "undetected_le")) or name == "success":
                cells.append(f"{100 * v:.1f}%")
            elif isinstance(v, float):
                cells.append(f"{v:.3f}" if "au" in name else f"{v:g}")
            else:
                cells.append(str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def figure(table: pd.DataFrame, out: Path) -> plt.Figure:
    """Four panels, one bar group per run: AUROC (CV, test), the share flipped by ≤ k edits, by ≤ k errors, and by
    ≤ k edits no check flags. Every bar carries its value ("–": the run lacks it); returns the (closed) figure."""
    labels = ["\n".join(textwrap.wrap(r.model, 14) + ([] if r.run == r.model else textwrap.wrap(f"({r.run})", 14)))
              for r in table.itertuples()]
    lines = max(label.count("\n") + 1 for label in labels)  # the tick labels' height: the legend goes below
    x = np.arange(len(table))
    panels = [("AUROC (0.5: chance)", [("cv_auroc", "CV (held-out folds)"), ("test_auroc", "test set")]),
              ("share of targets flipped by ≤ k edits", [(f"edits_le_{k}", f"≤ {k}") for k in K]),
              ("share flipped by ≤ k entry errors", [(f"errors_le_{k}", f"≤ {k}") for k in K]),
              ("share flipped by ≤ k edits no check flags", [(f"undetected_le_{k}", f"≤ {k}") for k in K])]
    width = max(3.6, 1.2 + 0.9 * len(table))  # per panel: room for each run's bar group and its label
    fig, axes = plt.subplots(2, 2, figsize=(2 * width, 8.4), squeeze=False, constrained_layout=True)
    for ax, (title, series) in zip(axes.flat, panels, strict=True):
        step = 0.8 / len(series)
        for i, (col, name) in enumerate(series):
            values = table[col].to_numpy(float) if col in table else np.full(len(table), np.nan)
            bars = ax.bar(x + (i - (len(series) - 1) / 2) * step, np.nan_to_num(values), step, label=name)
            ax.bar_label(bars, ["–" if np.isnan(v) else f"{v:.2f}" for v in values], fontsize=7, padding=1)
        if title.startswith("AUROC"):
            ax.axhline(0.5, color="grey", ls=":", lw=1)
        ax.set_xticks(x, labels, fontsize=8)
        ax.set_ylim(0, 1.12)  # from 0, so that no bar vanishes below the axis; room above for the values
        ax.set_yticks(np.linspace(0, 1, 6))
        ax.set_title("\n".join(textwrap.wrap(title, int(width * 7))), fontsize=10)
        ax.legend(fontsize=8, ncol=len(series), loc="upper center", bbox_to_anchor=(0.5, -0.06 - 0.05 * lines),
                  frameon=False)
    fig.savefig(out, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return fig


BANDS = ("0.0–0.1", "0.1–0.2", "0.2–0.3", "0.3–0.5")  # |p − 0.5| of the clean prediction (analyze's confidence)


def common_targets(runs: list[Path]) -> pd.DataFrame | None:
    """The shares flipped by ≤ 1 and ≤ 3 edits on the targets every run has (samples each model classifies
    right), overall and by each model's own confidence band: a model is not more robust for being more
    confident, so two models compare fairly at equal clean margin (docs/methods.md §2.3). None when a run
    has no tables/confidence_targets.csv (analyze before it was written) or no target is common."""
    frames = {}
    for run in runs:
        path = run / "tables" / "confidence_targets.csv"
        if not path.exists():
            return None
        frames[run] = pd.read_csv(path).drop_duplicates("dataset_index").set_index("dataset_index")
    common = sorted(set.intersection(*(set(f.index) for f in frames.values())))
    if not common:
        return None
    rows = []
    for run, frame in frames.items():
        mine = frame.loc[common]
        for band, part in [("all", mine), *((BANDS[b], mine[mine.band == b]) for b in range(len(BANDS)))]:
            edits = part.edits.fillna(np.inf)  # not flipped within the search's budget
            rows.append({"run": run.name, "model": model_name(run), "band": band, "targets": len(part),
                         "le_1": float((edits <= 1).mean()) if len(part) else np.nan,
                         "le_3": float((edits <= 3).mean()) if len(part) else np.nan,
                         "median_smallest_one_edit": float(part.smallest_one_edit.median())
                         if "smallest_one_edit" in part and part.smallest_one_edit.notna().any() else np.nan})
    return pd.DataFrame(rows)


def bands_figure(frame: pd.DataFrame, out: Path) -> plt.Figure:
    """The common targets by confidence band, one bar per run in each band: how many targets each model holds
    there, the share flipped by one edit, and the median smallest flipping edit (log scale; "–": none in the
    band, or no one-edit flip) — a model can be more robust at equal confidence and still flip more targets
    overall by being less confident."""
    parts = frame[frame.band != "all"]
    runs = list(dict.fromkeys(parts.run))
    x, step = np.arange(len(BANDS)), 0.8 / len(runs)
    panels = [("targets", "common targets in the band", "linear"),
              ("le_1", "share flipped by one edit", "linear"),
              ("median_smallest_one_edit", "median smallest one edit (scaled units)", "log")]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2), constrained_layout=True)
    for ax, (col, title, scale) in zip(axes, panels, strict=True):
        for i, run in enumerate(runs):
            mine = parts[parts.run == run].set_index("band").reindex(BANDS)
            values = mine[col].to_numpy(float)
            bars = ax.bar(x + (i - (len(runs) - 1) / 2) * step, np.nan_to_num(values, nan=0.0), step,
                          label=f"{mine.model.dropna().iloc[0]} ({run})" if mine.model.notna().any() else run)
            shown = "{:.0f}" if col == "targets" else "{:.2f}" if col == "le_1" else "{:.2g}"
            ax.bar_label(bars, ["" if np.isnan(v) else shown.format(v) for v in values], fontsize=7, padding=1)
            for bar in (b for b, v in zip(bars, values, strict=True) if np.isnan(v)):  # at the axis: log has no 0
                ax.annotate("–", (bar.get_x() + bar.get_width() / 2, 0), xycoords=("data", "axes fraction"),
                            ha="center", va="bottom", fontsize=7)
        ax.set_yscale(scale)
        ax.set_ylim(top=ax.get_ylim()[1] * (3 if scale == "log" else 1.1))  # room for the values
        ax.set_xticks(x, BANDS, fontsize=8)
        ax.set_xlabel("confidence |p − 0.5| of the clean prediction", fontsize=8)
        ax.set_title(title, fontsize=10)
    fig.legend(*axes[0].get_legend_handles_labels(), fontsize=8, loc="outside lower center", ncol=len(runs),
               frameon=False)
    fig.savefig(out, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return fig


def common_markdown(frame: pd.DataFrame) -> str:
    lines = [f"On the {int(frame.targets[frame.band == 'all'].iloc[0])} targets common to every run, by each "
             "model's confidence |p − 0.5|:", "",
             "| run | model | band | targets | ≤ 1 edit | ≤ 3 edits | median smallest one edit |",
             "|---|---|---|---:|---:|---:|---:|"]
    for r in frame.itertuples(index=False):
        shares = ["–" if np.isnan(v) else f"{100 * v:.1f}%" for v in (r.le_1, r.le_3)]
        size = "–" if np.isnan(r.median_smallest_one_edit) else f"{r.median_smallest_one_edit:.3f}"
        lines.append(f"| {r.run} | {r.model} | {r.band} | {r.targets} | {shares[0]} | {shares[1]} | {size} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", type=Path, nargs="+")
    ap.add_argument("--top", type=int, default=3, help="most susceptible features listed per run")
    ap.add_argument("--out", type=Path, default=Path("compare_models.png"))
    ap.add_argument("--table", type=Path, default=None, help="also write the table (Markdown) here")
    args = ap.parse_args(argv)
    table = pd.DataFrame([row(run, args.top) for run in args.runs])
    text = markdown(table)
    common = common_targets(args.runs) if len(args.runs) > 1 else None
    if common is not None:
        text += "\n" + common_markdown(common)
    print(text)
    if args.table:
        args.table.write_text(text)
    figure(table, args.out)
    print(f"figure: {args.out}")
    if common is not None:
        bands = args.out.with_name(f"{args.out.stem}_bands{args.out.suffix}")
        bands_figure(common, bands)
        print(f"figure: {bands}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
