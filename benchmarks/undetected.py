"""Would the checks catch it? The check-aware searches against a greedy reference, their cost against the
unconstrained searches, and the checks' trade-off (docs/methods.md §11).

    python benchmarks/undetected.py RUN_DIR [--targets 100] [--json FILE] [--figure FILE.png]

RUN_DIR: a record-space run whose attack stage ran with the checks (attack.zarr keeps their limits and the
`undetected_*` examples). Targets: the first --targets of attack.zarr (its targets in order). Every
example is scored the same way: written into the record, the model's input derived as `prepare` derives
it, flipped when the margin exceeds the record space's 10⁻³, and passing when `caught` raises no alarm.

- **report**: the share of the targets whose stored undetected example has ≤ 1 / 2 / 3 edits;
- **greedy reference**, written here independently of the searches' code: each step tries every recorded
  value not yet edited at 32 values evenly spread over the values no check flags there given the record as
  edited so far (the range limits, the delta limits from its recorded neighbours), inside the attack's box
  and within 3 p5…p95 widths of p5 and p95, each record derived in full, and keeps the edit that raises
  the margin most, up to 3 edits;
- **cost**: the unconstrained one-edit scan and fewest-edit search (`fewest_edits_many`) against the
  check-aware ones (`undetected_many`) on the same targets: records through the model and CPU seconds;
- **trade-off**: delta limits derived at central ranges 90 … 99.9% of the training records' changes (the
  range limits as the run's): the per-value false-alarm rate on the targets' clean records, and the share of
  the targets flipped by ≤ 1 / ≤ 3 edits no check flags (`undetected_many`, as the stage runs it).
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import xarray as xr
from tqdm.auto import tqdm

from pipeline.attack.core import Margins
from pipeline.attack.fewest_edits import Example, Target, fewest_edits_many
from pipeline.attack.one_edit import MIN_MARGIN
from pipeline.attack.targets import TargetInputs
from pipeline.attack.undetected import undetected_many
from pipeline.attack.wiring.record import record_targets
from pipeline.checks.limits import Limits, bounds, caught, derive, false_alarm_rate
from pipeline.checks.source import training_records
from pipeline.checks.table import from_store
from pipeline.config import AttackParams
from pipeline.data.record import derive_record, width
from pipeline.infra.rundir import RunDir
from pipeline.model import load_model

KS = (1, 2, 3)
CENTRAL = (0.90, 0.95, 0.98, 0.99, 0.995, 0.999)


def shares(k: np.ndarray) -> list[float]:
    """Share of targets flipped by ≤ 1, 2, 3 edits; `k` per target (0: not flipped)."""
    return [float(((k > 0) & (k <= j)).mean()) for j in KS]


def greedy_reference(margins: Margins, t: Target, limits: Limits, max_edits: int = 3, points: int = 32) -> int:
    """Edits of the greedy check-passing search's flip (0: none within max_edits), see the module."""
    w = width(t.stats)
    delta = np.zeros(t.value.shape, np.float32)
    for k in range(1, max_edits + 1):
        value = t.edited(delta)
        lo_ok, hi_ok = (b[0] for b in bounds(value[None], limits))
        records, moves = [], []
        for h, f in zip(*np.nonzero(~np.isnan(value) & (delta == 0)), strict=True):
            v = t.value[h, f]
            if not lo_ok[h, f] <= v <= hi_ok[h, f]:
                continue  # a value the clean record's checks flag already
            lo = max(float(t.lower[h, f]), (t.stats["p5"][f] - 3 * w[f] - v) / w[f], (lo_ok[h, f] - v) / w[f])
            hi = min(float(t.upper[h, f]), (t.stats["p95"][f] + 3 * w[f] - v) / w[f], (hi_ok[h, f] - v) / w[f])
            inset = 1e-6 * (hi - lo)  # float32 rounding must not carry an end past a limit
            for d in np.linspace(lo + inset, hi - inset, points).astype(np.float32):
                if d != 0:
                    trial = delta.copy()
                    trial[h, f] = d
                    records.append(t.edited(trial))
                    moves.append(trial)
        if not records:
            return 0
        m = margins(derive_record(np.stack(records), t.stats), t.y)
        for best in np.argsort(-m):
            if not caught(t.value[None], records[best][None], limits)["any"][0]:
                break  # the best edit no check flags (the grid's ends may round past a limit)
        if m[best] > MIN_MARGIN:
            return k
        delta = moves[best]
    return 0


def stored_examples(attack: xr.Dataset, rows: range) -> list[list[Example]]:
    out = []
    for i in rows:
        kinds = [str(k) for k in attack.kind.values]
        out.append([Example(attack["edit"].values[i, j], float(attack.margin.values[i, j]), kind)
                    for j, kind in enumerate(kinds) if attack.found.values[i, j]])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--targets", type=int, default=100)
    parser.add_argument("--json", default="")
    parser.add_argument("--figure", default="", help="also draw the trade-off (PNG) here")
    args = parser.parse_args()
    run = RunDir(args.run_dir)
    attack = xr.open_zarr(run.path / "attack.zarr", consolidated=False).load()
    limits = from_store(attack, str(run.path / "attack.zarr"))
    params = AttackParams(**{k: v for k, v in attack.attrs["attack_config"].items()
                             if k in AttackParams.__dataclass_fields__})
    n = min(args.targets, attack.sizes["sample"])
    rows = range(n)
    inputs = TargetInputs.load(run, attack.dataset_index.values[:n], "record")
    targets = record_targets(inputs, attack.y.values[:n].astype(int), slice(None))
    model = load_model(run.path)
    out: dict = {"machine": f"{platform.processor() or platform.machine()}, CPU", "targets": n}

    searched = np.where(attack.undetected_method.values[:n] >= 0,
                        (attack.undetected_edit.values[:n] != 0).sum(axis=(1, 2)), 0)
    out["report"] = shares(searched)
    margins = Margins(model, 4096)
    start = time.process_time()
    greedy = np.array([greedy_reference(margins, t, limits) for t in tqdm(targets, desc="greedy reference")])
    out["greedy"] = shares(greedy)
    out["greedy_cost"] = {"records": margins.passes, "cpu_s": time.process_time() - start}
    out["per_target_report_below_greedy"] = int(((greedy > 0) & ((searched == 0) | (searched > greedy))).sum())

    stored = stored_examples(attack, rows)
    cost = {}
    for name, run_search in (
            ("unconstrained", lambda m: fewest_edits_many(m, targets, [None] * n, params.max_edits, params.edits_beam,
                                                          params.scan_points)),
            ("check-aware", lambda m: undetected_many(m, targets, limits, stored, params))):
        m = Margins(model, 4096)
        start = time.process_time()
        run_search(m)
        cost[name] = {"records": m.passes, "cpu_s": time.process_time() - start}
    out["cost"] = cost

    train = training_records(run)
    clean = inputs.value
    checks = attack.attrs["checks"]
    tradeoff = []
    for central in tqdm(CENTRAL, desc="trade-off"):
        tail = (1 - central) / 2
        lim = derive(train, tuple(checks["range_quantiles"]), (tail, 1 - tail), checks.get("within_hours"))
        found = undetected_many(Margins(model, 4096), targets, lim, stored_examples(attack, rows), params)
        k = np.array([e.edits if e is not None else 0 for _, e in found])
        s = shares(k)
        tradeoff.append({"delta_central": central, "false_alarm": false_alarm_rate(clean, lim)["any"],
                         "undetected_le_1": s[0], "undetected_le_3": s[2]})
    out["tradeoff"] = tradeoff
    out["false_alarm_run_limits"] = false_alarm_rate(clean, limits)

    pct = lambda v: f"{100 * v:.1f}%"  # noqa: E731
    print(f"{out['machine']}, {n} targets of {args.run_dir}; the run's checks flag "
          f"{pct(out['false_alarm_run_limits']['any'])} of the targets' clean recorded values")
    print("| flipped by edits no check flags | ≤ 1 | ≤ 2 | ≤ 3 |\n|---|---:|---:|---:|")
    print("| report (attack.zarr `undetected_edit`) | " + " | ".join(pct(v) for v in out["report"]) + " |")
    print("| greedy reference | " + " | ".join(pct(v) for v in out["greedy"]) + " |")
    print("targets the greedy reference flips with fewer edits than the report:",
          out["per_target_report_below_greedy"])
    print("\n| searches | records through the model | CPU s |\n|---|---:|---:|")
    for name, c in {**cost, "greedy reference": out["greedy_cost"]}.items():
        print(f"| {name} | {c['records']:,} | {c['cpu_s']:.1f} |")
    print("\n| delta limits (central range) | false alarms per value | ≤ 1 undetected | ≤ 3 undetected |"
          "\n|---:|---:|---:|---:|")
    for r in tradeoff:
        print(f"| {100 * r['delta_central']:g}% | {pct(r['false_alarm'])} | {pct(r['undetected_le_1'])} | "
              f"{pct(r['undetected_le_3'])} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    if args.figure:
        tradeoff_figure(tradeoff, out["false_alarm_run_limits"]["any"], n, args.figure)


def tradeoff_figure(rows: list[dict], run_alarm: float, n: int, path: str) -> None:
    """The per-value false-alarm rate against the share of targets flipped by ≤ 1 and ≤ 3 edits no check
    flags, one point per delta-limit setting (labelled by its central range)."""
    import matplotlib  # here: only --figure draws

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.2), constrained_layout=True)
    alarm = [100 * r["false_alarm"] for r in rows]
    for key, name in (("undetected_le_1", "≤ 1 edit"), ("undetected_le_3", "≤ 3 edits")):
        ax.plot(alarm, [100 * r[key] for r in rows], marker="o", label=name)
    for r, a in zip(rows, alarm, strict=True):
        ax.annotate(f"{100 * r['delta_central']:g}%", (a, 100 * r["undetected_le_3"]), textcoords="offset points",
                    xytext=(4, 4), fontsize=8)
    ax.axvline(100 * run_alarm, color="grey", linestyle=":", label="the run's limits")
    ax.set_xscale("log")
    ax.set_xlabel("false alarms: % of the clean targets' recorded values flagged")
    ax.set_ylabel(f"% of {n} targets flipped unnoticed")
    ax.set_title("wider delta limits (central range of the training changes) let more flips through", fontsize=9)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
