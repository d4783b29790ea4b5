"""The record space: the attack edits recorded values, and the model sees what `prepare` derives from the
edited record (docs/methods.md §10). After the L1 attack, the one-edit scan and the fewest-edit search
(pipeline/attack/one_edit.py, fewest_edits.py; wired by pipeline/attack/searches.py) look for the
sparsest example; all three use this space's box and its MIN_MARGIN."""

from __future__ import annotations

import numpy as np
import torch

from pipeline.attack.spaces.base import Space
from pipeline.data.record import Transform, feature_stats, width
from pipeline.errors import InputError
from pipeline.features import FEATURES
from pipeline.infra import cf
from pipeline.options import ConfigError

# an example counts only with a margin above this: best examples sit at the decision boundary, and one
# must stay flipped when its record is re-derived elsewhere (another batch size and LSTM kernel, events
# re-read from CSV text)
MIN_MARGIN = 1e-3
METHODS = ("l1", "scan", "search", "pruned")  # who found an example: the codes of attack.zarr's `method`
# an edited value stays this share of the feature's range inside it: float32 rounding of the edit must
# never carry it onto the excluded lower end or past the upper one
EDGE = 1e-6


def plausible_edits(value: np.ndarray, mask: np.ndarray, stats: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per recorded cell, the range of δ (scaled units) that keeps v + δ·(p95 − p5) plausible — inside the
    feature's range filter lo < v ≤ hi, where prepare keeps it; 0 … 0 where nothing was recorded."""
    lo = np.array([f.lo for f in FEATURES])
    hi = np.array([f.hi for f in FEATURES])
    edge = EDGE * (hi - lo)
    v = np.nan_to_num(value)
    w = width(stats)
    lower = np.where(mask, np.minimum(((lo + edge) - v) / w, 0.0), 0.0)
    upper = np.where(mask, np.maximum(((hi - edge) - v) / w, 0.0), 0.0)
    return lower, upper


class RecordSpace(Space):
    """The variable δ edits the recorded values (in each feature's scaled units, so that λ weighs every
    feature alike; recorded cells only). The model sees what `transform` derives from the edited record
    v + δ·width (clinical units, float64). `lower` ≤ δ ≤ `upper` keeps every edited value plausible
    (inside the feature's range filter, where `prepare` keeps it)."""

    name = "record"
    MIN_MARGIN = MIN_MARGIN
    KINDS = ("first", "best", "l1_best")
    KIND = {"long_name": "example kind: first = the L1 attack's first flipped iterate; best = the sparsest example "
                         "any search found (fewest edited values, then the smallest L1 of the edit; `method` "
                         "says which search); l1_best = the L1 attack's own sparsest iterate (same order)"}
    EFFECT = "the change of the model's input that the edit of the record causes, T(v + δ) − T(v)"
    READS_RECORD = True
    EDITS_RECORD = True
    PARAGRAPH = (
        "**What the attack changes: the record.** An adversarial example here is a set of edits of recorded "
        "values — a lab result or a vital sign as it was entered, at the hour it was entered — such as a "
        "data-entry error would make. The model does not read the record directly: `prepare` fills the hours "
        "between two measurements by interpolation, carries the first and last measurement to the edges of "
        "the 48 hours and uses the feature's median where it was never measured. An edited value therefore "
        "also moves every hour filled from it, exactly as it would if the wrong value had been in the chart. "
        "Edited values stay inside the range `prepare` accepts for the feature, and every example is checked "
        "by deriving the model's input from the edited record again.")
    KIND_TEXT = ("*first* is the L1 attack's first iterate that flipped the prediction; *l1_best* its flipped "
                 "iterate with the fewest edited values, then the smallest L1 of the edit (over the whole budget "
                 "and every run of the λ search); *best* the sparsest example any search found — the one-edit "
                 "scan, the fewest-edit search, the pruned L1 example or the L1 attack (docs/methods.md §10). "
                 "L0, L1 and L∞ measure the change of the model's input that the edit causes.")
    REALIZABLE_TEXT = "re-derive from the edited record to a flipped prediction"

    def __init__(self, value: torch.Tensor, width: torch.Tensor, recorded: torch.Tensor, lower: torch.Tensor,
                 upper: torch.Tensor, transform: torch.nn.Module):
        self.value, self.width, self.transform = value, width, transform
        self.allowed = recorded.to(lower.dtype)
        self.lower, self.upper = lower * self.allowed, upper * self.allowed

    @classmethod
    def check(cls, params) -> None:
        if params.observed_only:
            raise ConfigError("[attack] observed_only = true is a tensor-space option: the record space edits "
                              "recorded values only; set attack.space = \"tensor\" to use it")

    @classmethod
    def check_dataset(cls, ds, path) -> None:
        if "value" not in ds:
            raise InputError(f"{path} holds no recorded values (made before the record was kept): run "
                             "`prepare --force` for attack.space = \"record\", or use attack.space=tensor")

    @classmethod
    def build(cls, inputs, params, device, rows) -> RecordSpace:
        mask, value = inputs.mask[rows], inputs.value[rows]
        lower, upper = plausible_edits(value, mask, inputs.stats)
        as_tensor = lambda a, dtype=torch.float32: torch.as_tensor(np.array(a), dtype=dtype, device=device)  # noqa: E731
        return cls(as_tensor(np.where(mask, value, 0.0), torch.float64), as_tensor(width(inputs.stats), torch.float64),
                   torch.from_numpy(mask).to(device), as_tensor(lower), as_tensor(upper),
                   Transform(mask, inputs.stats, device))

    def input(self, delta: torch.Tensor) -> torch.Tensor:
        return self.transform(self.value + delta.double() * self.width)

    def project(self, delta: torch.Tensor) -> torch.Tensor:
        return torch.minimum(torch.maximum(delta, self.lower), self.upper) * self.allowed

    def score(self, delta: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The fewest edited values, then the smallest L1 of the edit."""
        return (delta != 0).sum(dim=(1, 2)), delta.abs().sum(dim=(1, 2))

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
                        "flag_values": list(range(len(METHODS))), "flag_meanings": " ".join(METHODS),
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
        }

    def write(self, store, batch, b0, b1):
        w = self.width.cpu().numpy()
        store["method"][b0:b1] = batch.method
        store["one_edit"][b0:b1] = batch.one_edit * w
        store["one_edit_margin"][b0:b1] = batch.one_edit_margin
        result = batch.result
        edit = result.perturbation.cpu().numpy()
        store["edit"][b0:b1] = edit
        store["edit_clinical"][b0:b1] = edit * w
        return type(result)(self.effect(result.perturbation), result.found, result.iteration, result.margin,
                            result.lam, result.logits)

    @torch.no_grad()
    def effect(self, edit: torch.Tensor) -> torch.Tensor:
        """(n, kind, time, feature): how each edit of the record changes the model's input, T(u + δ) − T(u)
        (exactly 0 in every cell the edit does not reach)."""
        clean = self.input(torch.zeros_like(self.lower))
        return torch.stack([self.input(edit[:, k]) - clean for k in range(edit.shape[1])], dim=1)

    @staticmethod
    def edited_values(attack, data, kind, rows):
        """v + δ·(p95 − p5), exactly as the attack computed it."""
        index = attack.dataset_index.values[rows]
        value, mask = data["value"].values[index], data["mask"].values[index]
        delta = attack["edit"].sel(kind=kind).values[rows].astype(np.float64)
        return np.where(mask, np.where(mask, value, 0.0) + delta * width(feature_stats(data)), np.nan)


SPACE = RecordSpace
