"""The attack in record space vs tensor space vs tensor space on recorded cells only, side by side.

One model (the run's), the same targets (the first N correctly classified test samples), the same
λ and η (the run's tuned ones, else the defaults), the same budget. Per space: success, the median
number of changed values (record: edited recorded values; tensor: changed cells of the input), the
median L1 of what the attack varies, the model passes per target (counted in the forward and the
backward pass), the seconds per update and target, and the realizable share — the examples that still
flip when their edit of the record (tensor space: their changes of recorded cells only) is re-derived
into the model's input with the transform prepare uses (pipeline/susceptibility/realizable.py).

    python benchmarks/attack_spaces.py runs/default [--targets 128] [--device cuda]
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
import xarray as xr

from pipeline.attack.core import BEST, KINDS
from pipeline.attack.l1 import L1Attack
from pipeline.attack.shards import attack_params
from pipeline.attack.targets import TargetInputs, select_targets
from pipeline.config import PipelineConfig
from pipeline.infra.rundir import RunDir
from pipeline.susceptibility.realizable import rederived_flips

SPACES = {"record": {"space": "record"}, "tensor": {"space": "tensor"},
          "tensor, observed_only": {"space": "tensor", "observed_only": True}}


class Counted(torch.nn.Module):
    """The model, counting samples through forward and backward passes."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model, self.samples = model, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.samples += len(x)
        out = self.model(x)
        if out.requires_grad:
            out.register_hook(lambda grad: self._count(len(x)))
        return out

    def _count(self, n: int) -> None:
        self.samples += n


def as_store(result, targets, space: str) -> xr.Dataset:
    """The result in attack.zarr's layout (what pipeline.susceptibility.realizable reads)."""
    cells = ("sample", "kind", "time", "feature")
    varied = result.perturbation.cpu().numpy()
    data = {"found": (("sample", "kind"), result.found.cpu().numpy()),
            "perturbation" if space == "tensor" else "edit": (cells, varied)}
    return xr.Dataset(data, coords={"dataset_index": ("sample", targets["dataset_index"].to_numpy()),
                                    "y": ("sample", targets["y"].to_numpy()),
                                    "pred": ("sample", targets["pred"].to_numpy()), "kind": list(KINDS)},
                      attrs={"space": space})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("--targets", type=int, default=128)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    run = RunDir(args.run)
    torch.manual_seed(0)
    model = run.model(args.device)
    targets = select_targets(run, "test").iloc[:args.targets]
    index = targets["dataset_index"].to_numpy()
    data = run.dataset().load()
    base, source = attack_params(PipelineConfig(), run)  # the run's tuned λ and η, else the defaults
    y = torch.from_numpy(targets["y"].to_numpy().astype(np.int64))
    rows = {}
    for name, keys in SPACES.items():
        params = dataclasses.replace(base, **keys)
        inputs = TargetInputs.load(run, index, params.space)
        counted = Counted(model)
        space = inputs.space(params, torch.device(args.device))
        start = time.perf_counter()
        result = L1Attack(counted, params).run(space, y)
        seconds = time.perf_counter() - start
        found = result.found[:, BEST].cpu().numpy()
        varied = result.perturbation[:, BEST].abs().cpu().numpy()
        changed = (varied > 0).sum(axis=(1, 2))[found]
        l1 = varied.sum(axis=(1, 2))[found]
        realizable = rederived_flips(as_store(result, targets, params.space), data, run.model(), "best")
        rows[name] = {"success": float(found.mean()), "median_changed": float(np.median(changed)) if found.any()
                      else float("nan"), "median_l1": float(np.median(l1)) if found.any() else float("nan"),
                      "passes_per_target": counted.samples / len(y),
                      "us_per_update_and_target": 1e6 * seconds / (params.max_iter * len(y)),
                      "realizable_share": float(realizable[found].mean()) if found.any() else float("nan")}
    tensor_cost = rows["tensor"]["us_per_update_and_target"]
    for r in rows.values():
        r["cost_vs_tensor"] = r["us_per_update_and_target"] / tensor_cost
    print(json.dumps({"run": str(args.run), "targets": len(y), "params": source, "device": args.device,
                      "machine": f"{platform.machine()}, {torch.get_num_threads()} threads", "rows": rows}, indent=1))
    print("\n| space | success | median changed values | median L1 | passes / target | cost per update vs tensor "
          "| realizable |\n|---|---:|---:|---:|---:|---:|---:|")
    for name, r in rows.items():
        print(f"| {name} | {100 * r['success']:.1f}% | {r['median_changed']:.0f} | {r['median_l1']:.3f} | "
              f"{r['passes_per_target']:.0f} | {r['cost_vs_tensor']:.2f}× | {100 * r['realizable_share']:.1f}% |")


if __name__ == "__main__":
    main()
