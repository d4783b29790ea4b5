"""The one-edit scan: for every recorded value of a target alone, every value it could be edited to
(docs/methods.md §10).

An edit of the value v recorded at hour h of feature f changes only column f of the model's input, and
along a straight line in each cell: an hour t derived from h takes c_t · e of an edit e (c_t = 1 at h
itself, the interpolation weight towards h in between, 1 where v is carried to the edge), then the clip
to [p5, p95]. So the input moves along a broken line with a kink where an hour reaches a clip, and
stops moving once every hour it reaches is clipped. The scan walks that line over the whole box the
attack uses (lo < v + e ≤ hi, pipeline/attack/targets.py): every kink, and points in between spaced
1 / `points` of the p5…p95 range apart in the cell that moves fastest, so no hour of the input moves by
more than that between two points. Where a point flips the prediction (margin Z_o − Z_t above the
record space's MIN_MARGIN), the bracket between it and the point before it is narrowed (`bisect`) to the
smallest flipping edit.

For a model that is linear in its input the margin is linear between two kinks, and the scan is exact;
for the LSTM the benchmark (benchmarks/README.md) compares it with a 16 times denser walk.

Edits are in the record space's scaled units δ (e = δ · (p95 − p5)) and float32, as attack.zarr stores
them, so that an example re-derives from the store to exactly the input the scan scored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.attack.core import Margins
from pipeline.attack.spaces.record import MIN_MARGIN
from pipeline.data.record import derive_record, plan, width

POINTS = 16  # points per p5…p95 range along the fastest-moving hour (benchmarks/README.md)
SECTIONS, ROUNDS = 8, 4  # the bracket around the smallest flipping edit shrinks 9⁴ = 6,561-fold


@dataclass
class Scan:
    """Per recorded cell (time, feature) of one target: what the value alone can do."""

    smallest: np.ndarray  # float32 δ of the smallest flipping edit (signed, scaled units); NaN: none flips
    margin: np.ndarray  # float64 the margin at that edit; NaN: none
    best: np.ndarray  # float32 δ with the largest margin found (NaN: not scanned)
    best_margin: np.ndarray  # float64 that margin (−inf: not scanned)
    margin0: float  # the record's own margin

    @property
    def flips(self) -> np.ndarray:
        return ~np.isnan(self.smallest)


@dataclass
class Line:
    """How the model's input moves with an edit δ of one recorded value: hour t of its feature's column
    takes c[t] of it before the clip (only the hours it reaches); d0 the hours before the edit."""

    c: np.ndarray
    d0: np.ndarray
    p5: float
    p95: float
    width: float
    lo: float  # the line's ends: the box, or where every hour it reaches is clipped
    hi: float

    def kinks(self) -> np.ndarray:
        """δ where an hour reaches a clip."""
        per_unit = self.c * self.width
        return np.concatenate([(self.p5 - self.d0) / per_unit, (self.p95 - self.d0) / per_unit])

    def ends(self) -> np.ndarray:
        """The edits that move the input furthest down and up (float32, 0 excluded)."""
        ends = np.unique(np.array([self.lo, self.hi], np.float32))
        return ends[ends != 0]

    def walk(self, points: int) -> np.ndarray:
        """The δ (float32, sorted, 0 excluded) at which the scan scores the edit: every kink inside the line
        and the points between them (see the module)."""
        stops = np.unique(np.clip(np.concatenate([self.kinks(), [self.lo, self.hi, 0.0]]), self.lo, self.hi))
        out = [stops]
        for a, b in zip(stops[:-1], stops[1:], strict=True):
            mid = self.d0 + self.c * (a + b) / 2 * self.width
            moving = (mid > self.p5) & (mid < self.p95)
            speed = self.c[moving].max() if moving.any() else 0.0  # x per unit δ of the fastest hour
            n = int(np.ceil(speed * (b - a) * points))
            if n > 1:
                out.append(np.linspace(a, b, n + 1)[1:-1])
        delta = np.unique(np.concatenate(out).astype(np.float32))
        return delta[delta != 0]


def lines(value: np.ndarray, cells: list[tuple[int, int]], stats: dict[str, np.ndarray], lower: np.ndarray,
          upper: np.ndarray) -> list[Line]:
    """The :class:`Line` of an edit of each recorded cell (hour, feature) of `value` (time, feature; NaN: not
    recorded) inside its box [lower, upper] of δ."""
    w = width(stats)
    recorded = ~np.isnan(value)
    p = plan(recorded[None])
    prev, nxt, weight = p.prev[0], p.next[0], p.weight[0]
    v = np.where(recorded, value, 0.0)
    v_prev = np.take_along_axis(v, prev, axis=0)
    d0 = v_prev + (np.take_along_axis(v, nxt, axis=0) - v_prev) * weight  # the hours before the clip
    out = []
    for h, f in cells:
        c = (1 - weight[:, f]) * (prev[:, f] == h) + weight[:, f] * (nxt[:, f] == h)  # the share each hour takes
        reached = c > 0
        one = Line(c[reached], d0[reached, f], float(stats["p5"][f]), float(stats["p95"][f]), float(w[f]),
                   float(lower[h, f]), float(upper[h, f]))
        kinks = one.kinks()  # beyond the outermost kinks nothing moves: the line ends there (or at the box)
        one.lo, one.hi = max(one.lo, min(kinks.min(), 0.0)), min(one.hi, max(kinks.max(), 0.0))
        out.append(one)
    return out


@dataclass
class Record:
    """A record single edits are scored against: a target's, perhaps with edits written in."""

    value: np.ndarray  # (time, feature) float64, NaN: not recorded
    y: int  # the target's class
    stats: dict[str, np.ndarray]

    def __post_init__(self):
        self.base = derive_record(self.value[None], self.stats)[0]  # the model's input as it stands


# single edits of one recorded value of a record: (record, (hour, feature), δ float32 array)
Ask = tuple[Record, tuple[int, int], np.ndarray]


def columns(record: Record, feature: int, hour: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """x (n, time, feature) of n single edits of one feature: the record's x with column `feature` derived
    again from the record with value[hour[i], feature] edited by delta[i] (scaled, float32), as prepare
    derives it (a column of x depends on its feature's record alone)."""
    w = width(record.stats)[feature]
    col = np.repeat(record.value[None, :, feature], len(hour), axis=0)
    rows = np.arange(len(hour))
    col[rows, hour] = col[rows, hour] + delta.astype(np.float64) * w
    one = {k: v[feature:feature + 1] for k, v in record.stats.items()}
    x = np.repeat(record.base[None], len(hour), axis=0)
    x[:, :, feature] = derive_record(col[:, :, None], one)[:, :, 0]
    return x


def score(margins: Margins, asks: list[Ask]) -> list[np.ndarray]:
    """The margin of every single edit asked, of any records, in as few model passes as the batch size
    allows; the inputs are derived a block of at most :data:`BLOCK` edits at a time, as the passes need them
    (what is held follows the batch, not the number of edits asked)."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, (record, (_, f), _) in enumerate(asks):
        groups.setdefault((id(record), f), []).append(i)
    order = [i for members in groups.values() for i in members]
    sizes = [len(asks[i][2]) for i in order]
    out: list[np.ndarray] = [np.zeros(0)] * len(asks)
    if not asks:
        return out

    def blocks():
        for (_, f), members in groups.items():
            record = asks[members[0]][0]
            for part in pieces(members, [len(asks[i][2]) for i in members]):
                hour = np.concatenate([np.full(len(asks[i][2]), asks[i][1][0]) for i in part])
                yield columns(record, f, hour, np.concatenate([asks[i][2] for i in part])), np.full(len(hour), record.y)

    m = margins.stream(blocks())
    for i, part in zip(order, np.split(m, np.cumsum(sizes)[:-1]), strict=True):
        out[i] = part
    return out


BLOCK = 1024  # inputs derived at once by the searches (each row of x is derived alone: any block gives the same)


def pieces(members: list, sizes: list[int], rows: int = BLOCK) -> list[list]:
    """`members` in order, cut into consecutive runs of at most `rows` rows (`sizes` each; a larger one alone)."""
    out, run, held = [], [], 0
    for member, size in zip(members, sizes, strict=True):
        if run and held + size > rows:
            out.append(run)
            run, held = [], 0
        run.append(member)
        held += size
    return [*out, run] if run else out


def scan(margins: Margins, value: np.ndarray, y: int, stats: dict[str, np.ndarray], lower: np.ndarray,
         upper: np.ndarray, points: int = POINTS) -> Scan:
    """Every recorded value of one record alone (`value` (time, feature), NaN: not recorded; `lower`,
    `upper` the box of δ per cell, scaled units); `y` the target's class."""
    return scan_many(margins, [Record(value, y, stats)], [lower], [upper], points)[0]


def scan_many(margins: Margins, records: list[Record], lowers: list[np.ndarray], uppers: list[np.ndarray],
              points: int = POINTS) -> list[Scan]:
    """:func:`scan` of several records at once (their edits share the model's passes)."""
    asks: list[Ask] = []
    for record, lower, upper in zip(records, lowers, uppers, strict=True):
        cells = [(int(h), int(f)) for h, f in zip(*np.nonzero(~np.isnan(record.value)), strict=True)]
        asks += [(record, cell, one.walk(points))
                 for cell, one in zip(cells, lines(record.value, cells, record.stats, lower, upper), strict=True)]
    margin0 = margins(np.stack([r.base for r in records]), np.array([r.y for r in records]))
    found = score(margins, asks)
    shape = records[0].value.shape if records else (0, 0)
    scans = {id(r): Scan(np.full(shape, np.nan, np.float32), np.full(shape, np.nan),
                         np.full(shape, np.nan, np.float32), np.full(shape, -np.inf), float(m0))
             for r, m0 in zip(records, margin0, strict=True)}
    brackets = []  # the first flip on each side of each recorded value, and the point before it
    for (record, (h, f), delta), m in zip(asks, found, strict=True):
        if not len(delta):
            continue
        out, k = scans[id(record)], int(np.argmax(m))
        out.best[h, f], out.best_margin[h, f] = delta[k], m[k]
        for d, ms in ((delta[delta > 0], m[delta > 0]), (delta[delta < 0][::-1], m[delta < 0][::-1])):
            # each side of the recorded value, nearest edit first
            flipped = np.flatnonzero(ms > MIN_MARGIN)
            if len(flipped):
                j = flipped[0]
                brackets.append((record, (h, f), np.float32(0.0) if j == 0 else d[j - 1], d[j], ms[j]))
    for (record, (h, f), *_), (d, m) in zip(brackets, bisect(margins, brackets), strict=True):
        out = scans[id(record)]
        if np.isnan(out.smallest[h, f]) or abs(d) < abs(out.smallest[h, f]):
            out.smallest[h, f], out.margin[h, f] = d, m
    return [scans[id(r)] for r in records]


def bisect(margins: Margins, brackets: list) -> list[tuple[np.float32, float]]:
    """Narrow each bracket (record, cell, δ not flipping, δ flipping, its margin) to the flip nearest the
    first end: SECTIONS points inside every bracket per round, all brackets in one pass; the flipping ends
    stay flipping. Returns (δ, margin) per bracket."""
    fractions = np.arange(1, SECTIONS + 1) / (SECTIONS + 1)
    state = [(a, b, float(mb)) for _, _, a, b, mb in brackets]
    for _ in range(ROUNDS if brackets else 0):
        inside = [np.float32(np.float64(a) + (np.float64(b) - np.float64(a)) * fractions) for a, b, _ in state]
        found = score(margins, [(r, cell, d) for (r, cell, *_), d in zip(brackets, inside, strict=True)])
        new = []
        for (a, b, mb), d, m in zip(state, inside, found, strict=True):
            d, m = np.concatenate([d, [b]]), np.concatenate([m, [mb]])
            j = int(np.flatnonzero(m > MIN_MARGIN)[0])
            new.append((a if j == 0 else d[j - 1], d[j], float(m[j])))
        state = new
    return [(b, mb) for _, b, mb in state]
