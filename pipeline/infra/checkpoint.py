"""A task's progress on disk: saved atomically after every unit of work (an epoch, a batch of
targets), loaded when the task starts again — after a Slurm requeue, a killed local worker, or a
stage run again — so that no finished unit is redone.

Loading never runs code from the file: a ``.json`` checkpoint is plain JSON, any other is read with
``torch.load(weights_only=True)`` (tensors, numbers, strings, lists, dicts). Tuning workers need no
checkpoint of their own: their progress is the Optuna study.

A checkpoint carries the key of the work it belongs to (the task's arguments that shape the result):
progress saved for other arguments — a stage redone with ``--force`` and another config — is
discarded, never resumed.
"""

from __future__ import annotations

import json
import logging
import pickle
import zipfile
from pathlib import Path
from typing import Any

from pipeline.errors import InputError
from pipeline.infra import rundir

log = logging.getLogger(__name__)


class Checkpoint:
    def __init__(self, path: Path | str, key: Any):
        self.path = Path(path)
        self.key = json.dumps(key, sort_keys=True, default=str)

    def load(self) -> Any | None:
        """The saved state, or None when nothing was saved yet, it was saved for other work, or it cannot be
        read (cut off, emptied: a warning names the file, and the task starts afresh). A file that is not
        plain data (a pickle that would run code) is an error naming it: that is no accident."""
        if not self.path.exists():
            return None
        try:
            saved = self._read()
        except pickle.UnpicklingError as e:
            first = (str(e).splitlines() or [""])[0]
            raise InputError(f"{self.path}: not a checkpoint this pipeline wrote ({first}); remove it") from None
        except (OSError, ValueError, EOFError, RuntimeError, zipfile.BadZipFile) as e:
            log.warning("%s: damaged (%s: %s); started afresh", self.path, type(e).__name__, e)
            return None
        if not isinstance(saved, dict) or saved.get("key") != self.key:
            log.info("%s: saved for other arguments, started afresh", self.path)
            return None
        return saved["state"]

    def _read(self) -> Any:
        if self.path.suffix == ".json":
            return json.loads(self.path.read_text())
        import torch  # deferred: a .json checkpoint (tuning, the attack's shards) needs no torch

        return torch.load(self.path, weights_only=True)

    def save(self, state: Any) -> None:
        saved = {"key": self.key, "state": state}
        if self.path.suffix == ".json":
            rundir.write_json(self.path, saved)
            return
        import torch  # deferred, as in load()

        with rundir.atomic_path(self.path) as tmp:
            torch.save(saved, tmp)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)
