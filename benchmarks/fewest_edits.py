"""The fewest edits of the record that flip a prediction: the attack stage's search against a greedy
reference, the L1 attack's own examples and σ-zero (adv-lib), on one run's model and targets
(docs/methods.md §10).

    python benchmarks/fewest_edits.py RUN_DIR [--targets N] [--scan-targets 100] [--device cpu]
        [--skip-sigma-zero] [--json FILE]

Targets: the correctly classified samples of the run's test set (the stage's own `select_targets`), all
of them unless --targets. Every method is scored the same way: its example written into the record,
the model's input derived as `prepare` derives it, flipped when the margin Z_o − Z_t exceeds the record
space's 10⁻³; "k" is the number of edited recorded values. Rows:

- **scan convergence**: the one-edit scan at several densities against a 16× denser one, on the first
  --scan-targets targets: flippable values missed or added, and the smallest flipping edits' ratio;
- **L1 attack**: the attack stage's L1 attack (the run's tuned λ and step), its own sparsest iterate;
- **this project**: the one-edit scan, the fewest-edit search and the pruned L1 example, as the stage
  runs them (pipeline/attack/fewest_edits.py), given the L1 attack's examples (their cost is the L1 row's);
- **greedy reference**: written here independently of the stage's code: each step tries every recorded
  value not yet edited at 32 values evenly spread over its plausible range (clipped to 3 p5…p95 widths
  beyond p5 and p95, where the input stops moving for all but the longest interpolations), each record
  derived in full, and keeps the single edit that raises the margin most, up to 3 edits;
- **σ-zero** (Cinofix et al. 2024, adv-lib 0.2.8, its defaults, 1,000 steps): an L0 attack on inputs in
  [0, 1]; here its input is u ∈ [0, 1] per recorded value, the edit δ = lower + u · (upper − lower) of the
  record space's box, so that it searches exactly the edits the other methods search.

σ-zero comes from adv-lib without its dependencies (torchvision is only needed by other attacks):
``pip install --no-deps --target DIR adv-lib==0.2.8`` and ``PYTHONPATH=DIR``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from pipeline.attack.core import BEST, Margins
from pipeline.attack.fewest_edits import Target, fewest_edits
from pipeline.attack.l1 import L1Attack
from pipeline.attack.one_edit import MIN_MARGIN, scan
from pipeline.attack.targets import TargetInputs, select_targets
from pipeline.attack.wiring.record import record_targets
from pipeline.config import AttackConfig
from pipeline.data.record import derive_record, width
from pipeline.infra.launch import tuned
from pipeline.infra.rundir import RunDir
from pipeline.model import load_model

KS = (1, 2, 3)


def flips_at(k: list[int]) -> dict[str, int]:
    """Targets flipped by ≤ 1, 2, 3 edits; `k` per target (0: not flipped)."""
    k = np.array(k)
    return {**{f"le_{j}": int(((k > 0) & (k <= j)).sum()) for j in KS}, "any": int((k > 0).sum()),
            "median_edits": float(np.median(k[k > 0])) if (k > 0).any() else float("nan")}


def edits_if_flipped(margins: Margins, t: Target, delta: np.ndarray | None) -> int:
    """The number of edits of δ if its record, derived in full, flips the target (margin > 0, as analyze's
    realizability check: each search keeps its own guard of 10⁻³ above that, which a re-derivation in
    another batch may move by a few 10⁻⁹); 0 otherwise."""
    if delta is None or not (delta != 0).any():
        return 0
    return int((delta != 0).sum()) if t.margin(margins, delta) > 0 else 0


def scan_convergence(model, targets: list[Target], densities: list[int], reference: int) -> list[dict]:
    ref_margins = Margins(model, 4096)
    ref = [scan(ref_margins, t.value, t.y, t.stats, t.lower, t.upper, reference) for t in targets]
    rows = []
    for points in densities:
        margins = Margins(model, 4096)
        started = time.process_time()
        got = [scan(margins, t.value, t.y, t.stats, t.lower, t.upper, points) for t in targets]
        seconds = time.process_time() - started
        both = [a.flips & b.flips for a, b in zip(got, ref, strict=True)]
        ratio = np.concatenate([np.abs(a.smallest[m]) / np.abs(b.smallest[m]) for a, b, m in zip(got, ref, both,
                                                                                                  strict=True)])
        rows.append({"points": points, "reference": reference, "targets": len(targets),
                     "flippable_targets": sum(bool(a.flips.any()) for a in got),
                     "reference_flippable_targets": sum(bool(b.flips.any()) for b in ref),
                     "values_missed": int(sum(((~a.flips) & b.flips).sum() for a, b in zip(got, ref, strict=True))),
                     "values_added": int(sum((a.flips & ~b.flips).sum() for a, b in zip(got, ref, strict=True))),
                     "smallest_ratio_min": float(ratio.min()) if ratio.size else None,
                     "smallest_ratio_max": float(ratio.max()) if ratio.size else None,
                     "passes_per_target": margins.passes / len(targets), "cpu_s_per_target": seconds / len(targets)})
    return rows


def greedy_reference(margins: Margins, t: Target, max_edits: int = 3, points: int = 32) -> int:
    """Edits of the greedy continuous search's flip (0: none within max_edits), see the module: it stops at
    max_edits, so its "flipped at all" is its ≤ 3."""
    w = width(t.stats)
    delta = np.zeros(t.value.shape, np.float32)
    for k in range(1, max_edits + 1):
        value = t.edited(delta)
        records, moves = [], []
        for h, f in zip(*np.nonzero(~np.isnan(value) & (delta == 0)), strict=True):
            lo = max(float(t.lower[h, f]), (t.stats["p5"][f] - 3 * w[f] - value[h, f]) / w[f])
            hi = min(float(t.upper[h, f]), (t.stats["p95"][f] + 3 * w[f] - value[h, f]) / w[f])
            for d in np.linspace(lo, hi, points).astype(np.float32):
                if d != 0:
                    trial = delta.copy()
                    trial[h, f] = d
                    records.append(t.edited(trial))
                    moves.append(trial)
        if not records:
            return 0
        m = margins(derive_record(np.stack(records), t.stats), t.y)
        best = int(np.argmax(m))
        if m[best] > MIN_MARGIN:
            return k
        delta = moves[best]
    return 0


def load_sigma_zero():
    """adv-lib's σ-zero, from its own file (importing adv_lib.attacks would need torchvision)."""
    spec = importlib.util.find_spec("adv_lib")
    if spec is None:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "attacks" / "sigma_zero.py"
    module_spec = importlib.util.spec_from_file_location("adv_lib_sigma_zero", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.sigma_zero


class OnTheBox(torch.nn.Module):
    """The model on u ∈ [0, 1] per cell: δ = lower + u · (upper − lower), the record space's input of δ."""

    def __init__(self, model: torch.nn.Module, space):
        super().__init__()
        self.model, self.space = model, space
        self.span = space.upper - space.lower

    def delta(self, u: torch.Tensor) -> torch.Tensor:
        return self.space.lower + u * self.span

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.model(self.space.input(self.delta(u)))

    def origin(self) -> torch.Tensor:
        """u of δ = 0 (0 where the cell cannot move)."""
        return torch.where(self.span > 0, -self.space.lower / self.span.clamp(min=1e-30), 0.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--targets", type=int, default=None, help="the first N targets (default: all)")
    ap.add_argument("--scan-targets", type=int, default=100)
    ap.add_argument("--densities", type=int, nargs="+", default=[4, 8, 16])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--skip-sigma-zero", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    run, device = RunDir(args.run_dir), torch.device(args.device)
    chosen = select_targets(run, "test")
    chosen = chosen if args.targets is None else chosen.head(args.targets)
    index, y = chosen.dataset_index.to_numpy(), chosen.y.to_numpy().astype(np.int64)
    inputs = TargetInputs.load(run, index, "record")
    targets = record_targets(inputs, y, slice(None))
    params, source = tuned(run, "tune-attack", AttackConfig())
    model = load_model(run.path, device)
    rows = {}

    convergence = scan_convergence(model, targets[:args.scan_targets], args.densities, 16 * max(args.densities)) \
        if args.scan_targets else []

    started, l1 = time.process_time(), []
    attack = L1Attack(load_model(run.path, device), params)
    for b in range(0, len(targets), args.batch):
        rows_ = slice(b, min(b + args.batch, len(targets)))
        result = attack.run(inputs.space(params, device, rows_), torch.from_numpy(y[rows_]))
        l1 += [d if f else None for d, f in zip(result.perturbation[:, BEST].cpu().numpy(),
                                                result.found[:, BEST].cpu().numpy(), strict=True)]
    seconds = time.process_time() - started
    check = Margins(model, 4096)
    own = [edits_if_flipped(check, t, d) for t, d in zip(targets, l1, strict=True)]
    rows["L1 attack (its own sparsest iterate)"] = {
        **flips_at(own), "k": own,
        "passes_per_target": f"{params.max_iter + 1} fwd + {params.max_iter} bwd",
        "cpu_s_per_target": seconds / len(targets)}

    margins, started, found, methods = Margins(model, 4096), time.process_time(), [], {}
    for t, d in zip(tqdm(targets, desc="this project", unit="target"), l1, strict=True):
        _, example = fewest_edits(margins, t, params.max_edits, params.edits_beam, params.scan_points, d)
        found.append(edits_if_flipped(check, t, example.delta) if example is not None else 0)
        methods[example.method if example is not None else "none"] = methods.get(
            example.method if example is not None else "none", 0) + 1
    rows["this project (scan + search + pruned L1)"] = {
        **flips_at(found), "k": found, "passes_per_target": margins.passes / len(targets),
        "cpu_s_per_target": (time.process_time() - started) / len(targets), "found_by": methods}

    margins, started = Margins(model, 4096), time.process_time()
    greedy = [greedy_reference(margins, t) for t in tqdm(targets, desc="greedy reference", unit="target")]
    rows["greedy reference (32 values per edit)"] = {
        **flips_at(greedy), "k": greedy, "passes_per_target": margins.passes / len(targets),
        "cpu_s_per_target": (time.process_time() - started) / len(targets)}

    sigma_zero = None if args.skip_sigma_zero else load_sigma_zero()
    if sigma_zero is not None:
        started, k = time.process_time(), []
        for b in range(0, len(targets), args.batch):
            rows_ = slice(b, min(b + args.batch, len(targets)))
            box = OnTheBox(attack.model, inputs.space(params, device, rows_))
            u = sigma_zero(box, box.origin(), torch.from_numpy(y[rows_]).to(device))
            delta = box.delta(u).detach().cpu().numpy().astype(np.float32)
            delta[np.abs(delta) < 1e-7] = 0  # u back at its origin: no edit (float rounding of lower + u · span)
            k += [edits_if_flipped(check, t, d) for t, d in zip(targets[rows_], delta, strict=True)]
        rows["σ-zero (adv-lib 0.2.8, defaults)"] = {
            **flips_at(k), "k": k, "passes_per_target": "1000 fwd + 1000 bwd",
            "cpu_s_per_target": (time.process_time() - started) / len(targets)}

    machine = f"{platform.node()} {platform.processor() or platform.machine()}, torch {torch.__version__}, " \
              f"{args.device}, 1 thread"
    print(f"# {args.run_dir}: {len(targets)} targets; L1 parameters from {source}; {machine}; "
          f"{time.strftime('%Y-%m-%d')}\n")
    print("| scan points per range | vs | targets | flippable targets (vs) | values missed | values added | "
          "smallest edit ratio | passes / target | CPU s / target |")
    print("|---:|---:|---:|---|---:|---:|---|---:|---:|")
    for r in convergence:
        ratio = f"{r['smallest_ratio_min']:.5f}…{r['smallest_ratio_max']:.5f}" if r["smallest_ratio_min"] else "–"
        print(f"| {r['points']} | {r['reference']} | {r['targets']} | {r['flippable_targets']} "
              f"({r['reference_flippable_targets']}) | {r['values_missed']} | {r['values_added']} | {ratio} | "
              f"{r['passes_per_target']:,.0f} | {r['cpu_s_per_target']:.3f} |")
    print(f"\n| method | flipped by ≤ 1 | ≤ 2 | ≤ 3 (of {len(targets)}) | flipped at all | median edits | "
          "model passes / target | CPU s / target |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in rows.items():
        passes = r["passes_per_target"] if isinstance(r["passes_per_target"], str) else f"{r['passes_per_target']:,.0f}"
        print(f"| {name} | {r['le_1']} | {r['le_2']} | {r['le_3']} | {r['any']} | {r['median_edits']:g} | {passes} | "
              f"{r['cpu_s_per_target']:.2f} |")
    ours, ref = rows["this project (scan + search + pruned L1)"], rows["greedy reference (32 values per edit)"]
    print(f"\nfound by: {ours['found_by']}; goal (≤ 2 and ≤ 3 at least the greedy reference's): "
          f"{'met' if ours['le_2'] >= ref['le_2'] and ours['le_3'] >= ref['le_3'] else 'NOT met'}")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "targets": len(targets), "scan": convergence,
                                         "methods": rows}, indent=2, default=str))


if __name__ == "__main__":
    main()
