"""sha256 of a run's susceptibility scores and attack perturbations, to show a refactor changed nothing.

    python benchmarks/susceptibility_checksum.py RUN_DIR [RUN_DIR ...]

Run the same small, deterministic chain (one worker: parallel tuning workers race) at two commits,
then compare the lines. Command and latest figures: benchmarks/README.md.
"""

from __future__ import annotations

import hashlib
import sys

import numpy as np
import xarray as xr


def checksum(store: str, names: list[str] | None = None) -> str:
    ds = xr.open_zarr(store)
    digest = hashlib.sha256()
    for name in names or sorted(ds.data_vars):
        digest.update(name.encode() + np.ascontiguousarray(ds[name].values).tobytes())
    return digest.hexdigest()


if __name__ == "__main__":
    for run in sys.argv[1:]:
        print(f"{run}: susceptibility {checksum(f'{run}/susceptibility.zarr')[:16]}, "
              f"attack perturbation {checksum(f'{run}/attack.zarr', ['perturbation'])[:16]}")
