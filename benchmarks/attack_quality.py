"""The project's L1 attack against a published EAD implementation (foolbox 3), same model, same targets.

EAD (Chen et al. 2018) as foolbox 3's ``EADAttack`` with the EAD paper's budget: 9 steps of the
search over its constant c (from 1e-3, ×10 until bracketed, then bisection), 1,000 FISTA steps
each, β = 0.01, examples chosen by the L1 decision rule, early abort as implemented. The project's
attack runs as the run would run it: the defaults of ``[attack]`` with the run's tuned values
(``tune-attack/best.json``) when it has them.

Targets: the first N correctly classified samples of the run's test set (by dataset index). Both
attacks see the same model through one wrapper that counts samples through the forward pass and
through the backward pass, so "passes per target" is measured, not assumed. Every example is
checked afterwards: x + P inside [0, 1] and the model's prediction flipped. On a GPU the project's
attack of the first 32 targets is also run on the CPU, to check the CUDA path: the share of targets
with the same outcome and the difference of the best examples' L1.

    python benchmarks/attack_quality.py runs/default [--targets 128] [--device cuda]

Needs the pipeline and foolbox (``pip install -e '.[bench]'``): targets and parameters are chosen by
the attack stage's own functions, so the benchmark attacks what the run attacks.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from pipeline.attack.core import BEST
from pipeline.attack.l1 import L1Attack, frozen
from pipeline.attack.targets import TargetInputs, select_targets
from pipeline.config import AttackConfig
from pipeline.infra.launch import tuned
from pipeline.infra.rundir import RunDir
from pipeline.model import load_model
from pipeline.susceptibility.report import model_lines


class Counted(torch.nn.Module):
    """The model, counting samples through forward and backward passes."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.forward_samples = self.backward_samples = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.forward_samples += len(x)
        out = self.model(x)
        if out.requires_grad:
            n = len(x)
            out.register_hook(lambda grad: self._backward(n, grad))
        return out

    def _backward(self, n: int, grad: torch.Tensor) -> None:
        self.backward_samples += n


def load_targets(run: Path, n: int, device: torch.device):
    """x (n, 48, 19), labels, dataset indices of the first n correctly classified test samples (the
    attack stage's own choice of targets, `select_targets`)."""
    targets = select_targets(RunDir(run), "test").head(n)
    index = targets.dataset_index.to_numpy()
    x = torch.from_numpy(TargetInputs.load(RunDir(run), index, "tensor").x).to(device)
    return x, torch.from_numpy(targets.y.to_numpy().astype(np.int64)).to(device), index


def project_params(run: Path, use_tuned: bool) -> tuple[AttackConfig, str]:
    """The attack stage's parameters: [attack]'s defaults with the run's tuned values (`tuned`)."""
    return tuned(RunDir(run), "tune-attack", AttackConfig()) if use_tuned else (AttackConfig(), "defaults")


def summarize(name: str, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, adv: torch.Tensor,
              claimed: torch.Tensor, counted: Counted, seconds: float) -> dict:
    """Success (verified), median L0 / L1 / L∞ of the successful examples, passes per target."""
    p = (adv - x).detach()
    with torch.no_grad():
        flipped = model(x + p).argmax(1) != y
    inside = ((x + p) >= 0).all(dim=(1, 2)) & ((x + p) <= 1).all(dim=(1, 2))
    ok = (claimed & flipped & inside).cpu()
    a = p.abs().cpu()
    l0, l1, linf = (a > 0).sum(dim=(1, 2)).float(), a.sum(dim=(1, 2)), a.amax(dim=(1, 2))

    def median(v: torch.Tensor) -> float:
        return float(v[ok].median()) if ok.any() else float("nan")

    return {"attack": name, "targets": len(x), "success": float(ok.float().mean()),
            "claimed_not_verified": int((claimed.cpu() & ~ok).sum()),
            "median_l0": median(l0), "median_l1": median(l1), "median_linf": median(linf),
            "share_l0_le_10": float((ok & (l0 <= 10)).float().mean()),
            "forward_per_target": counted.forward_samples / len(x),
            "backward_per_target": counted.backward_samples / len(x), "seconds": seconds}


def cuda_vs_cpu(run: Path, x: torch.Tensor, y: torch.Tensor, params: AttackConfig, on_gpu) -> None:
    on_cpu = L1Attack(load_model(run), params).run(x.cpu(), y.cpu())
    found_gpu, found_cpu = on_gpu.found[:len(x), BEST].cpu(), on_cpu.found[:, BEST]
    both = found_gpu & found_cpu
    l1_gpu, l1_cpu = on_gpu.l1[:len(x), BEST].cpu()[both], on_cpu.l1[both, BEST]
    same = float((found_gpu == found_cpu).float().mean())
    print(f"\nCUDA vs CPU, the first {len(x)} targets: same outcome for {100 * same:.0f}%; "
          f"median best L1 {float(l1_gpu.median()):.3f} (CUDA) vs {float(l1_cpu.median()):.3f} (CPU), largest "
          f"relative difference per target {float(((l1_gpu - l1_cpu).abs() / l1_cpu).max()):.1%}")


def timed(fn):
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--targets", type=int, default=128)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--ead-steps", type=int, default=1000)
    ap.add_argument("--ead-search", type=int, default=9, help="EAD's search steps over its constant")
    ap.add_argument("--ead-beta", type=float, default=0.01, help="EAD's L1 weight β")
    ap.add_argument("--defaults", action="store_true", help="ignore the run's tune-attack/best.json")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    import foolbox  # a benchmark-only dependency

    torch.manual_seed(0)
    device = torch.device(args.device)
    model = load_model(args.run_dir, device)
    x, y, index = load_targets(args.run_dir, args.targets, device)
    params, source = project_params(args.run_dir, not args.defaults)

    counted = Counted(load_model(args.run_dir, device))
    result, seconds = timed(lambda: L1Attack(counted, params).run(x, y))
    ours = summarize("this project (L1Attack)", model, x, y, x + result.perturbation[:, BEST], result.found[:, BEST],
                     counted, seconds)

    counted = frozen(Counted(load_model(args.run_dir, device)))  # as the project's attack sees it
    ead = foolbox.attacks.EADAttack(binary_search_steps=args.ead_search, steps=args.ead_steps,
                                    regularization=args.ead_beta, decision_rule="L1")
    (_, adv, success), seconds = timed(lambda: ead(foolbox.PyTorchModel(counted, bounds=(0, 1)), x, y,
                                                   epsilons=None))
    # where EAD found nothing, foolbox returns its initial buffer, the all-zero input, which the model may
    # happen to classify as the other class: that is a failure, not an example
    success &= adv.flatten(1).abs().sum(1) > 0
    theirs = summarize(f"foolbox {foolbox.__version__} EADAttack", model, x, y, adv, success, counted, seconds)

    machine = (torch.cuda.get_device_name() if device.type == "cuda"
               else f"CPU {platform.machine()}, {torch.get_num_threads()} threads")
    arch = model_lines(json.loads((args.run_dir / "model" / "model.json").read_text()))[0]  # any architecture
    goal = {"success": ours["success"] >= theirs["success"] - 0.02,
            "median_l1": ours["median_l1"] <= theirs["median_l1"],
            "passes": ours["forward_per_target"] <= theirs["forward_per_target"]
            and ours["backward_per_target"] <= theirs["backward_per_target"]}
    print(f"{machine}; torch {torch.__version__}; model {arch}; {len(x)} targets "
          f"(dataset indices {index[0]}…{index[-1]}); ours: {params.optimizer}, lr {params.lr:g}, λ {params.lam:g}, "
          f"λ search {params.lam_search}, {params.max_iter} iterations ({source}); EAD: β {args.ead_beta}, "
          f"{args.ead_search} × {args.ead_steps} steps; {time.strftime('%Y-%m-%d')}\n")
    print("| model | attack | success | median L0 | median L1 | median L∞ | best L0 ≤ 10 | forward / target | "
          "backward / target | s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in (ours, theirs):
        print(f"| {arch} | {row['attack']} | {100 * row['success']:.1f}% | {row['median_l0']:.0f} | "
              f"{row['median_l1']:.3f} | {row['median_linf']:.3f} | {100 * row['share_l0_le_10']:.0f}% | "
              f"{row['forward_per_target']:,.0f} | {row['backward_per_target']:,.0f} | {row['seconds']:.0f} |")
    print(f"\ngoal (success ≥ EAD − 2 points, median L1 ≤ EAD's, no more passes): "
          f"{'met' if all(goal.values()) else 'NOT met'} {goal}")
    if device.type == "cuda":
        cuda_vs_cpu(args.run_dir, x[:32], y[:32], params, result)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": machine, "model": arch, "params": dataclasses.asdict(params),
                                         "source": source, "ours": ours, "ead": theirs, "goal": goal}, indent=2))


if __name__ == "__main__":
    main()
