"""The fewest edits of the record that flip a prediction (docs/methods.md §10).

Per target: the one-edit scan (one_edit.py) settles k = 1 exactly. If no single value flips it, a beam
search adds one edit at a time: from each state of the beam it scores every recorded value not yet
edited at the two ends of its line (the edits that move the model's input furthest down and up, where
the margin is largest for nearly every value: benchmarks/README.md), keeps the greedy child and the best
other distinct sets of cells, and stops at the first depth where some child flips. Each flipping child's
last edit is narrowed to its smallest flipping size, the child with the smallest total edit is taken,
and its edits are shrunk (`shrink_many`: dropped where the flip holds without them, the rest narrowed
towards the recorded values). The same shrinking prunes the L1 attack's best example. Of the examples
found, the one with the fewest edits, then the smallest L1 of the edit, then the larger margin is the
target's best.

Everything runs for a batch of targets in lockstep, so that each step of every target shares the model's
passes (thousands of records per pass, and few passes: what a GPU needs).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import torch

from pipeline.attack import one_edit
from pipeline.attack.core import BEST, FIRST, AttackResult, Margins, margin, rank_key
from pipeline.attack.one_edit import Record, Scan
from pipeline.attack.spaces.record import MIN_MARGIN
from pipeline.config import AttackParams
from pipeline.data.record import derive_record, width

log = logging.getLogger(__name__)

METHODS = ("l1", "scan", "search", "pruned")  # the built-in searches: the first codes of attack.zarr's `method`


@dataclass
class Example:
    """Edits δ (time, feature) of one record (scaled units, float32; 0: not edited), their margin and who
    found them."""

    delta: np.ndarray
    margin: float
    method: str

    @property
    def edits(self) -> int:
        return int((self.delta != 0).sum())

    @property
    def l1(self) -> float:
        return float(np.abs(self.delta.astype(np.float64)).sum())

    def rank(self) -> tuple:
        """The record space's keys (sparser first, then smaller), then the larger margin: core.rank_key."""
        return rank_key((self.edits, self.l1), self.margin)


@dataclass
class Target:
    """What the attack knows of one target: its record, class, the feature statistics and the box of δ."""

    value: np.ndarray  # (time, feature) float64, NaN: not recorded
    y: int
    stats: dict[str, np.ndarray]
    lower: np.ndarray  # (time, feature) float32
    upper: np.ndarray

    def edited(self, delta: np.ndarray) -> np.ndarray:
        """The record with edits δ written in, v + δ·(p95 − p5), as realizable.py re-derives it."""
        w = width(self.stats)
        return np.where(delta != 0, self.value + delta.astype(np.float64) * w, self.value)

    def record(self, delta: np.ndarray) -> Record:
        return Record(self.edited(delta), self.y, self.stats)

    def margin(self, margins: Margins, delta: np.ndarray) -> float:
        return float(full_margins(margins, [(self, delta)])[0])

    def box(self, delta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The range of δ each cell not yet edited may take once the edits `delta` are made: the box (a
        check-aware target narrows it, pipeline/attack/undetected.py)."""
        return self.lower, self.upper


def full_margins(margins: Margins, edited: Iterable[tuple[Target, np.ndarray]]) -> np.ndarray:
    """The margin of each target's record with its edits δ written in, derived in full, in as few passes as
    the batch size allows: `edited` is read, and its records derived, a block of one_edit.BLOCK at a time."""
    def blocks():
        it = iter(edited)
        while block := list(itertools.islice(it, one_edit.BLOCK)):
            groups: dict[int, list[int]] = {}  # one derivation per set of statistics (a run has one)
            for i, (t, _) in enumerate(block):
                groups.setdefault(id(t.stats), []).append(i)
            x = np.empty((len(block), *block[0][1].shape), np.float32)
            for members in groups.values():
                stats = block[members[0]][0].stats
                x[members] = derive_record(np.stack([block[i][0].edited(block[i][1]) for i in members]), stats)
            yield x, np.array([t.y for t, _ in block])

    return margins.stream(blocks())


def without(delta: np.ndarray, cells: list[tuple[int, int]]) -> np.ndarray:
    """δ with the edits of `cells` undone."""
    out = delta.copy()
    for cell in cells:
        out[cell] = 0
    return out


def one_edit_example(scan: Scan) -> Example | None:
    """The scan's smallest flipping edit of any value (scaled units), if one flips."""
    if not scan.flips.any():
        return None
    size = np.where(scan.flips, np.abs(scan.smallest), np.inf)
    h, f = np.unravel_index(np.argmin(size), size.shape)
    delta = np.zeros(scan.smallest.shape, np.float32)
    delta[h, f] = scan.smallest[h, f]
    return Example(delta, float(scan.margin[h, f]), "scan")


def fewest_edits(margins: Margins, target: Target, max_edits: int, beam: int, points: int = one_edit.POINTS,
                 l1: np.ndarray | None = None) -> tuple[Scan, Example | None]:
    """:func:`fewest_edits_many` of one target."""
    return fewest_edits_many(margins, [target], [l1], max_edits, beam, points)[0]


def fewest_edits_many(margins: Margins, targets: list[Target], l1: list[np.ndarray | None], max_edits: int,
                      beam: int, points: int = one_edit.POINTS) -> list[tuple[Scan, Example | None]]:
    """Per target its one-edit scan and its sparsest example — the scan's, the beam search's (up to
    `max_edits` edits), the L1 example `l1` (δ; None: the L1 attack found none) as it is or pruned."""
    scans = one_edit.scan_many(margins, [Record(t.value, t.y, t.stats) for t in targets],
                               [t.lower for t in targets], [t.upper for t in targets], points)
    given = [(i, d.astype(np.float32)) for i, d in enumerate(l1) if d is not None]
    found: list[list[Example]] = [[] for _ in targets]
    for i, scan in enumerate(scans):
        found[i] += [e for e in [one_edit_example(scan)] if e is not None]
    to_prune = []
    for (i, delta), m in zip(given, full_margins(margins, [(targets[i], d) for i, d in given]), strict=True):
        if m > 0:  # the L1 example as it is, so that best is never behind it
            found[i].append(Example(delta, float(m), "l1"))
        if m > MIN_MARGIN:
            to_prune.append((i, Example(delta, float(m), "pruned")))
    for (i, _), pruned in zip(to_prune, shrink_many(margins, [(targets[i], e) for i, e in to_prune]), strict=True):
        found[i].append(pruned)
    if max_edits > 1:
        rest = [i for i, f in enumerate(found) if not any(e.edits == 1 for e in f)]
        for i, e in zip(rest, search_many(margins, [targets[i] for i in rest], [scans[i] for i in rest], max_edits,
                                          beam), strict=True):
            found[i] += [e] if e is not None else []
    return [(scan, min(f, key=Example.rank) if f else None) for scan, f in zip(scans, found, strict=True)]


def search_many(margins: Margins, targets: list[Target], scans: list[Scan], max_edits: int,
                beam: int, shrink: bool = True) -> list[Example | None]:
    """The beam search for k = 2 … max_edits of each target, started from its scan's largest margin per
    value; all targets' steps in the same passes. `shrink`: shrink each example found (shrink_many)."""
    states: dict[int, list[Example]] = {}
    for i, (t, scan) in enumerate(zip(targets, scans, strict=True)):
        scanned = zip(*np.nonzero(np.isfinite(scan.best_margin)), strict=True)
        ranked = sorted(scanned, key=lambda c: -scan.best_margin[c])
        states[i] = []
        for cell in ranked[:beam]:
            delta = np.zeros(t.value.shape, np.float32)
            delta[cell] = scan.best[cell]
            states[i].append(Example(delta, float(scan.best_margin[cell]), "search"))
    out: list[Example | None] = [None] * len(targets)
    for _ in range(2, max_edits + 1):
        children = ends_many(margins, [(i, b, targets[i], s.delta) for i, beam_ in states.items()
                                       for b, s in enumerate(beam_)])
        flipping = {i: [c for c in children.get(i, []) if c[0] > MIN_MARGIN] for i in states}
        done = [i for i in states if flipping[i]]
        for i, child in zip(done, smallest_children(margins, [(targets[i], states[i], flipping[i]) for i in done]),
                            strict=True):
            out[i] = child
        for i in list(states):
            if i in done or not children.get(i):
                del states[i]
                continue
            ranked = sorted(children[i], key=lambda c: -c[0])
            greedy = next(c for c in ranked if c[1] == 0)  # the greedy path stays first in the beam
            new, seen = [], set()
            for m, b, cell, d in [greedy, *ranked]:
                delta = states[i][b].delta.copy()
                delta[cell] = d
                key = frozenset(zip(*np.nonzero(delta), strict=True))
                if key not in seen:
                    seen.add(key)
                    new.append(Example(delta, m, "search"))
                if len(new) == beam:
                    break
            states[i] = new
        if not states:
            break
    kept = [i for i, e in enumerate(out) if e is not None and shrink]
    for i, shrunk in zip(kept, shrink_many(margins, [(targets[i], out[i]) for i in kept]), strict=True):
        out[i] = shrunk
    return out


def ends_many(margins: Margins, states: list[tuple[int, int, Target, np.ndarray]]) -> dict[int, list]:
    """Per target i: (margin, state b, cell, δ) of every recorded value not edited in state b's δ, edited to
    each end of its line."""
    asks, owners = [], []
    for i, b, t, delta in states:
        record = t.record(delta)
        cells = [(int(h), int(f)) for h, f in zip(*np.nonzero(~np.isnan(record.value) & (delta == 0)), strict=True)]
        for cell, line in zip(cells, one_edit.lines(record.value, cells, t.stats, *t.box(delta)), strict=True):
            asks.append((record, cell, line.ends()))
            owners.append((i, b))
    out: dict[int, list] = {i: [] for i, *_ in states}
    for (i, b), (_, cell, ends), ms in zip(owners, asks, one_edit.score(margins, asks), strict=True):
        out[i] += [(float(m), b, cell, d) for d, m in zip(ends, ms, strict=True)]
    return out


def smallest_children(margins: Margins, work: list[tuple[Target, list[Example], list]]) -> list[Example]:
    """Per target: of its flipping children (margin, state, cell, δ at the end of its line), the one whose
    edits are smallest once the last edit is narrowed to the smallest size that flips."""
    brackets, owners, records = [], [], {}
    for k, (t, states, flipping) in enumerate(work):
        for m, b, cell, d in flipping:
            record = records.setdefault((k, b), t.record(states[b].delta))
            brackets.append((record, cell, np.float32(0.0), d, m))
            owners.append((k, b, cell))
    best: list[Example | None] = [None] * len(work)
    for (k, b, cell), (d, m) in zip(owners, one_edit.bisect(margins, brackets), strict=True):
        delta = work[k][1][b].delta.copy()
        delta[cell] = d
        child = Example(delta, m, "search")
        if best[k] is None or child.rank() < best[k].rank():
            best[k] = child
    return best


def shrink_many(margins: Margins, work: list[tuple[Target, Example]]) -> list[Example]:
    """Each target's example with every edit dropped that the flip holds without, then each edit left,
    largest first, narrowed towards the recorded value to the smallest size that keeps the flip.

    Dropping, in rounds until a round drops nothing: the edits ranked by the margin left without each one
    alone, and as many of the top-ranked dropped at once as keep the flip (a bisection over how many; the
    top-ranked is the best single drop, so a round that drops nothing leaves no edit the flip holds
    without). All targets step together."""
    delta = [e.delta.copy() for _, e in work]
    margin_ = [e.margin for _, e in work]
    active = [k for k in range(len(work)) if (delta[k] != 0).sum() > 1]
    while active:
        asked = [(k, c) for k in active for c in zip(*np.nonzero(delta[k]), strict=True)]
        alone = full_margins(margins, ((work[k][0], without(delta[k], [c])) for k, c in asked))
        order = {k: [c for _, c in sorted([(-m, c) for (j, c), m in zip(asked, alone, strict=True) if j == k])]
                 for k in active}
        bounds = {k: (0, len(order[k])) for k in active}  # dropping `fewer` keeps the flip, `more` does not
        while open_ := [k for k, (fewer, more) in bounds.items() if more - fewer > 1]:
            mids = {k: sum(bounds[k]) // 2 for k in open_}
            m = full_margins(margins, ((work[k][0], without(delta[k], order[k][:mids[k]])) for k in open_))
            for k, mk in zip(open_, m, strict=True):
                bounds[k] = (mids[k], bounds[k][1]) if mk > MIN_MARGIN else (bounds[k][0], mids[k])
        dropped = [k for k in active if bounds[k][0]]
        for k in dropped:
            delta[k] = without(delta[k], order[k][:bounds[k][0]])
        for k, m in zip(dropped, full_margins(margins, [(work[k][0], delta[k]) for k in dropped]), strict=True):
            margin_[k] = float(m)
        active = [k for k in dropped if (delta[k] != 0).sum() > 1]
    order = [sorted(zip(*np.nonzero(d), strict=True), key=lambda c: -abs(d[c])) for d in delta]
    for rank in range(max((len(o) for o in order), default=0)):
        mine = [k for k in range(len(work)) if len(order[k]) > rank]
        brackets = [(work[k][0].record(without(delta[k], [order[k][rank]])), order[k][rank], np.float32(0.0),
                     delta[k][order[k][rank]], margin_[k]) for k in mine]
        for k, (d, m) in zip(mine, one_edit.bisect(margins, brackets), strict=True):
            delta[k][order[k][rank]], margin_[k] = d, m
    return [Example(d, m, e.method) for d, m, (_, e) in zip(delta, margin_, work, strict=True)]


# A further search that feeds best: given the margins, the targets, their one-edit scans and the parameters,
# an example (its `method` its own name) or None per target. The record space's wiring names them.
Search = Callable[[Margins, list[Target], list[Scan], AttackParams], list[Example | None]]


@dataclass
class Batch:
    """A batch's examples of every kind of the record space (RecordWiring.KINDS in
    pipeline/attack/wiring/record.py) and its one-edit scans."""

    result: AttackResult  # (n, 3, …): first, best, l1_best
    method: np.ndarray  # (n, 3) int8 index into METHODS and then the further searches' names; -1: no example
    one_edit: np.ndarray  # (n, time, feature) float32 δ of each value's smallest flipping edit; NaN: none
    one_edit_margin: np.ndarray  # (n, time, feature) float32 the largest margin that value alone reaches
    undetected: list | None = None  # per target (check-aware scan, example or None): pipeline/attack/undetected.py


def sparsest(model: torch.nn.Module, result: AttackResult, targets: list[Target], params: AttackParams,
             batch_size: int = 4096, further: Mapping[str, Search] | None = None) -> Batch:
    """The L1 attack's `result` (first, best) of a batch of record-space targets, with the one-edit scan and
    the fewest-edit search of each, and the `further` searches (by name, in order): kinds first, best (the
    sparsest of all, by Example.rank; a tie keeps the earlier search), l1_best (the L1 attack's own)."""
    further = dict(further or {})
    methods = METHODS + tuple(further)
    margins = Margins(model, batch_size)
    n, shape = len(targets), targets[0].value.shape if targets else (0, 0)
    l1_found = result.found[:, BEST].cpu().numpy()
    l1_delta = result.perturbation[:, BEST].cpu().numpy()
    searched = fewest_edits_many(margins, targets, [d if f else None for d, f in zip(l1_delta, l1_found, strict=True)],
                                 params.max_edits, params.edits_beam, params.scan_points)
    for name, search in further.items():
        scans = [s for s, _ in searched]
        for i, e in enumerate(search(margins, targets, scans, params)):
            if e is not None and e.method != name:
                raise ValueError(f"the search {name!r} returned an example of method {e.method!r}")
            if e is not None and e.margin > MIN_MARGIN and (searched[i][1] is None
                                                            or e.rank() < searched[i][1].rank()):
                searched[i] = (searched[i][0], e)
    chosen = np.zeros((n, *shape), np.float32)
    found = np.zeros(n, bool)
    method = np.full((n, 3), -1, np.int8)
    for i, (scan, example) in enumerate(searched):
        if example is None:
            continue
        chosen[i], found[i], method[i, 1] = example.delta, True, methods.index(example.method)
        edited = example.delta != 0
        if example.edits == 1 and not scan.flips[edited].any():
            # a single edit another search found is one the scan missed: the map must still show it
            log.warning("the one-edit scan missed a flip by one value that the %s found", example.method)
            scan.smallest[edited] = example.delta[edited]
    one_edit_delta = np.stack([s.smallest for s, _ in searched]) if n else np.zeros((0, *shape), np.float32)
    one_edit_margin = np.stack([np.where(np.isfinite(s.best_margin), s.best_margin, np.nan) for s, _ in searched]) \
        if n else np.zeros((0, *shape))
    method[:, 0] = np.where(result.found[:, FIRST].cpu().numpy(), 0, -1)
    method[:, 2] = np.where(l1_found, 0, -1)
    best = evaluate(model, targets, chosen, found, result.perturbation.device)
    keep = lambda a, b: torch.stack([a[:, FIRST], b, a[:, BEST]], dim=1)  # noqa: E731
    combined = AttackResult(
        keep(result.perturbation, best.perturbation), keep(result.found, best.found),
        keep(result.iteration, torch.full_like(result.iteration[:, 0], -1)),
        keep(result.margin, best.margin), keep(result.lam, torch.full_like(result.lam[:, 0], float("nan"))),
        keep(result.logits, best.logits))
    return Batch(combined, method, one_edit_delta, one_edit_margin.astype(np.float32))


@torch.no_grad()
def evaluate(model: torch.nn.Module, targets: list[Target], delta: np.ndarray, found: np.ndarray,
             device: torch.device) -> AttackResult:
    """One kind of example (n, time, feature) as the L1 attack's result holds it: δ, found, the logits and
    margin of the input derived from the edited record (NaN where none)."""
    n = len(targets)
    logits = torch.full((n, 2), float("nan"), device=device)
    rows = np.flatnonzero(found)
    if len(rows):
        x = np.concatenate([derive_record(targets[i].edited(delta[i])[None], targets[i].stats) for i in rows])
        logits[torch.from_numpy(rows).to(device)] = model(torch.from_numpy(x).to(device)).float()
    y = torch.tensor([t.y for t in targets], dtype=torch.long, device=device)
    m = torch.where(torch.from_numpy(found).to(device), margin(logits, y), float("nan"))
    return AttackResult(torch.from_numpy(delta).to(device), torch.from_numpy(found).to(device), None, m, None,
                        logits)
