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

import xarray as xr

CONVENTIONS = "CF-1.13"
GLOBAL = {"Conventions": CONVENTIONS}

DIMENSIONLESS = "1"
HOURS = "h"

TIME = {"long_name": "hour after ICU intime (bin b holds events at b ≤ t < b + 1 h)", "units": HOURS}
FEATURE = {"long_name": "feature: lab value or vital sign"}
UNIT = {"long_name": "clinical unit of the feature"}
KIND = {"long_name": "example kind: first = first iterate that flipped the prediction, "
                     "best = flipped iterate with the smallest L1"}
# y, pred and class share the meaning of the two classes
CLASSES = {"flag_values": [0, 1], "flag_meanings": "survived died_in_hospital"}


def annotate(ds: xr.Dataset, attrs: dict[str, dict]) -> xr.Dataset:
    """`ds` with `attrs[name]` merged into the attributes of each named variable or coordinate."""
    for name, extra in attrs.items():
        ds.variables[name].attrs.update(extra)
    return ds
