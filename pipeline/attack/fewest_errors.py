"""The fewest plausible entry errors that flip a prediction: a beam search with exact checks
(docs/methods.md §9).

Every candidate is evaluated exactly: its record goes through `prepare`'s transform (record.py) and the
model, thousands of candidate records per forward pass. A step tries every single error of the error
model on every state of the beam; a target is flipped at the first step where some candidate's margin
Z_o − Z_t exceeds MIN_MARGIN (the one with the largest margin is kept). Otherwise the beam becomes the
greedy child (the best expansion of the greedy state, so the search finds every flip greedy finds, at
the same step or earlier) and the best other distinct error sets. Each cell is made erroneous at most
once. `beam = 1` is greedy search.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from pipeline.attack.core import Margins
from pipeline.attack.spaces.record import MIN_MARGIN  # a flip must survive being re-derived anywhere
from pipeline.data.entry_errors import Candidates, apply, candidates
from pipeline.data.record import derive_record

ERROR_FIELDS = ("hour", "feature", "kind", "recorded", "erroneous", "dropped", "margin")


@dataclass
class State:
    """A record with some errors made: the errors in order, each with the margin after it."""

    value: np.ndarray  # (time, feature), NaN: not recorded
    count: np.ndarray  # (time, feature) events per cell
    margin: float
    errors: list[dict] = field(default_factory=list)

    @property
    def cells(self) -> set[tuple[int, int]]:
        return {(e["hour"], e["feature"]) for e in self.errors}

    def key(self) -> frozenset:
        return frozenset((e["hour"], e["feature"], e["kind"], e["erroneous"]) for e in self.errors)


@dataclass
class Found:
    """One target's search: whether (and with which errors) it flipped, and what the search cost."""

    flipped: bool
    errors: list[dict]  # the flipping errors, or the path closest to flipping
    margin0: float  # the clean record's margin (negative: correctly classified)
    passes: int  # records evaluated through the model


def inputs(state: State, cand: Candidates, stats: dict[str, np.ndarray]) -> np.ndarray:
    """x of each candidate: the state's input with the candidate's feature column derived again (a feature's
    column of x depends on that feature's record alone)."""
    base = derive_record(state.value[None], stats)[0]
    x = np.repeat(base[None], len(cand), axis=0)
    for f in np.unique(cand.feature):
        rows = np.flatnonzero(cand.feature == f)
        column = np.repeat(state.value[None, :, f], len(rows), axis=0)
        column[np.arange(len(rows)), cand.hour[rows]] = cand.after[rows]
        one = {k: v[f:f + 1] for k, v in stats.items()}
        x[rows, :, f] = derive_record(column[:, :, None], one)[:, :, 0]
    return x


def child(state: State, cand: Candidates, i: int, m: float) -> State:
    value, count = apply(state.value, state.count, int(cand.hour[i]), int(cand.feature[i]), float(cand.after[i]))
    error = {"hour": int(cand.hour[i]), "feature": int(cand.feature[i]), "kind": int(cand.kind[i]),
             "recorded": float(cand.recorded[i]), "erroneous": float(cand.erroneous[i]),
             "dropped": bool(cand.dropped[i]), "margin": float(m)}
    return State(value, count, float(m), [*state.errors, error])


def records(state: State, cand: Candidates) -> np.ndarray:
    """The record (n, time, feature) each candidate leaves: the state's with its cell set to the new mean."""
    out = np.repeat(state.value[None], len(cand), axis=0)
    out[np.arange(len(cand)), cand.hour, cand.feature] = cand.after
    return out


def subset(cand: Candidates, keep: np.ndarray) -> Candidates:
    return Candidates(**{f.name: getattr(cand, f.name)[keep] for f in dataclasses.fields(Candidates)})


# which candidates a search may make (bool per candidate), given the clean record and the state: the
# check-aware search keeps those no check flags (pipeline/attack/undetected.py)
Allowed = Callable[[np.ndarray, State, Candidates], np.ndarray]


def fewest_errors(margins: Margins, value: np.ndarray, count: np.ndarray, y: int, stats: dict[str, np.ndarray],
                  kinds: list[str], max_errors: int, beam: int, allowed: Allowed | None = None) -> Found:
    """The search for one target: `value`/`count` its record (time, feature), `y` its correct class; with
    `allowed`, only the errors it allows are made."""
    start = margins.passes
    margin0 = float(margins(derive_record(value[None], stats), y)[0])
    states = [State(value.astype(np.float64), count.astype(np.int64), margin0)]
    for _ in range(max_errors):
        expanded = []  # (margin, state index, candidates, row)
        for b, state in enumerate(states):
            cand = candidates(state.value, state.count, kinds, skip=state.cells)
            if allowed is not None and len(cand):
                cand = subset(cand, allowed(value, state, cand))
            if len(cand):
                m = margins(inputs(state, cand, stats), y)
                expanded += [(float(m[i]), b, cand, i) for i in range(len(cand))]
        if not expanded:
            break
        best = max(expanded, key=lambda e: e[0])
        if best[0] > MIN_MARGIN:
            return Found(True, child(states[best[1]], best[2], best[3], best[0]).errors, margin0,
                         margins.passes - start)
        ranked = sorted(expanded, key=lambda e: -e[0])
        greedy = next(e for e in ranked if e[1] == 0)  # the best child of the greedy state stays first
        parents, states, seen = states, [], set()
        for m, b, cand, i in [greedy, *ranked]:
            new = child(parents[b], cand, i, m)
            if new.key() not in seen:  # one error set reached in two orders counts once
                seen.add(new.key())
                states.append(new)
            if len(states) == beam:
                break
    closest = max(states, key=lambda s: s.margin)
    return Found(False, closest.errors, margin0, margins.passes - start)
