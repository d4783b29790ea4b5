"""Lab results at the time their specimen was drawn (`prepare.lab_time = "draw"`; docs/dataset.md, "Lab time").

The MIMIC-IV MEDS ETL (0.1.0 on) writes each lab row twice: the valued result `LAB//RESULT//{itemid}//{unit}`
at `storetime` (when the result was stored) and a value-less `LAB//SPECIMEN_COLLECTED//{itemid}…` at
`charttime` (when the specimen was drawn), which is where the CSV tables put the lab. Nothing in MEDS ties the
two events of one row together, so each result is paired with a draw of its item and admission: in time
order, the earliest draw not yet paired, at or before the result (results come back in the order their
specimens were drawn). Per result, one of:

- `paired`: exactly one draw was waiting — the pairing is certain;
- `ambiguous`: two or more were waiting (a second draw before the first's result, or a draw whose result the
  ETL dropped for lack of a storetime): paired by that order, which may be wrong;
- `no_draw`: none was waiting: the result stays at its own time.

Draws never paired are counted (`unused_draws`). A subject's events lie in one data file in MEDS, so the
pairing is done file by file.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

DRAW_COUNTS = ("paired", "ambiguous", "no_draw", "unused_draws")


def pair_draws(key: np.ndarray, item: np.ndarray, time: np.ndarray, is_draw: np.ndarray) -> tuple[np.ndarray, dict]:
    """For every row (an event: its key, item id, time, and whether it is a draw or a result), the time of the
    draw paired with it — NaT for draws and for results without one — and the counts of DRAW_COUNTS."""
    n = len(key)
    drawn = np.full(n, np.datetime64("NaT"), dtype=time.dtype)
    if n == 0:
        return drawn, dict.fromkeys(DRAW_COUNTS, 0)
    order = np.lexsort((~is_draw, time, item, key))  # draws first at equal times
    k, it, t, d = key[order], item[order], time[order], is_draw[order]
    start = np.r_[True, (k[1:] != k[:-1]) | (it[1:] != it[:-1])]
    group = np.cumsum(start) - 1
    # draws waiting after each event: the walk s (draws − results so far) reflected at 0, as a queue's length
    s = pd.Series(np.where(d, 1, -1)).groupby(group).cumsum().to_numpy()
    low = pd.Series(np.minimum(s, 0)).groupby(group).cummin().to_numpy()
    waiting = s - low
    before = np.where(start, 0, np.r_[0, waiting[:-1]])  # draws waiting when the event comes
    result = ~d
    missing = result & (before == 0)
    # the m-th result of a group that finds a draw waiting takes the group's m-th draw
    m = pd.Series(result & ~missing).groupby(group).cumsum().to_numpy()
    draws_before_group = np.r_[0, np.cumsum(np.bincount(group, weights=d).astype(np.int64))[:-1]]
    draw_rows = np.flatnonzero(d)
    paired = result & ~missing
    taken = draw_rows[draws_before_group[group[paired]] + m[paired] - 1]
    drawn[order[paired]] = t[taken]
    counts = {"paired": int((paired & (before == 1)).sum()), "ambiguous": int((paired & (before >= 2)).sum()),
              "no_draw": int(missing.sum()), "unused_draws": int(d.sum() - paired.sum())}
    return drawn, counts


def at_draw(table: pa.Table, drawn: np.ndarray) -> pa.Table:
    """The batch with each lab result paired with a draw (`drawn`, per row; NaT: none) moved to the draw's time."""
    time = table["time"].to_numpy(zero_copy_only=False)
    moved = pa.array(np.where(np.isnat(drawn), time, drawn), table.schema.field("time").type)
    return table.set_column(table.schema.get_field_index("time"), "time", moved)
