"""The attack in the tensor space (Sun et al. 2018): the L1 attack's own first and best examples, and
nothing the space adds to attack.zarr."""

from __future__ import annotations

import numpy as np

from pipeline.attack.spaces.tensor import TensorSpace
from pipeline.attack.wiring.base import Wiring
from pipeline.data.record import feature_stats, width


class TensorWiring(Wiring):
    SPACE = TensorSpace
    KIND = {"long_name": "example kind: first = first iterate that flipped the prediction, best = flipped "
                         "iterate with the smallest L1 (ties: the larger margin)"}
    EFFECT = "adversarial perturbation P of the scaled input x"

    @staticmethod
    def edited_values(attack, data, kind, rows):
        """Each changed recorded cell set to the clinical value of its changed input x + P; a change of
        an imputed cell is no edit of the record, so those cells keep their (absent) value."""
        index = attack.dataset_index.values[rows]
        value, mask = data["value"].values[index], data["mask"].values[index]
        stats = feature_stats(data)
        p = attack.perturbation.sel(kind=kind).values[rows]
        after = (data.x.values[index] + p).astype(np.float64) * width(stats) + stats["p5"]
        return np.where(mask & (p != 0), after, value)


WIRING = TensorWiring
