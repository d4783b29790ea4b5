"""The attack in the record space: after the L1 attack, the one-edit scan, the fewest-edit search and the
pruned L1 example (pipeline/attack/fewest_edits.py) look for the sparsest edit of the record; attack.zarr
keeps the edits themselves besides their effect on the model's input."""

from __future__ import annotations

import numpy as np
import torch

from pipeline.attack.core import AttackResult, Margins
from pipeline.attack.fewest_edits import METHODS, Example, Search, Target, sparsest
from pipeline.attack.spaces.base import Inputs
from pipeline.attack.spaces.record import RecordSpace, plausible_edits
from pipeline.attack.undetected import METHODS as UNDETECTED_METHODS
from pipeline.attack.undetected import undetected_many
from pipeline.attack.wiring.base import Wiring
from pipeline.config import AttackParams
from pipeline.data.record import feature_stats, width
from pipeline.infra import cf


def record_targets(inputs: Inputs, y: np.ndarray, rows: slice) -> list[Target]:
    """Targets `rows` of `inputs` (of class y[rows]) for the one-edit scan and the fewest-edit search, with
    the box the attack uses (float32, as RecordSpace holds it)."""
    value, mask = inputs.value[rows], inputs.mask[rows]
    lower, upper = plausible_edits(value, mask, inputs.stats)
    return [Target(v, int(c), inputs.stats, lo, hi) for v, c, lo, hi in
            zip(value, y[rows], lower.astype(np.float32), upper.astype(np.float32), strict=True)]


# The searches that feed best besides the built-in ones (the one-edit scan, the fewest-edit search, the pruned
# L1 example: fewest_edits.METHODS): {method code: search}, each a module of pipeline/attack/ whose examples
# rank by Example.rank (core.rank_key). Their names follow METHODS in attack.zarr's `method` codes.
FURTHER: dict[str, Search] = {}


def undetected_variables(n: int, n_time: int, n_feat: int, empty) -> dict:
    """attack.zarr's variables of the sparsest examples no check catches (docs/methods.md §11)."""
    cells = ("sample", "time", "feature")
    return {
        "undetected_edit": (cells, empty((n, n_time, n_feat), np.float32, 0.0),
                            {"long_name": "the sparsest edit that flips the prediction and that no range or delta "
                                          "check flags, δ in scaled units (0: cell not edited)",
                             "units": cf.DIMENSIONLESS}),
        "undetected_edit_clinical": (cells, empty((n, n_time, n_feat), np.float32, 0.0),
                                     {"long_name": "that edit, new − old in the feature's clinical unit "
                                                   "(coordinate `unit`; 0: cell not edited)"}),
        "undetected_method": (("sample",), empty((n,), np.int8, -1),
                              {"long_name": "the search that found the undetected example (-1: none)",
                               "flag_values": list(range(len(UNDETECTED_METHODS))),
                               "flag_meanings": " ".join(UNDETECTED_METHODS),
                               "description": "scan, search: the one-edit scan and the fewest-edit search "
                                              "restricted to values the checks pass; first, best, l1_best: the "
                                              "stored example of that kind, which no check flags"}),
        "undetected_margin": (("sample",), empty((n,), np.float32, np.nan),
                              {"long_name": "Z_o − Z_t at the undetected example (NaN: none)",
                               "units": cf.DIMENSIONLESS}),
        "one_edit_undetected": (cells, empty((n, n_time, n_feat), np.float32, np.nan),
                                {"long_name": "the smallest edit of this recorded value alone that flips the "
                                              "prediction and that no check flags, new − old in the feature's "
                                              "clinical unit (coordinate `unit`; NaN: none, or nothing was "
                                              "recorded)"}),
    }


def write_undetected(store, found: list, w: np.ndarray, b0: int, b1: int) -> None:
    """Rows b0…b1 of the undetected variables from undetected_many's (scan, example) per target."""
    shape = (b1 - b0, *store["undetected_edit"].shape[1:])
    delta, method = np.zeros(shape, np.float32), np.full(b1 - b0, -1, np.int8)
    margin = np.full(b1 - b0, np.nan, np.float32)
    for i, (_, example) in enumerate(found):
        if example is not None:
            delta[i], method[i] = example.delta, UNDETECTED_METHODS.index(example.method)
            margin[i] = example.margin
    store["undetected_edit"][b0:b1] = delta
    store["undetected_edit_clinical"][b0:b1] = delta * w
    store["undetected_method"][b0:b1] = method
    store["undetected_margin"][b0:b1] = margin
    store["one_edit_undetected"][b0:b1] = np.stack([s.smallest for s, _ in found]) * w if found else delta


class RecordWiring(Wiring):
    SPACE = RecordSpace
    CHECKS = True
    METHODS = METHODS + tuple(FURTHER)
    KINDS = ("first", "best", "l1_best")
    KIND = {"long_name": "example kind: first = the L1 attack's first flipped iterate; best = the sparsest example "
                         "any search found (fewest edited values, then the smallest L1 of the edit; `method` "
                         "says which search); l1_best = the L1 attack's own sparsest iterate (same order)"}
    EFFECT = "the change of the model's input that the edit of the record causes, T(v + δ) − T(v)"

    @classmethod
    def after_l1(cls, model: torch.nn.Module, result: AttackResult, inputs: Inputs, y: np.ndarray, rows: slice,
                 params: AttackParams):
        """The one-edit scan, the fewest-edit search and the pruned L1 examples (a fewest_edits.Batch), and with
        `inputs.checks` the sparsest examples no check catches (pipeline/attack/undetected.py)."""
        targets = record_targets(inputs, y, rows)
        batch = sparsest(model, result, targets, params, further=FURTHER)
        if inputs.checks is not None:
            r = batch.result
            stored = [[Example(r.perturbation[i, k].cpu().numpy(), float(r.margin[i, k]), kind)
                       for k, kind in enumerate(cls.KINDS) if bool(r.found[i, k])] for i in range(len(targets))]
            batch.undetected = undetected_many(Margins(model, 4096), targets, inputs.checks, stored, params)
        return batch

    @classmethod
    def variables(cls, n, n_time, n_feat, empty) -> dict:
        one, k = cf.DIMENSIONLESS, len(cls.KINDS)
        cells = ("sample", "kind", "time", "feature")
        return {
            "edit": (cells, empty((n, k, n_time, n_feat), np.float32, 0.0),
                     {"long_name": "edit δ of the recorded values, scaled units (0: cell not edited)", "units": one,
                      "description": "new − old recorded value in scaled units; × (p95 − p5) for clinical units"}),
            "edit_clinical": (cells, empty((n, k, n_time, n_feat), np.float32, 0.0),
                              {"long_name": "edit of the recorded values, new − old, in the feature's clinical "
                                            "unit (coordinate `unit`; 0: cell not edited)"}),
            "method": (("sample", "kind"), empty((n, k), np.int8, -1),
                       {"long_name": "the search that found the example (-1: none)",
                        "flag_values": list(range(len(cls.METHODS))), "flag_meanings": " ".join(cls.METHODS),
                        "description": "l1: an iterate of the L1 attack; scan: the one-edit scan; search: the "
                                       "fewest-edit beam search; pruned: the L1 example with edits dropped or "
                                       "shrunk (docs/methods.md §10)"}),
            "one_edit": (("sample", "time", "feature"), empty((n, n_time, n_feat), np.float32, np.nan),
                         {"long_name": "the smallest edit of this recorded value alone that flips the prediction, "
                                       "new − old in the feature's clinical unit (coordinate `unit`; NaN: it "
                                       "cannot alone, or nothing was recorded)"}),
            "one_edit_margin": (("sample", "time", "feature"), empty((n, n_time, n_feat), np.float32, np.nan),
                                {"long_name": "the largest margin Z_o − Z_t the one-edit scan found for this "
                                              "value alone (NaN: nothing was recorded)", "units": one}),
            **undetected_variables(n, n_time, n_feat, empty),
        }

    @classmethod
    def write(cls, space, store, batch, b0, b1):
        w = space.width.cpu().numpy()
        store["method"][b0:b1] = batch.method
        store["one_edit"][b0:b1] = batch.one_edit * w
        store["one_edit_margin"][b0:b1] = batch.one_edit_margin
        if batch.undetected is not None:
            write_undetected(store, batch.undetected, w, b0, b1)
        result = batch.result
        edit = result.perturbation.cpu().numpy()
        store["edit"][b0:b1] = edit
        store["edit_clinical"][b0:b1] = edit * w
        return type(result)(space.effect(result.perturbation), result.found, result.iteration, result.margin,
                            result.lam, result.logits)

    @staticmethod
    def edited_values(attack, data, kind, rows):
        """v + δ·(p95 − p5), exactly as the attack computed it."""
        index = attack.dataset_index.values[rows]
        value, mask = data["value"].values[index], data["mask"].values[index]
        delta = attack["edit"].sel(kind=kind).values[rows].astype(np.float64)
        return np.where(mask, np.where(mask, value, 0.0) + delta * width(feature_stats(data)), np.nan)


WIRING = RecordWiring
