"""A task's progress on disk: saved atomically after every unit of work (an epoch, a batch of
targets), loaded when the task starts again — after a Slurm requeue, a killed local worker, or a
stage run again — so that no finished unit is redone.

Loading never runs code from the file: a ``.json`` checkpoint is plain JSON, any other is read with
``torch.load(weights_only=True)`` (tensors, numbers, strings, lists, dicts). Tuning workers need no
checkpoint of their own: their progress is the Optuna study.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from . import rundir


class Checkpoint:
    def __init__(self, path: Path | str):
        self.path = Path(path)

    def load(self) -> Any | None:
        """The saved state, or None when nothing was saved yet."""
        if not self.path.exists():
            return None
        if self.path.suffix == ".json":
            return json.loads(self.path.read_text())
        import torch

        return torch.load(self.path, weights_only=True)

    def save(self, state: Any) -> None:
        if self.path.suffix == ".json":
            rundir.write_json(self.path, state)
            return
        import torch

        with rundir.atomic_path(self.path) as tmp:
            torch.save(state, tmp)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)
