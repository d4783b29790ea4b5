"""Which searches run in each attack space after the L1 attack: the layer above the spaces and the searches,
the one place that pairs them (docs/architecture.md, "The attack in layers").

The tensor space keeps the L1 attack's first and best examples. The record space adds the one-edit scan,
the fewest-edit search and the pruning of the L1 example (pipeline/attack/fewest_edits.py): its kinds are
first, best (the sparsest example of any search) and l1_best.
"""

from __future__ import annotations

import numpy as np
import torch

from pipeline.attack.core import AttackResult
from pipeline.attack.fewest_edits import Target, sparsest
from pipeline.attack.spaces.base import Inputs, Space
from pipeline.attack.spaces.record import RecordSpace, plausible_edits
from pipeline.config import AttackParams


def record_targets(inputs: Inputs, y: np.ndarray, rows: slice) -> list[Target]:
    """Targets `rows` of `inputs` (of class y[rows]) for the one-edit scan and the fewest-edit search, with
    the box the attack uses (float32, as RecordSpace holds it)."""
    value, mask = inputs.value[rows], inputs.mask[rows]
    lower, upper = plausible_edits(value, mask, inputs.stats)
    return [Target(v, int(c), inputs.stats, lo, hi) for v, c, lo, hi in
            zip(value, y[rows], lower.astype(np.float32), upper.astype(np.float32), strict=True)]


def record_searches(model: torch.nn.Module, result: AttackResult, inputs: Inputs, y: np.ndarray, rows: slice,
                    params: AttackParams):
    """The one-edit scan, the fewest-edit search and the pruned L1 examples (a fewest_edits.Batch)."""
    return sparsest(model, result, record_targets(inputs, y, rows), params)


AFTER_L1 = {RecordSpace: record_searches}  # by the space's class; a space not here keeps the L1 attack's examples


def refine(space: Space, model: torch.nn.Module, result: AttackResult, inputs: Inputs, y: np.ndarray, rows: slice,
           params: AttackParams):
    """The batch's examples after the L1 attack's `result`: what the searches wired to the space add."""
    searches = AFTER_L1.get(type(space))
    return result if searches is None else searches(model, result, inputs, y, rows, params)
