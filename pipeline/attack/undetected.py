"""The sparsest flip that no check catches (docs/methods.md §11): the one-edit scan and the fewest-edit search
again, each edit restricted to the values the range and delta checks pass given the record as edited so far.

A check-aware target's box (:meth:`Checked.box`) is the attack's box intersected, per recorded value not yet
edited, with the values no check flags there: the range limits, and the delta limits from its previous and
next recorded values as the record stands with the edits made so far (pipeline/checks/limits.py
`bounds`). That set is an interval, so the scan's line, the search's two ends of it and the bisection
towards the recorded value all stay inside it; a value the clean record's checks already flag (its interval
excludes the recorded value) is left alone. Shrinking an example moves its edits towards the recorded
values one at a time, which can carry two edited neighbours apart: every example is checked on the edited
record at the end (`passes`), and a shrunk one that a check catches gives way to the example before
shrinking.

Besides the searches, the examples the attack already stored (first, best, l1_best) count as they are when
no check catches them, so a target's undetected example is never behind them.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from pipeline.attack import one_edit
from pipeline.attack.core import Margins
from pipeline.attack.fewest_edits import Example, Target, one_edit_example, search_many, shrink_many
from pipeline.attack.fewest_errors import Candidates, State, records
from pipeline.attack.one_edit import Record, Scan
from pipeline.attack.spaces.record import MIN_MARGIN
from pipeline.checks.limits import Limits, bounds, caught
from pipeline.config import AttackParams
from pipeline.data.record import width

log = logging.getLogger(__name__)

# attack.zarr's `undetected_method` codes: the check-aware scan and search, or a stored example of that kind
METHODS = ("scan", "search", "first", "best", "l1_best")
PAD = 1e-6  # scaled units kept between an edit and a limit: float32 rounding of δ must not cross it


@dataclasses.dataclass
class Checked(Target):
    """A target whose edits must pass the checks with `limits`."""

    limits: Limits = None

    def box(self, delta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = (b[0] for b in bounds(self.edited(delta)[None], self.limits))
        w = width(self.stats)
        with np.errstate(invalid="ignore"):  # NaN where nothing was recorded
            low, high = (lo - self.value) / w, (hi - self.value) / w
            editable = (low <= 0) & (high >= 0)
        lower = np.where(editable, np.minimum(np.maximum(low + PAD, self.lower), 0.0), 0.0)
        upper = np.where(editable, np.maximum(np.minimum(high - PAD, self.upper), 0.0), 0.0)
        return lower.astype(np.float32), upper.astype(np.float32)

    def passes(self, delta: np.ndarray) -> bool:
        """No check raises an alarm on the record with edits δ written in that the clean record would not."""
        return not caught(self.value[None], self.edited(delta)[None], self.limits)["any"][0]


def checked(targets: list[Target], limits: Limits) -> list[Checked]:
    return [Checked(**{f.name: getattr(t, f.name) for f in dataclasses.fields(Target)}, limits=limits)
            for t in targets]


def undetected_many(margins: Margins, targets: list[Target], limits: Limits, stored: list[list[Example]],
                    params: AttackParams) -> list[tuple[Scan, Example | None]]:
    """Per target its check-aware one-edit scan and its sparsest example no check catches (None: none found),
    `method` one of :data:`METHODS`; `stored` the examples the attack keeps per target, each named by its
    kind."""
    ts = checked(targets, limits)
    boxes = [t.box(np.zeros(t.value.shape, np.float32)) for t in ts]
    scans = one_edit.scan_many(margins, [Record(t.value, t.y, t.stats) for t in ts], [b[0] for b in boxes],
                               [b[1] for b in boxes], params.scan_points)
    found: list[list[Example]] = [[] for _ in ts]
    for i, (t, scan) in enumerate(zip(ts, scans, strict=True)):
        found[i] += [e for e in [one_edit_example(scan)] if e is not None and t.passes(e.delta)]
        found[i] += [e for e in stored[i] if e.margin > 0 and t.passes(e.delta)]
    if params.max_edits > 1:
        rest = [i for i, f in enumerate(found) if not any(e.edits == 1 for e in f)]
        raw = search_many(margins, [ts[i] for i in rest], [scans[i] for i in rest], params.max_edits,
                          params.edits_beam, shrink=False)
        have = [(i, e) for i, e in zip(rest, raw, strict=True) if e is not None]
        for (i, e), small in zip(have, shrink_many(margins, [(ts[i], e) for i, e in have]), strict=True):
            kept = small if small.margin > MIN_MARGIN and ts[i].passes(small.delta) else e
            if ts[i].passes(kept.delta):
                found[i].append(kept)
            else:
                log.warning("a check-aware search's example is caught by the checks: left out")
    out = []
    for scan, f in zip(scans, found, strict=True):
        best = min(f, key=Example.rank) if f else None
        if best is not None and best.edits == 1 and not scan.flips[best.delta != 0].any():
            scan.smallest[best.delta != 0] = best.delta[best.delta != 0]  # the map shows every undetected flip
        out.append((scan, best))
    return out


def unflagged_errors(limits: Limits):
    """fewest_errors' `allowed` for the check-aware entry-error search: the errors after which no check raises
    an alarm the clean record would not (an erroneous value, or a genuine neighbour of one, or of a cell that
    lost its only event)."""
    def allowed(clean: np.ndarray, state: State, cand: Candidates) -> np.ndarray:
        edited = records(state, cand)
        ok = np.ones(len(cand), bool)
        for f in np.unique(cand.feature):  # an error changes one feature's series: only its checks can flag it
            rows = cand.feature == f
            column = edited[rows][:, :, f:f + 1]
            ok[rows] = ~caught(np.broadcast_to(clean[None, :, f:f + 1], column.shape), column, limits.of(f))["any"]
        return ok
    return allowed
