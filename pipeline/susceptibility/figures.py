"""The analysis's figures: susceptibility heatmaps and rankings, the examples' norms and iterations, the
cross-validation curves (PNG, saved by pipeline/figures.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from pipeline.figures import plt, save, suptitle  # pyplot on the Agg backend, chosen there before pyplot loads
from pipeline.metrics import auprc, auroc, pr_curve, roc_curve
from pipeline.susceptibility.scores import label as direction_label


def score_heatmaps(score: xr.DataArray, n: xr.DataArray, path: Path, title: str, colorbar: str,
                   count: str = "examples", vmax: float | None = None, per_panel: bool = False) -> plt.Figure:
    """One panel per (direction, kind): the score over hour (x) and feature (y); `n` (direction, kind) is the
    number of successful examples (or of `count`) behind each panel. One colour scale shared by all panels
    (from 0 to `vmax`, default the largest score), or with `per_panel` one per panel, each with its own
    colourbar: kinds whose scores differ tenfold (first vs best examples) are then each readable.
    Returns the (closed) figure."""
    directions, kinds = score["direction"].values, score["kind"].values
    if vmax is None and not per_panel:
        vmax = _top(score.values)
    # shared axes: the features are named on the left, the hours at the bottom (half the text to lay out)
    fig, axes = plt.subplots(len(directions), len(kinds),
                             figsize=((6.2 + 0.9 * per_panel) * len(kinds), 4.6 * len(directions)),
                             squeeze=False, sharex=True, sharey=True, constrained_layout=True)
    for r, d in enumerate(directions):
        for c, k in enumerate(kinds):
            ax = axes[r, c]
            panel = score.sel(direction=d, kind=k).transpose("feature", "time")
            image = ax.imshow(panel.values, aspect="auto", cmap="viridis", vmin=0,
                              vmax=_top(panel.values) if per_panel else vmax, interpolation="nearest",
                              origin="upper")
            ax.set_yticks(range(panel.sizes["feature"]), [str(f) for f in panel["feature"].values], fontsize=8)
            ax.set_xticks(range(0, panel.sizes["time"], 6))
            number = int(n.sel(direction=d, kind=k))
            what = f"{k} examples (N = {number})" if count == "examples" else f"{k} ({count}: {number})"
            ax.set(xlabel="hour after ICU admission", title=f"{direction_label(d)}, {what}")
            ax.label_outer()
            if number == 0:
                empty = "no successful example" if count == "examples" else f"no {count[:-1]}"
                ax.text(0.5, 0.5, empty, transform=ax.transAxes, ha="center", va="center")
            if per_panel:  # the unit is named once, beside the last column
                fig.colorbar(image, ax=ax, label=colorbar if c == len(kinds) - 1 else None, shrink=0.9, pad=0.02)
    if not per_panel:
        fig.colorbar(image, ax=axes, label=colorbar, shrink=0.8)
    suptitle(fig, f"{title} (each panel its own colour scale)" if per_panel and score.size > panel.size else title)
    save(fig, path)
    return fig


def _top(values: np.ndarray) -> float:
    """The top of a colour scale from 0: the largest finite value, or 1 where there is none above 0."""
    finite = values[np.isfinite(values)]
    return float(finite.max()) if finite.size and finite.max() > 0 else 1.0


def ranking_bars(s_j: xr.DataArray, n: xr.DataArray, path: Path, xlabel: str) -> None:
    """Per direction: the per-feature score of each kind of example, features by the best examples' score."""
    directions = s_j["direction"].values
    fig, axes = plt.subplots(1, len(directions), figsize=(6 * len(directions), 6), squeeze=False,
                             constrained_layout=True)
    for ax, d in zip(axes[0], directions, strict=True):
        table = s_j.sel(direction=d).to_pandas().T.fillna(0.0)  # feature × kind
        table = table.sort_values("best" if "best" in table.columns else table.columns[-1])
        rows, height = np.arange(len(table)), 0.8 / len(table.columns)
        for i, kind in enumerate(table.columns):
            ax.barh(rows + (i - (len(table.columns) - 1) / 2) * height, table[kind], height=height,
                    label=f"{kind} (N = {int(n.sel(direction=d, kind=kind))})")
        ax.set_yticks(rows, table.index)
        ax.set(xlabel=xlabel, title=f"direction {direction_label(d)}")
        if int(n.sel(direction=d).max()) == 0:
            ax.text(0.5, 0.5, "no successful example", transform=ax.transAxes, ha="center", va="center")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=len(table.columns), title="examples")
        ax.grid(axis="x", alpha=0.3)
    save(fig, path)


def norm_histograms(norms: xr.Dataset, found: xr.DataArray, path: Path, shape: tuple[int, int],
                    sparse_cells: int = 10) -> None:
    """L0, L1 and L∞ of the successful examples, first vs best, of inputs of `shape` (hours, features); the
    L0 panel marks `sparse_cells`."""
    hours, features = shape
    labels = {"l0": f"L0: cells changed (of {hours} × {features} = {hours * features})",
              "l1": "L1: Σ |P| (scaled units)", "linf": "L∞: max |P| (scaled units)"}
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8), constrained_layout=True)
    for ax, (name, label) in zip(axes, labels.items(), strict=True):
        values = {str(k): norms[name].sel(kind=k).values[found.sel(kind=k).values] for k in norms["kind"].values}
        every = np.concatenate(list(values.values()))
        bins = np.histogram_bin_edges(every, bins=30) if every.size else 10
        for kind, v in values.items():
            ax.hist(v, bins=bins, alpha=0.55, label=f"{kind} (median {np.median(v):.3g})" if v.size else kind)
        if name == "l0" and values.get("best") is not None and values["best"].size:
            share = np.mean(values["best"] <= sparse_cells)
            ax.axvline(sparse_cells, color="black", ls=":", lw=1,
                       label=f"≤ {sparse_cells} cells: {100 * share:.0f}% of best examples")
        ax.set(xlabel=label, ylabel="examples")
        ax.legend()
    suptitle(fig, "size of the successful perturbations, both directions, per kind of example")
    save(fig, path)


def iteration_cdf(iteration: xr.DataArray, found: xr.DataArray, direction: xr.DataArray, max_iter: int,
                  path: Path, late: float = 0.1) -> plt.Figure:
    """Share of targets with an example by iteration k, per direction and kind (ends at the success rate),
    up to the budget `max_iter`, marked; each legend entry gives the share of its examples found in the last
    `late` of the budget (a large share: the budget binds, more iterations would change the examples).
    Returns the (closed) figure."""
    fig, ax = plt.subplots(figsize=(8, 4.6), constrained_layout=True)
    steps = np.arange(max_iter + 1)
    start = int(np.ceil((1 - late) * max_iter))
    kinds = [str(k) for k in iteration["kind"].values]
    for colour, d in enumerate(np.unique(direction.values)):
        for k in kinds:
            members = (direction == d).values
            it = iteration.sel(kind=k).values[members]
            ok = found.sel(kind=k).values[members]
            share = np.searchsorted(np.sort(it[ok]), steps, side="right") / max(members.sum(), 1)
            last = f"{100 * np.mean(it[ok] >= start):.0f}%" if ok.any() else "–"
            ax.step(steps, share, where="post", color=f"C{colour}", linestyle="-" if k == kinds[0] else "--",
                    label=f"{direction_label(d)}, {k} (n = {members.sum()}): {last} found at iteration ≥ {start}")
    ax.axvspan(start, max_iter, color="grey", alpha=0.15, lw=0, label=f"last {100 * late:.0f}% of the budget")
    ax.axvline(max_iter, color="black", ls=":", lw=1, label=f"max_iter = {max_iter} (the budget)")
    ax.set(xlabel="iteration (proximal updates)", ylabel="share of targets with an example", ylim=(0, 1.02),
           xlim=(0, max_iter * 1.03))
    ax.set_title(f"when the L1 attack found its {' and '.join(kinds)} examples", fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    save(fig, path)
    return fig


def cv_curves(folds: list[pd.DataFrame], test: pd.DataFrame | None, path: Path) -> None:
    """ROC and precision–recall curves of each held-out CV fold (and of the test set), columns y, prob."""
    fig, (ax_roc, ax_pr) = plt.subplots(1, 2, figsize=(11, 4.6), constrained_layout=True)
    curves = [(f"fold {k}", f, dict(alpha=0.6, lw=1)) for k, f in enumerate(folds)]
    if test is not None:
        curves.append(("test set (final model)", test, dict(color="black", lw=2)))
    for name, frame, style in curves:
        fpr, tpr = roc_curve(frame.prob, frame.y)
        recall, precision = pr_curve(frame.prob, frame.y)
        ax_roc.plot(fpr, tpr, label=f"{name}: AUROC {auroc(frame.prob, frame.y):.3f}", **style)
        ax_pr.step(np.r_[0.0, recall], np.r_[precision[:1], precision], where="pre",
                   label=f"{name}: AUPRC {auprc(frame.prob, frame.y):.3f}", **style)
    ax_roc.plot([0, 1], [0, 1], color="grey", ls=":", lw=1)
    ax_roc.set(xlabel="false positive rate (1 − specificity)", ylabel="true positive rate (sensitivity)",
               title="ROC, held-out data only")
    prevalence = float(np.mean(np.concatenate([f.y.to_numpy() for f in folds]))) if folds else 0.0
    ax_pr.axhline(prevalence, color="grey", ls=":", lw=1, label=f"prevalence {prevalence:.2f}")
    ax_pr.set(xlabel="recall (sensitivity)", ylabel="precision (PPV)", ylim=(0, 1.02),
              title="precision–recall, held-out data only")
    for ax in (ax_roc, ax_pr):
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    save(fig, path)
