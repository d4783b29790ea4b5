"""What the fragility depends on: the model's confidence in the target.

A target the model scores at 0.49 is flipped by almost any edit; one it scores at 0.15 needs a large one.
"22.7% of targets flipped by one edit" is therefore as much a statement about how many targets sit near the
threshold as about the model. This module stratifies every k-edit (and k-error) share by the distance of
the clean predicted probability from 0.5, and draws the share and the smallest flipping edit against it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
import xarray as xr

from pipeline.figures import plt, save, suptitle  # pyplot on the Agg backend, chosen there before pyplot loads
from pipeline.infra import rundir
from pipeline.infra.rundir import RunDir
from pipeline.susceptibility.scores import DIRECTIONS, direction_of, label
from pipeline.susceptibility.shares import count_pct, pct, wilson

BANDS = (0.0, 0.1, 0.2, 0.3, 0.5)  # |p − 0.5|: the bands of the table (the last one closed at 0.5)
COUNTS = (1, 3)  # the k of "flipped by ≤ k"
BATCH = 1024


def clean_probability(attack: xr.Dataset, data: xr.Dataset, model: torch.nn.Module) -> np.ndarray:
    """Per target: the model's predicted probability of death on its clean input."""
    index = attack.dataset_index.values
    out = np.empty(len(index))
    for b in range(0, len(index), BATCH):
        with torch.no_grad():
            logits = model(torch.from_numpy(np.ascontiguousarray(data.x.values[index[b:b + BATCH]])))
        out[b:b + BATCH] = torch.softmax(logits.double(), dim=1)[:, 1].numpy()
    return out


def band_of(prob: np.ndarray) -> np.ndarray:
    """The band index of each target's distance |p − 0.5| (0: nearest the threshold)."""
    return np.clip(np.searchsorted(BANDS, np.abs(prob - 0.5), side="right") - 1, 0, len(BANDS) - 2)


def band_name(b: int) -> str:
    return f"{BANDS[b]:.1f}–{BANDS[b + 1]:.1f}"


def per_target(attack: xr.Dataset, ex: xr.Dataset, prob: np.ndarray, errors: xr.Dataset | None) -> pd.DataFrame:
    """One row per target: direction, clean probability and band, the number of edited values (cells in
    tensor space) of its best example, of its undetected example and of its fewest entry errors (NaN: none
    found), and its smallest single flipping edit (scaled units, NaN: no one value flips it)."""
    found = ex.found.sel(kind="best").values
    unit = "edits" if "edits" in ex else "l0"
    frame = pd.DataFrame({"sample": attack.sample.values, "dataset_index": attack.dataset_index.values,
                          "direction": direction_of(attack.pred).values, "probability": prob,
                          "band": band_of(prob), "edits": np.where(found, ex[unit].sel(kind="best").values, np.nan)})
    if "one_edit" in attack:
        size = np.abs(attack["one_edit"].values).reshape(attack.sizes["sample"], -1)
        frame["smallest_one_edit"] = np.where(np.isfinite(size).any(axis=1), np.nanmin(
            np.where(np.isfinite(size), size, np.inf), axis=1), np.nan)
    if "undetected_edit" in attack:
        undetected = (attack["undetected_edit"].values != 0).sum(axis=(1, 2)).astype(float)
        frame["undetected"] = np.where(undetected > 0, undetected, np.nan)
    if errors is not None:
        at = {int(i): k for k, i in enumerate(errors.dataset_index.values)}
        rows = np.array([at.get(int(i), -1) for i in frame.dataset_index])
        n = np.where(errors.flipped.values, errors.n_errors.values, np.nan)
        frame["errors"] = np.where(rows >= 0, n[np.maximum(rows, 0)], np.nan)
    return frame


MEASURES = {"edits": "edited values", "errors": "entry errors", "undetected": "edits no check flags"}


def table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per direction and band: targets, and per measure and k the count and share flipped by ≤ k, with
    the 95% Wilson interval."""
    rows = []
    for d in DIRECTIONS:
        for b in range(len(BANDS) - 1):
            mine = frame[(frame.direction == d) & (frame.band == b)]
            row = {"direction": d, "band": band_name(b), "targets": len(mine)}
            for measure in (m for m in MEASURES if m in frame):
                for k in COUNTS:
                    hit = int((mine[measure] <= k).sum())
                    lo, hi = wilson(hit, len(mine))
                    row |= {f"{measure}_le_{k}": hit, f"{measure}_le_{k}_share": hit / len(mine) if len(mine) else
                            np.nan, f"{measure}_le_{k}_low": lo, f"{measure}_le_{k}_high": hi}
            if "smallest_one_edit" in frame:
                row["median_smallest_one_edit"] = float(mine.smallest_one_edit.median()) \
                    if mine.smallest_one_edit.notna().any() else np.nan
            rows.append(row)
    return pd.DataFrame(rows)


def headline(frame: pd.DataFrame) -> str:
    """One sentence: the one-edit share overall and nearest / farthest from the threshold, and what that means
    when the bands differ clearly."""
    unit = "one edited value" if "smallest_one_edit" in frame else "an example of one changed cell"
    parts, follows = [], False
    for d in DIRECTIONS:
        mine = frame[frame.direction == d]
        if mine.empty:
            continue
        near, far = mine[mine.band == 0], mine[mine.band >= 2]
        parts.append(f"{label(d)}: {pct(float((mine.edits <= 1).mean()), len(mine))} of {len(mine)} targets "
                     f"overall, {int((near.edits <= 1).sum())} of {len(near)} within 0.1 of the threshold, "
                     f"{int((far.edits <= 1).sum())} of {len(far)} farther than 0.2")
        if len(near) >= 5 and len(far) >= 5:  # a share of fewer is no evidence either way
            follows |= wilson(int((near.edits <= 1).sum()), len(near))[0] > wilson(int((far.edits <= 1).sum()),
                                                                                  len(far))[1]
    meaning = (": a one-edit share is largely the share of targets the model is unsure about" if follows else "")
    return (f"**How the fragility depends on the model's confidence.** Share of targets flipped by {unit} — "
            + "; ".join(parts) + meaning + " (by band of confidence: section \"What the fragility depends on\").")


def section(frame: pd.DataFrame, bands: pd.DataFrame) -> list[str]:
    """The report's section: the stratified table, the figure's caption and where the numbers are."""
    measures = [m for m in MEASURES if f"{m}_le_1" in bands]
    head = "| direction | \\|p − 0.5\\| | targets | " + " | ".join(
        f"{MEASURES[m]} ≤ {k}" for m in measures for k in COUNTS) + " |"
    lines = ["## What the fragility depends on: the model's confidence", "",
             "The clean predicted probability p of each target, by its distance from the 0.5 threshold; per band "
             "the targets flipped by at most k (count of the band's targets, 95% Wilson interval). Per target: "
             "`tables/confidence_targets.csv`; per band: `tables/confidence.csv`; figure "
             "`figures/confidence.png`.", "", head, "|---|---|---:|" + "---:|" * (len(measures) * len(COUNTS))]
    for r in bands.itertuples():
        cells = [count_pct(getattr(r, f"{m}_le_{k}"), r.targets) if r.targets else "–"
                 for m in measures for k in COUNTS]
        lines.append(f"| {label(r.direction)} | {r.band} | {r.targets} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def draw(frame: pd.DataFrame, bands: pd.DataFrame, path: Path) -> None:
    """Left: the share flipped by ≤ 1 and ≤ 3 edits per band of confidence, with Wilson intervals. Middle:
    the best example's edit count against the clean probability. Right: the smallest single flipping edit
    against the clean probability (record space)."""
    panels = 3 if "smallest_one_edit" in frame else 2
    fig, axes = plt.subplots(1, panels, figsize=(5.4 * panels, 4.4), constrained_layout=True)
    colours = {DIRECTIONS[0]: "tab:red", DIRECTIONS[1]: "tab:blue"}
    ax = axes[0]
    centres = np.array([(BANDS[b] + BANDS[b + 1]) / 2 for b in range(len(BANDS) - 1)])
    for d in DIRECTIONS:
        mine = bands[(bands.direction == d) & (bands.targets > 0)]
        x = centres[[list(bands.band.unique()).index(b) for b in mine.band]]
        for k, style in zip(COUNTS, ("-o", "--s"), strict=True):
            share = mine[f"edits_le_{k}_share"].to_numpy()
            err = np.clip(np.vstack([share - mine[f"edits_le_{k}_low"], mine[f"edits_le_{k}_high"] - share]), 0, None)
            ax.errorbar(x, 100 * share, yerr=100 * err, fmt=style, color=colours[d], capsize=3,
                        label=f"{label(d)}, ≤ {k}")
    ax.set(xlabel="|p − 0.5| of the clean prediction (band centre)", ylabel="% of the band's targets flipped",
           ylim=(-3, 103), xticks=centres, xticklabels=[band_name(b) for b in range(len(BANDS) - 1)],
           title="share flipped by ≤ 1 / ≤ 3 edits")
    ax.legend(fontsize=8, loc="lower left")  # the shares fall from top left: that corner stays empty
    rng = np.random.default_rng(0)  # jitter only: the counts are integers
    ax = axes[1]
    for d in DIRECTIONS:
        mine = frame[(frame.direction == d) & frame.edits.notna()]
        ax.scatter(mine.probability, mine.edits + rng.uniform(-0.2, 0.2, len(mine)), s=9, alpha=0.6,
                   color=colours[d], label=label(d))
    ax.axvline(0.5, color="grey", lw=0.8)
    ax.set(xlabel="clean predicted probability p", ylabel="edited values of the best example (jittered)",
           yscale="log" if (frame.edits > 0).any() else "linear", title="how many edits the best example needs")
    ax.legend(fontsize=8)
    if panels == 3:
        ax = axes[2]
        ax.sharex(axes[1])  # the same probabilities: targets no one value flips sit above, where they are
        for d in DIRECTIONS:
            mine = frame[frame.direction == d]
            some = mine[mine.smallest_one_edit.notna()]
            ax.scatter(some.probability, some.smallest_one_edit, s=9, alpha=0.6, color=colours[d], label=label(d))
            none = mine[mine.smallest_one_edit.isna()]
            if len(none):
                ax.scatter(none.probability, np.full(len(none), 0.97), marker="|", color=colours[d], alpha=0.4,
                           transform=ax.get_xaxis_transform(), clip_on=False)
        ax.axvline(0.5, color="grey", lw=0.8)
        ax.set(xlabel="clean predicted probability p", ylabel="|smallest flipping edit of one value| / (p95 − p5)",
               yscale="log" if (frame.smallest_one_edit > 0).any() else "linear",
               title="smallest single flipping edit\n(ticks along the top: no one value flips it)")
        ax.legend(fontsize=8)
    suptitle(fig, "the fragility against the model's confidence in the target")
    save(fig, path)


def write(run_dir: RunDir, attack: xr.Dataset, data: xr.Dataset, ex: xr.Dataset, model: torch.nn.Module,
          errors: xr.Dataset | None, captions: dict[str, str]) -> tuple[str, list[str], dict[int, float]]:
    """The tables and the figure; returns the headline sentence, the report's section and each target's
    clean predicted probability (by attack.zarr's sample)."""
    frame = per_target(attack, ex, clean_probability(attack, data, model), errors)
    if frame.empty:
        return "", [], {}
    bands = table(frame)
    rundir.write_text(run_dir.table("confidence_targets.csv"), frame.to_csv(index=False))
    rundir.write_text(run_dir.table("confidence.csv"), bands.to_csv(index=False))
    name = "confidence.png"
    captions[name] = "the fragility against the model's confidence: share flipped per band, edits needed"
    draw(frame, bands, run_dir.figure(name))
    return headline(frame), section(frame, bands), dict(zip(frame["sample"].astype(int), frame.probability,
                                                             strict=True))
