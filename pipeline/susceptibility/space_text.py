"""What the report says of each attack space: what an example changes, what its kinds are, and what the
realizability check shows there (pipeline/susceptibility/report.py). One entry per name in
``pipeline.config.SPACES`` (tests/test_spaces.py checks that every space has one)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SpaceText:
    paragraph: str  # the report's "what the attack changes" ({hours}, {features}: the input's shape)
    kinds: str  # the sentence on the kinds of example
    realizable: str  # "n of m examples …": what the realizability check shows in this space


TEXT = {
    "record": SpaceText(
        paragraph=(
            "**What the attack changes: the record.** An adversarial example here is a set of edits of recorded "
            "values — a lab result or a vital sign as it was entered, at the hour it was entered — such as a "
            "data-entry error would make. The model does not read the record directly: `prepare` fills the hours "
            "between two measurements by interpolation, carries the first and last measurement to the edges of "
            "the {hours} hours and uses the feature's median where it was never measured. An edited value therefore "
            "also moves every hour filled from it, exactly as it would if the wrong value had been in the chart. "
            "Edited values stay inside the range `prepare` accepts for the feature, and every example is checked "
            "by deriving the model's input from the edited record again."),
        kinds=(
            "*first* is the L1 attack's first iterate that flipped the prediction; *l1_best* its flipped "
            "iterate with the fewest edited values, then the smallest L1 of the edit (over the whole budget "
            "and every run of the λ search); *best* the sparsest example any search found — the one-edit "
            "scan, the fewest-edit search, the pruned L1 example or the L1 attack (docs/methods.md §10). "
            "L0, L1 and L∞ measure the change of the model's input that the edit causes."),
        realizable="re-derive from the edited record to a flipped prediction"),
    "tensor": SpaceText(
        paragraph=(
            "**What the attack changes: the model's input (Sun et al.'s attack).** An example here changes cells "
            "of the {hours} × {features} input directly, including hours that no one measured and `prepare` "
            "filled in. Such a change is not an edit anyone could make to the record; the share of changed cells "
            "that were never recorded, and how many examples still flip when only their changes of recorded "
            "values are kept, are given below. `attack.space = \"record\"` searches edits of the record instead."),
        kinds=(
            "*first* is the first iterate that flipped the prediction, *best* the flipped iterate with the "
            "smallest L1 (over the whole budget and every run of the λ search)."),
        realizable="still flip with only their changes of recorded values kept and the rest re-derived"),
}
