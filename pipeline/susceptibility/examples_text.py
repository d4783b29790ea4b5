"""The examples the report spells out, chosen to tell something: per feature the smallest edit that flips a
target by itself, and the targets the model was surest of that were still flipped — not the first few by
hadm_id. Each edit reads as it would in the record."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.susceptibility.scores import label

SHOWN_EXAMPLES = 5
SHOWN_FEATURES = 8  # the smallest one-edit flips: at most this many features
SHOWN_CONFIDENT = 3


def amount(value: float, unit: str) -> str:
    """'2.1 mmol/L', '97%', 'pH 7.37': a value as a clinician writes it."""
    if unit == "pH":
        return f"pH {value:.3g}"
    if unit == "%":
        return f"{value:.4g}%"
    return f"{value:.4g} {unit}" if unit else f"{value:.4g}"


def edit_text(r) -> str:
    """'lactate recorded at hour 31: 2.1 → 4.8 mmol/L (reaches hours 28–47)'."""
    reach = f"hour {r.reaches_from}" if r.reaches_from == r.reaches_to else f"hours {r.reaches_from}–{r.reaches_to}"
    return f"{r.feature} recorded at hour {r.hour}: {change(r.before, r.after, r.unit)} (reaches {reach})"


def change(before: float, after: float, unit: str) -> str:
    """'2.1 → 4.8 mmol/L', 'pH 7.47 → 7.24', '97 → 88%'."""
    if unit == "pH":
        return f"pH {before:.3g} → {after:.3g}"
    return f"{before:.4g} → {amount(after, unit)}"


def _line(rows: pd.DataFrame, sample: int, noun: str, spell, extra: str = "") -> str:
    mine = rows[rows["sample"] == sample]
    first = mine.iloc[0]
    n = f"1 {noun}" if len(mine) == 1 else f"{len(mine)} {noun}s"
    return (f"- hadm_id {first.hadm_id} ({label(first.direction)}, {n}{extra}): "
            + "; ".join(spell(r) for r in mine.itertuples()))


def sparsest(rows: pd.DataFrame, which: str, noun: str, where: str, spell, what: str = "best examples") -> list[str]:
    """Up to SHOWN_EXAMPLES examples with the fewest rows in `rows` (one row per changed value), spelled out."""
    if rows.empty:
        return []
    counts = rows.groupby("sample").size().sort_values(kind="stable")
    lines = [f"The {min(SHOWN_EXAMPLES, len(counts))} {what} {which} ({where}):", ""]
    lines += [_line(rows, sample, noun, spell) for sample in counts.index[:SHOWN_EXAMPLES]]
    return lines + [""]


def smallest_per_feature(edits: pd.DataFrame) -> list[str]:
    """Per feature, the one-edit example whose edit is smallest (in units of the feature's p5…p95 range)."""
    counts = edits.groupby("sample").size()
    single = edits[edits["sample"].map(counts) == 1].assign(size=lambda f: f.edit_scaled.abs())
    if single.empty:
        return []
    chosen = single.sort_values(["size", "sample"], kind="stable").drop_duplicates("feature").head(SHOWN_FEATURES)
    lines = [f"The smallest edit of one value that flips a target, per feature ({len(chosen)} features, smallest "
             "first; size in units of the feature's p5…p95 range):", ""]
    lines += [_line(edits, r.sample, "edit", edit_text, f", size {r.size:.2g}") for r in chosen.itertuples()]
    return lines + [""]


def most_confident(edits: pd.DataFrame, probability: dict[int, float]) -> list[str]:
    """The flipped targets the model was surest of (largest |p − 0.5| of the clean prediction)."""
    samples = np.unique(edits["sample"].to_numpy())
    known = [s for s in samples if int(s) in probability]
    if not known:
        return []
    ranked = sorted(known, key=lambda s: (-abs(probability[int(s)] - 0.5), int(s)))[:SHOWN_CONFIDENT]
    lines = [f"The {len(ranked)} flipped targets the model was surest of (clean predicted probability p):", ""]
    lines += [_line(edits, s, "edit", edit_text, f", p = {probability[int(s)]:.3f}") for s in ranked]
    return lines + [""]


def telling_edits(edits: pd.DataFrame, probability: dict[int, float] | None = None) -> list[str]:
    """The best examples spelled out: the smallest one-edit flip per feature, then the most confident
    targets flipped (every edit of every example: `tables/edits_best.csv`)."""
    if edits.empty:
        return []
    lines = smallest_per_feature(edits) or sparsest_edits(edits)
    return lines + (most_confident(edits, probability) if probability else []) + [
        "Every edit of every example: `tables/edits_best.csv`; per feature, how often and which way: the tables "
        "of section Susceptibility.", ""]


def sparsest_edits(edits: pd.DataFrame) -> list[str]:
    """The best examples with the fewest edited values, each edit as it would read in the record."""
    return sparsest(edits, "with the fewest edited values", "edit", "every edit of every example: "
                    "`tables/edits_best.csv`", edit_text)


def sparsest_undetected(edits: pd.DataFrame) -> list[str]:
    """The undetected examples with the fewest edited values, each edit as it would read in the record."""
    return sparsest(edits, "that no check flags, with the fewest edited values", "edit",
                    "every edit of every undetected example: `tables/edits_undetected.csv`", edit_text,
                    "undetected examples")


def sparsest_examples(changes: pd.DataFrame) -> list[str]:
    """The best examples that change the fewest cells, each change in clinical units."""
    return sparsest(changes, "that change the fewest cells", "cell", "every changed cell of every example, in "
                    "clinical units: `tables/changes_best.csv`",
                    lambda r: f"{r.feature} at hour {r.hour} {change(r.before, r.after, r.unit)}")
