"""Training throughput of the reference model (BiLSTM-128, FC-64, batch 128) in samples per second.

Times optimizer steps (forward, backward, Adam) and held-out prediction on random inputs shaped
like dataset.zarr (48 × 19), after a warm-up, on the CPU and on CUDA when there is one.

    python benchmarks/train.py [--batches 60] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch

from pipeline.config import ModelParams
from pipeline.model.archs import make_optimizer
from pipeline.model.recurrent import MortalityLSTM


def throughput(device: torch.device, params: ModelParams, batches: int) -> tuple[float, float]:
    torch.manual_seed(0)
    model = MortalityLSTM(params).to(device)
    optimizer = make_optimizer(model, params)
    loss_fn = torch.nn.CrossEntropyLoss()
    x = torch.rand(batches, params.batch_size, 48, 19, device=device)
    y = torch.randint(0, 2, (batches, params.batch_size), device=device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    model.train()
    for i in range(5):  # warm-up
        optimizer.zero_grad()
        loss_fn(model(x[i]), y[i]).backward()
        optimizer.step()
    sync()
    start = time.perf_counter()
    for i in range(batches):
        optimizer.zero_grad()
        loss_fn(model(x[i]), y[i]).backward()
        optimizer.step()
    sync()
    train_rate = batches * params.batch_size / (time.perf_counter() - start)

    model.eval()
    with torch.no_grad():
        flat = x.reshape(-1, 48, 19)
        start = time.perf_counter()
        for i in range(0, len(flat), 1024):
            model(flat[i:i + 1024])
        sync()
        predict_rate = len(flat) / (time.perf_counter() - start)
    return train_rate, predict_rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", type=int, default=60)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    params = ModelParams(hidden=128, layers=1, bidirectional=True, fc=64, batch_size=128)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    print(f"torch {torch.__version__}, Python {platform.python_version()}, {args.threads} CPU threads, "
          f"{time.strftime('%Y-%m-%d')}\n")
    print("| device | training samples/s | prediction samples/s |")
    print("|---|---:|---:|")
    for device in devices:
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.machine()})"
        train_rate, predict_rate = throughput(device, params, args.batches)
        print(f"| {name} | {train_rate:,.0f} | {predict_rate:,.0f} |")


if __name__ == "__main__":
    main()
