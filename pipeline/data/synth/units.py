"""The units, codes and time helpers the synthetic tables share.

Times inside the generator are hours from an admission's reference time (:data:`WINDOW_H`: the window the
model looks at, features.WINDOW_HOURS); in the tables they are whole seconds since the epoch in MIMIC's shifted years
(:data:`FIRST_YEAR` to :data:`LAST_YEAR`), written as timestamps (:func:`to_seconds`, :func:`minute`,
:func:`day`, :func:`timestamps`). Also here: the two charting systems (:data:`CAREVUE`, :data:`METAVISION`)
and each feature's index (:data:`FEATURE`, :data:`K` features), and :func:`round_to`.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from pipeline.features import FEATURES, WINDOW_HOURS

WINDOW_H = float(WINDOW_HOURS)
HOUR_S, DAY_S, YEAR_DAYS = 3600, 86400, 365.2425
FIRST_YEAR, LAST_YEAR = 2100, 2195  # MIMIC-like shifted dates, far from pandas' datetime64[ns] limit (2262)
CAREVUE, METAVISION = 0, 1
DBSOURCES = ("carevue", "metavision")
K = len(FEATURES)
FEATURE = {f.name: k for k, f in enumerate(FEATURES)}


def round_to(value: np.ndarray, decimals: np.ndarray | int) -> np.ndarray:
    scale = 10.0 ** np.asarray(decimals)
    return np.round(value * scale) / scale


def timestamps(seconds: np.ndarray, mask: np.ndarray | None = None) -> pa.Array:
    return pa.array(seconds.astype("datetime64[s]"), mask=mask)


def to_seconds(ref: np.ndarray, hours: np.ndarray) -> np.ndarray:
    return ref + np.round(hours * HOUR_S).astype(np.int64)


def minute(seconds: np.ndarray) -> np.ndarray:
    return seconds // 60 * 60


def day(seconds: np.ndarray) -> np.ndarray:
    return seconds // DAY_S * DAY_S
