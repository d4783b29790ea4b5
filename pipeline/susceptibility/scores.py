"""Susceptibility scores of Sun et al. (2018), docs/methods.md §6, in xarray.

Over the N successful perturbations of one group (direction 0to1 or 1to0, i.e. prediction 0 → 1 or
1 → 0; kind first or best), with
P_nij the perturbation of sample n at hour i, feature j:

- GMP_ij = max_n |P_nij|, GAP_ij = (1/N) Σ_n |P_nij| (per cell: the published code summed over all
  axes), GPP_ij = (1/N) Σ_n 1[P_nij ≠ 0]
- S_ij = GMP_ij · GPP_ij, S_j = Σ_i S_ij
- GANZP_ij = mean of |P_nij| over the n with P_nij ≠ 0 (NaN when none),
  sensitivity_ij = GPP_ij / GANZP_ij, sensitivity_j = Σ_i sensitivity_ij over the hours where it is
  defined (a feature never perturbed scores 0)

Every score is NaN for a group with no successful example (N = 0).
"""

from __future__ import annotations

import numpy as np
import xarray as xr

DIRECTIONS = ("0to1", "1to0")  # the predicted class before → after the perturbation: easy to type
LABELS = {"0to1": "0→1", "1to0": "1→0"}  # how figures and report.md show them
DIRECTION = {"long_name": "attack direction: 0to1 = true label 0 → predicted 1, 1to0 = true label 1 → predicted 0"}


def label(direction: str) -> str:
    """A direction as people read it (0to1 → "0→1"); anything else unchanged."""
    return LABELS.get(str(direction), str(direction))


# long_name, units and description of each score. Scaled units (1 = the feature's p5…p95 range) are
# dimensionless, units "1"; so are counts and shares.
ATTRS = {
    "n": ("successful examples in the group (N)", "1",
          "successful examples of this direction and kind; every score is NaN when N = 0"),
    "targets": ("targets attacked in this direction", "1", "targets attacked in this direction"),
    "success_rate": ("success rate: N / targets", "1", "N / targets"),
    "gmp": ("GMP: max over examples of |P| (scaled units)", "1",
            "GMP: max over the successful examples of |P| per cell, in scaled units"),
    "gap": ("GAP: mean over examples of |P| (scaled units)", "1",
            "GAP: mean over the successful examples of |P| per cell, in scaled units"),
    "gpp": ("GPP: share of examples with P ≠ 0", "1",
            "GPP: share of the successful examples with P ≠ 0 in the cell"),
    "s": ("S = GMP · GPP (scaled units)", "1", "S = GMP · GPP per cell"),
    "s_j": ("S_j = Σ over hours of S (scaled units)", "1", "S_j = Σ over hours of S, per feature"),
    "ganzp": ("GANZP: mean |P| over the examples with P ≠ 0 (scaled units)", "1",
              "GANZP: mean |P| over the successful examples that changed the cell (P ≠ 0), in scaled "
              "units; NaN where none did"),
    "sensitivity": ("sensitivity = GPP / GANZP (per scaled unit)", "1",
                    "GPP / GANZP per cell; NaN where GANZP is"),
    "sensitivity_j": ("sensitivity_j = Σ over hours of sensitivity where defined", "1",
                      "Σ over hours of sensitivity where it is defined (0 for a feature never changed)"),
}
CLINICAL = "in the feature's clinical unit (coordinate `unit`)"
# the scores that `analyze` also stores in clinical units, × (p95 − p5): no single `units` applies
CLINICAL_ATTRS = {
    "gmp_clinical": {"long_name": f"GMP: max over examples of |P|, {CLINICAL}",
                     "description": "GMP × (p95 − p5) of the feature: max over the successful examples of |P| "
                                    "per cell, in clinical units (see `unit`)"},
    "gap_clinical": {"long_name": f"GAP: mean over examples of |P|, {CLINICAL}",
                     "description": "GAP × (p95 − p5) of the feature: mean over the successful examples of |P| "
                                    "per cell, in clinical units (see `unit`)"},
    "ganzp_clinical": {"long_name": f"GANZP: mean |P| over the examples with P ≠ 0, {CLINICAL}",
                       "description": "GANZP × (p95 − p5) of the feature: mean |P| over the successful examples "
                                      "that changed the cell, in clinical units (see `unit`); NaN where none did"},
}


def direction_of(pred: xr.DataArray) -> xr.DataArray:
    """Each target's direction from its (correct) prediction: class 0 is pushed to 1 and vice versa."""
    return xr.where(pred == 0, DIRECTIONS[0], DIRECTIONS[1]).astype(object)


def group_scores(abs_p: xr.DataArray, member: xr.DataArray) -> xr.Dataset:
    """The scores of one group: `abs_p` = |P| (sample, …, time, feature), `member` (sample, …) bool."""
    n = member.sum("sample")
    per_example = 1 / n.where(n > 0)  # NaN for an empty group: every score below becomes NaN, no 0/0
    p = abs_p.where(member, 0.0)  # outside the group counts as unperturbed
    changed = p > 0
    changes = changed.sum("sample")
    gmp = p.max("sample").where(n > 0)
    gap = p.sum("sample") * per_example
    gpp = changes * per_example
    ganzp = p.sum("sample") / changes.where(changes > 0)
    s = gmp * gpp
    sensitivity = gpp / ganzp
    empty = n == 0
    return xr.Dataset({
        "n": n,
        "gmp": gmp, "gap": gap, "gpp": gpp, "s": s,
        "s_j": s.sum("time", min_count=1),
        "ganzp": ganzp, "sensitivity": sensitivity,
        "sensitivity_j": sensitivity.sum("time").where(~empty),
    })


def scores(perturbation: xr.DataArray, found: xr.DataArray, direction: xr.DataArray) -> xr.Dataset:
    """All scores with dims (direction, kind, time, feature); `direction` labels each sample."""
    abs_p = abs(perturbation)
    groups = [group_scores(abs_p, found & (direction == d)) for d in DIRECTIONS]
    labels = np.array(DIRECTIONS, dtype=object)  # variable-length strings in Zarr v3
    ds = xr.concat(groups, dim=xr.DataArray(labels, dims="direction", name="direction"))
    targets = xr.concat([(direction == d).sum("sample") for d in DIRECTIONS], dim="direction")
    ds["targets"] = targets.assign_coords(direction=labels)
    ds["success_rate"] = ds.n / ds.targets.where(ds.targets > 0)
    for name, (long_name, units, description) in ATTRS.items():
        ds[name].attrs = {"long_name": long_name, "units": units, "description": description}
    ds["direction"].attrs = dict(DIRECTION)
    return ds


def norms(perturbation: xr.DataArray) -> xr.Dataset:
    """L0 (cells changed), L1 and L∞ of each example, in scaled units."""
    a = abs(perturbation)
    return xr.Dataset({"l0": (a > 0).sum(("time", "feature")), "l1": a.sum(("time", "feature")),
                       "linf": a.max(("time", "feature"))})


def to_clinical(scaled: xr.DataArray, p5: xr.DataArray, p95: xr.DataArray) -> xr.DataArray:
    """A perturbation (or a score in perturbation units) in clinical units: × (p95 − p5) of its feature."""
    return scaled * (p95 - p5)
