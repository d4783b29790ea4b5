"""Batched attack vs one target at a time (the published approach), same model, targets, iterations.

Reports sample-iterations per second for both and their ratio (target ≥ 10× on a CPU), and on a GPU
extrapolates the full attack of the published reproduction: 37,832 targets × 1,000 iterations.
(`attack_quality.py` checks the CUDA path's results against the CPU's on a trained model.)

    python benchmarks/attack.py [--targets 256] [--iterations 50] [--batch 256]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch

from pipeline.attack.l1 import L1Attack
from pipeline.config import AttackConfig, ModelParams
from pipeline.model import MortalityLSTM

FULL_TARGETS, FULL_ITERATIONS = 37_832, 1_000


def timed(fn) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--targets", type=int, default=256)
    ap.add_argument("--iterations", type=int, default=50)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--sequential-targets", type=int, default=16, help="targets timed one at a time")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    model = MortalityLSTM(ModelParams(hidden=128, bidirectional=True, fc=64)).to(device).eval()
    x = torch.rand(args.targets, 48, 19, device=device)
    with torch.no_grad():
        target = model(x).argmax(1)
    params = AttackConfig(max_iter=args.iterations, lam_search=1)
    attack = L1Attack(model, params)

    def batched() -> None:
        for i in range(0, args.targets, args.batch):
            attack.run(x[i:i + args.batch], target[i:i + args.batch])

    def one_at_a_time() -> None:
        for i in range(args.sequential_targets):
            attack.run(x[i:i + 1], target[i:i + 1])

    attack.run(x[:2], target[:2])  # warm-up
    batched_rate = args.targets * args.iterations / timed(batched)
    single_rate = args.sequential_targets * args.iterations / timed(one_at_a_time)
    name = (torch.cuda.get_device_name() if device.type == "cuda"
            else f"CPU {platform.machine()}, {os.cpu_count()} cores")
    print(f"{name}; torch {torch.__version__}; BiLSTM-128/FC-64; {args.iterations} iterations; "
          f"{time.strftime('%Y-%m-%d')}\n")
    print(f"| device | batched (batch {args.batch}) sample-it/s | one at a time sample-it/s | speed-up | "
          "full attack (37,832 × 1,000) |")
    print("|---|---:|---:|---:|---:|")
    full_s = FULL_TARGETS * FULL_ITERATIONS / batched_rate
    print(f"| {name} | {batched_rate:,.0f} | {single_rate:,.0f} | {batched_rate / single_rate:.1f}× | "
          f"{full_s / 60:,.1f} min (extrapolated) |")


if __name__ == "__main__":
    main()
