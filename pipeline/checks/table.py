"""The limits as people and stores hold them: a laboratory's table (TOML) the user supplies, and the
variables attack.zarr keeps of the limits its searches used (read back and checked before use: a store is
an input like any other).

A limits table names features by their name (pipeline/features.py) in the feature's clinical unit::

    within_hours = 72        # optional: neighbours further apart are not compared
    [sodium]
    low = 120                # range check (either end may be left out)
    high = 160
    delta = 13               # delta check: a change of more than 13 either way (or delta_low / delta_high)
    [creatinine]
    delta_percent = 60       # a change of more than 60% of the earlier value

A feature the table leaves out is not checked.
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

import numpy as np

from pipeline.checks.limits import Limits
from pipeline.features import NAMES
from pipeline.options import ConfigError

KEYS = ("low", "high", "delta", "delta_low", "delta_high", "delta_percent")
# attack.zarr's variables (dim feature) and the Limits field each holds
VARIABLES = {"check_low": "low", "check_high": "high", "check_delta_low": "delta_low",
             "check_delta_high": "delta_high", "check_delta_percent": "percent"}
TEXT = {"check_low": "range check: the lowest value not flagged",
        "check_high": "range check: the highest value not flagged",
        "check_delta_low": "delta check: the largest fall from the previous recorded value not flagged",
        "check_delta_high": "delta check: the largest rise from the previous recorded value not flagged",
        "check_delta_percent": "delta check: the largest change, in percent of the earlier value, not flagged "
                               "(inf: no such limit)"}


def load(path: str | Path) -> Limits:
    """The limits of a table file (see the module); ConfigError naming the file and the key otherwise."""
    where = f"[checks] limits = {str(path)!r}"
    try:
        table = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"{where}: cannot be read ({e.strerror or e})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{where}: not a TOML file ({e})") from None
    n = len(NAMES)
    low, high = np.full(n, -np.inf), np.full(n, np.inf)
    delta_low, delta_high, percent = np.full(n, -np.inf), np.full(n, np.inf), np.full(n, np.inf)
    within = table.pop("within_hours", None)
    if within is not None and (not _number(within) or within <= 0):
        raise ConfigError(f"{where}: within_hours = {within!r} must be a number of hours above 0")
    for name, row in table.items():
        if name not in NAMES:
            raise ConfigError(f"{where}: [{name}] is no feature ({', '.join(NAMES)})")
        if not isinstance(row, dict):
            raise ConfigError(f"{where}: {name} must be a table ([{name}] with keys {', '.join(KEYS)})")
        for key, value in row.items():
            if key not in KEYS:
                raise ConfigError(f"{where}: [{name}] {key} is not a key of a limits table ({', '.join(KEYS)})")
            if not _number(value):
                raise ConfigError(f"{where}: [{name}] {key} = {value!r} must be a finite number")
        f = NAMES.index(name)
        low[f], high[f] = row.get("low", -np.inf), row.get("high", np.inf)
        if "delta" in row and ("delta_low" in row or "delta_high" in row):
            raise ConfigError(f"{where}: [{name}] sets delta and delta_low/delta_high: give one or the other")
        if "delta" in row:
            delta_low[f], delta_high[f] = -abs(row["delta"]), abs(row["delta"])
        delta_low[f], delta_high[f] = row.get("delta_low", delta_low[f]), row.get("delta_high", delta_high[f])
        percent[f] = row.get("delta_percent", np.inf)
    limits = Limits(low, high, delta_low, delta_high, None if within is None else float(within), percent)
    check(limits, where)
    return limits


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def check(limits: Limits, where: str) -> None:
    """ConfigError naming `where` and the feature unless every limit is a number (±inf: none) with low ≤ high,
    delta_low ≤ 0 ≤ delta_high and a percent above 0: a limit that flags an unchanged value is no limit."""
    arrays = {"low": limits.low, "high": limits.high, "delta_low": limits.delta_low,
              "delta_high": limits.delta_high, "delta_percent": limits.percent}
    for key, a in arrays.items():
        if a.shape != (len(NAMES),) or a.dtype.kind != "f" or np.isnan(a).any():
            raise ConfigError(f"{where}: {key} must be {len(NAMES)} numbers, one per feature (no NaN)")
    bad = (limits.low > limits.high) | (limits.delta_low > 0) | (limits.delta_high < 0) | (limits.percent <= 0)
    if bad.any():
        raise ConfigError(f"{where}: limits of {', '.join(np.array(NAMES)[bad])} are not low ≤ high, "
                          "delta_low ≤ 0 ≤ delta_high and delta_percent > 0")
    if limits.within is not None and not limits.within > 0:
        raise ConfigError(f"{where}: within_hours = {limits.within!r} must be above 0")


def variables(limits: Limits, dim: str = "feature") -> dict:
    """A store's variables of the limits: {name: ((dim,), float64 values, CF attrs)}, `dim` along the features
    (errors.zarr names its errors' feature `feature`, so it keeps them along `check_feature`)."""
    within = {"within_hours": limits.within if limits.within is not None else "none"}
    return {name: ((dim,), np.asarray(getattr(limits, field), np.float64),
                   {"long_name": TEXT[name] + ", in the feature's clinical unit (coordinate `unit`)", **within})
            for name, field in VARIABLES.items()}


def from_store(store, where: str) -> Limits | None:
    """The limits a store (an xarray Dataset) keeps, checked (ConfigError naming `where`); None when it keeps
    none (a store made before the checks, or a tensor-space one)."""
    present = [v for v in VARIABLES if v in store.variables]
    if not present:
        return None
    if len(present) < len(VARIABLES):
        raise ConfigError(f"{where}: keeps only some of the checks' limits ({', '.join(present)}): a damaged store?")
    a = {field: np.asarray(store[name].values) for name, field in VARIABLES.items()}
    if any(v.dtype.kind != "f" for v in a.values()):
        raise ConfigError(f"{where}: the checks' limits are not floating-point numbers: a damaged store?")
    within = store["check_delta_low"].attrs.get("within_hours", "none")
    if within != "none" and (not _number(within) or within <= 0):
        raise ConfigError(f"{where}: the checks' within_hours = {within!r} is not a number of hours above 0")
    limits = Limits(a["low"].astype(np.float64), a["high"].astype(np.float64), a["delta_low"].astype(np.float64),
                    a["delta_high"].astype(np.float64), None if within == "none" else float(within),
                    a["percent"].astype(np.float64))
    check(limits, where)
    return limits
