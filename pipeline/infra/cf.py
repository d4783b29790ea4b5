"""CF-style metadata shared by the stores (dataset.zarr, attack.zarr, susceptibility.zarr).

Every variable and coordinate carries ``long_name``; ``units`` only where one unit applies to the
whole variable: ``"h"`` for hours, ``"1"`` for dimensionless values (scaled [0, 1] units, shares,
counts, logits). Values in clinical units differ per feature, so those variables carry no ``units``
and their ``long_name`` points to the ``unit`` coordinate instead.

``units = "h"`` (the UDUNITS symbol) and not ``"hours"`` on the integer `time` coordinate: xarray
decodes a variable whose units are one of its time-unit words ("hours", "days", …) to timedelta64
when asked to (``decode_timedelta=True``; older xarray versions did so by default), and "h" is not
one of those words, so `time` stays the integer hour under every decoding setting.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

CONVENTIONS = "CF-1.13"
GLOBAL = {"Conventions": CONVENTIONS}

DIMENSIONLESS = "1"
HOURS = "h"

TIME = {"long_name": "hour after ICU intime (bin b holds events at b ≤ t < b + 1 h)", "units": HOURS}
FEATURE = {"long_name": "feature: lab value or vital sign"}
UNIT = {"long_name": "clinical unit of the feature"}
# y, pred and class share the meaning of the two classes
CLASSES = {"flag_values": [0, 1], "flag_meanings": "survived died_in_hospital"}


def annotate(ds: xr.Dataset, attrs: dict[str, dict]) -> xr.Dataset:
    """`ds` with `attrs[name]` merged into the attributes of each named variable or coordinate."""
    for name, extra in attrs.items():
        ds.variables[name].attrs.update(extra)
    return ds


def flags(var: xr.DataArray | xr.Variable, none: int = -1) -> dict[int, str]:
    """A coded variable's own codes: {value: meaning} from its `flag_values` and `flag_meanings` (CF), so
    that a store is read as it was written, whatever order today's code lists its choices in; `none`
    (−1: no entry) maps to ""."""
    values, meanings = var.attrs.get("flag_values"), var.attrs.get("flag_meanings")
    if values is None or meanings is None:
        raise KeyError(f"{var.attrs.get('long_name', 'a coded variable')}: no flag_values / flag_meanings")
    return {none: "", **dict(zip((int(v) for v in values), meanings.split(), strict=True))}


def decode(var: xr.DataArray | xr.Variable) -> xr.DataArray:
    """The meanings of a coded variable's values, element by element (object strings; "" for −1)."""
    table = flags(var)
    return xr.apply_ufunc(np.vectorize(lambda v: table[int(v)], otypes=[object]), var)
