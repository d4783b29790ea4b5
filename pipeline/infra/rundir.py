"""The run directory: every artifact of one pipeline run, its manifest and per-stage markers.

Artifacts are written under a temporary name and renamed into place when complete, so a crash never
leaves a half-written file at a final path. ``manifest.json`` records the config, seeds, package
versions and stage timings; ``.stages/<stage>.json`` marks a stage complete.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import platform
import socket
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline import hashing
from pipeline.config import redacted
from pipeline.errors import MissingArtifact, StageBusy
from pipeline.infra import fingerprints, layout
from pipeline.infra.atomic import (  # noqa: F401 (re-exported: the stages write through rundir)
    HOST,
    atomic_path,
    glob_escape,
    owner_tag,
    process_ended,
    recover_replaced,
    remove_dead_temporaries,
    write_bytes,
    write_json,
    write_text,
)
from pipeline.infra.provenance import package_versions, source_commit
from pipeline.infra.records import check_split, read_json_record
from pipeline.infra.registry import writers

log = logging.getLogger(__name__)


PROBE_RETRIES = 20  # × 50 ms: how long a stage's lock is tried before it is reported busy


def _locked(handle, how: int, tries: int) -> bool:
    """flock `handle` (`how`: LOCK_EX or LOCK_SH) without blocking, trying `tries` times 50 ms apart."""
    for attempt in range(tries):
        try:
            fcntl.flock(handle, how | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if attempt < tries - 1:
                time.sleep(0.05)
    return False


@contextlib.contextmanager
def consolidated_zarr_v3() -> Iterator[None]:
    """Silence zarr's warning that consolidated metadata is outside the v3 spec: we write it once, at
    the end, as a convenience; readers of our stores do not rely on it."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        yield


class RunDir:
    """One run's directory. All stages read their inputs from here and write their outputs here."""

    def __init__(self, path: Path | str):
        self.path = Path(path).resolve()
        self.forced = False  # the stage running now was asked to redo its work (--force)
        self._staged: dict[str, Path] = {}  # folder → its temporary, while :meth:`staged`
        self._markers: dict[str, tuple[str, dict | None]] = {}  # stage → (stat key, marker)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    @property
    def manifest_path(self) -> Path:
        return self.path / layout.MANIFEST

    def marker(self, stage: str) -> Path:
        return self.path / layout.STAGES / f"{stage}.json"

    def jobs_dir(self, stage: str) -> Path:
        """Where submitit keeps a stage's pickles and logs (a shared file system on a cluster)."""
        return self.path / layout.JOBS / stage

    # ---- the layout (pipeline/infra/layout.py): every other path of the run directory ------
    @property
    def model_dir(self) -> Path:
        return self.path / layout.MODEL

    def cv_file(self, name: str) -> Path:
        return self.path / layout.CV / name

    def fold_dir(self, fold: int) -> Path:
        return self.path / layout.CV / f"fold-{fold}"

    def tuning_file(self, stage: str, name: str = layout.BEST) -> Path:
        """A file of tuning stage `stage`'s folder (default: its best trial)."""
        return self.path / stage / name

    def shards_dir(self, stage: str) -> Path:
        """Where an array stage's shards record their progress (removed once the stage is complete)."""
        return self.path / f"{stage}-shards"

    def shard_progress(self, stage: str, shard: int) -> Path:
        return self.shards_dir(stage) / f"shard-{shard}.json"

    def partial(self, name: str) -> Path:
        """Where the store `name` is made before it is renamed into place."""
        return self.path / f".{name}.partial"

    def table(self, name: str) -> Path:
        return self._staged.get(layout.TABLES, self.path / layout.TABLES) / name

    def figure(self, name: str) -> Path:
        return self._staged.get(layout.FIGURES, self.path / layout.FIGURES) / name

    @contextlib.contextmanager
    def staged(self, *folders: str) -> Iterator[None]:
        """Inside, :meth:`table` and :meth:`figure` lie in temporaries of `folders` (tables, figures), which
        replace the folders whole when the block succeeds: a stage's files never mix with an earlier run's
        (a record-space table stays behind no tensor-space report), and a failed stage leaves the old ones."""
        with contextlib.ExitStack() as stack:
            for name in folders:
                self._staged[name] = stack.enter_context(atomic_path(self.path / name))
                self._staged[name].mkdir(parents=True)
            try:
                yield
            finally:
                self._staged = {}

    @property
    def report(self) -> Path:
        return self.path / layout.REPORT

    @property
    def raw_dir(self) -> Path:
        return self.path / layout.RAW

    def data_fingerprints(self) -> dict[str, str | None]:
        """The sha256 of the data every model and attack reads: dataset.zarr and split.json."""
        return self.fingerprints(layout.DATASET, layout.SPLIT)

    # ---- artifacts: the one place that knows where each lives and which stage makes it -----
    def artifact(self, name: str) -> Path:
        """The path of an artifact an earlier stage made; MissingArtifact names the stage to run."""
        path = self.path / name
        if not path.exists():
            makers = " or ".join(f"`{stage}`" for stage in writers(name))
            raise MissingArtifact(f"{path}: not found (run the {makers} stage first)")
        return path

    def dataset(self):
        """dataset.zarr as an xarray Dataset, opened lazily (dims sample, time, feature)."""
        import xarray as xr  # deferred: the CLI and every stage import rundir; most need no xarray

        return xr.open_zarr(self.artifact(layout.DATASET), consolidated=False)

    def split(self) -> dict[str, Any]:
        """split.json: {"test": [...], "fold": [[...], ...], "seed", "test_fraction", "folds"}, checked: a
        sample in two places (the test set and a fold) would be a test result on training data."""
        path = self.artifact(layout.SPLIT)
        record = read_json_record(path)
        if record is None:
            raise MissingArtifact(f"{path}: damaged (not a JSON object); make the split again with "
                                  "`python -m pipeline run --force`, or use a new run directory")
        check_split(record, path)
        return record

    def fingerprint(self, name: str) -> str | None:
        """sha256 over an artifact's files (a file, or a folder or store: by relative path) and their sha256;
        None if absent. The files are those its maker recorded (a stray ``.DS_Store`` is no part of it), or
        every non-hidden one; a file still as its maker's marker recorded it is not read again."""
        return fingerprints.fingerprint(self.path / name, self._output_records(name))

    def _output_records(self, name: str) -> dict[str, Any]:
        """{relative path under `name`: file record} from the marker of the complete stage that wrote
        `name` (an output, or a file in one: cv/summary.json in cv/); empty when none recorded it."""
        for maker in writers(name):
            outputs = (self.read_marker(maker) or {}).get("outputs", {})
            for output, files in outputs.items():
                if not isinstance(files, dict):
                    continue
                if output == name:
                    return files
                if name.startswith(f"{output}/") and (rel := name[len(output) + 1:]) in files:
                    return {".": files[rel]}
        return {}

    def fingerprints(self, *names: str) -> dict[str, str | None]:
        return {name: self.fingerprint(name) for name in names}

    def changed_inputs(self, stage: str, inputs: tuple[str, ...]) -> list[str]:
        """Inputs of a complete stage whose content differs from when it completed (markers without
        input hashes, from older versions, report nothing)."""
        recorded = (self.read_marker(stage) or {}).get("inputs")
        if not isinstance(recorded, dict):
            return []
        return [name for name in inputs if recorded.get(name) != self._fingerprint_as(recorded.get(name), name)]

    def _fingerprint_as(self, was: Any, name: str) -> str | None:
        """`name`'s fingerprint now, of the kind `was` is (a marker of the version before: every byte)."""
        legacy = isinstance(was, str) and not was.startswith(fingerprints.PREFIX)
        return fingerprints.legacy(self.path / name) if legacy else self.fingerprint(name)

    def best_params(self, stage: str) -> dict[str, Any] | None:
        """`stage`'s tuning record (tune-model, tune-attack), or None when that stage did not run."""
        path = self.tuning_file(stage)
        return json.loads(path.read_text()) if path.exists() else None

    def model_record(self) -> dict[str, Any]:
        """model/model.json (parameters and provenance) and the sha256 of the weights."""
        folder = self.artifact(layout.MODEL)
        return {"weights_sha256": hashing.file_sha256(folder / layout.WEIGHTS),
                "model": json.loads((folder / layout.MODEL_META).read_text())}

    def test_metrics(self) -> dict[str, Any] | None:
        path = self.model_dir / layout.TEST_METRICS
        return json.loads(path.read_text()) if path.exists() else None

    def cv_summary(self) -> dict[str, Any] | None:
        """cv/summary.json: mean ± sd over folds and the chosen epoch count; None before `cv` ran."""
        path = self.cv_file(layout.CV_SUMMARY)
        return json.loads(path.read_text()) if path.exists() else None

    def held_out_predictions(self) -> tuple[list, Any]:
        """Held-out predictions (sample, y, prob): one DataFrame per CV fold, and the test set's or None."""
        import pandas as pd  # deferred, as xarray above

        folds = sorted((self.path / layout.CV).glob(f"fold-*/{layout.FOLD_PREDICTIONS}"),
                       key=lambda p: int(p.parent.name[5:]))
        test = self.model_dir / layout.TEST_PREDICTIONS
        return [pd.read_csv(f) for f in folds], (pd.read_csv(test) if test.exists() else None)

    def attack_store(self):
        """attack.zarr as an xarray Dataset, opened lazily."""
        import xarray as xr  # deferred: the CLI and every stage import rundir; most need no xarray

        with consolidated_zarr_v3():
            return xr.open_zarr(self.artifact(layout.ATTACK))

    # ---- manifest -------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked_manifest(self) -> Iterator[dict[str, Any]]:
        """Read-modify-write of manifest.json under a file lock (stages may run side by side)."""
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / ".manifest.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            manifest = self.read_manifest()
            yield manifest
            write_json(self.manifest_path, manifest)

    def read_manifest(self) -> dict[str, Any]:
        """manifest.json; a damaged one (cut off by a crash, emptied) is read as empty, with a warning,
        and written anew by the next stage that runs."""
        return read_json_record(self.manifest_path) or {}

    def open(self, config: dict[str, Any], seed: int) -> None:
        """Create the directory (or reopen it) and record the config, seed and environment."""
        with self._locked_manifest() as m:
            m.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
            m.setdefault("stages", {})
            m["config"] = config
            m["seed"] = seed
            m["environment"] = {
                "host": socket.gethostname(),
                "platform": platform.platform(),
                "argv": redacted(sys.argv),
                "source_commit": source_commit(),
                "versions": package_versions(),
            }

    # ---- one running copy of a stage per run directory --------------------------------------
    @contextlib.contextmanager
    def stage_lock(self, stage: str) -> Iterator[None]:
        """Held while `stage` runs here; a second run of it raises StageBusy naming the holder.

        An flock: the kernel releases it when its process dies, however it dies, so a killed run
        never leaves a stale lock. The file holds who has it, for the message.
        """
        path = self.lock_path(stage)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+")
        if not _locked(handle, fcntl.LOCK_EX, PROBE_RETRIES):  # a probe (running()) holds it for microseconds
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise StageBusy(f"{stage}: already running in {self.path} ({holder}); wait for it to end or stop "
                            f"it (lock: {path})") from None
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()} on {HOST} since {time.strftime('%Y-%m-%d %H:%M:%S')}: "
                         f"{' '.join(redacted(sys.argv))}\n")
            handle.flush()
            yield
        finally:
            handle.truncate(0)
            handle.close()

    def lock_path(self, stage: str) -> Path:
        return self.path / layout.STAGES / f"{stage}.lock"

    def running(self, stage: str) -> str | None:
        """Who runs `stage` in this run directory now (its lock's holder, as the lock file says), or None."""
        path = self.lock_path(stage)
        if not path.exists():
            return None
        with open(path) as handle:
            if not _locked(handle, fcntl.LOCK_SH, 1):
                return handle.read().strip() or "another process"
            fcntl.flock(handle, fcntl.LOCK_UN)
        return None

    # ---- stage completion -----------------------------------------------------------------
    def read_marker(self, stage: str) -> dict[str, Any] | None:
        """`stage`'s marker, or None when there is none or it is damaged (read as "not complete", with a
        warning: the stage runs again). Kept while the file is unchanged: markers are read often."""
        path = self.marker(stage)
        try:
            key = hashing.stat_key(path)
        except OSError:
            return None
        if (cached := self._markers.get(stage)) is None or cached[0] != key:
            self._markers[stage] = cached = (key, read_json_record(path))
        return cached[1]

    def is_complete(self, stage: str) -> bool:
        return self.read_marker(stage) is not None

    def completed_config(self, stage: str) -> dict[str, Any] | None:
        return (self.read_marker(stage) or {}).get("config")

    def mark_complete(self, stage: str, *, config: dict[str, Any], seed: int, started: float,
                      executor: str, inputs: dict[str, str | None] | None = None,
                      outputs: tuple[str, ...] = (), extra: dict[str, Any] | None = None) -> None:
        """The marker records the config, the seed, the sha256 of every input the stage read (`inputs`,
        fingerprinted before the stage read them) and the state of every file of its `outputs`."""
        record = {
            "config": config,
            "inputs": inputs or {},
            "outputs": {name: hashing.listing(self.path / name) for name in outputs if (self.path / name).exists()},
            "seed": seed,
            "executor": executor,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
            "seconds": round(time.time() - started, 3),
            **(extra or {}),
        }
        with self._locked_manifest() as m:  # the manifest without the file lists: the marker has them
            m.setdefault("stages", {})[stage] = {k: v for k, v in record.items() if k != "outputs"}
        write_json(self.marker(stage), record)

    def damaged_outputs(self, stage: str) -> dict[str, str]:
        """{output: what is wrong} for each output a complete stage recorded and that is no longer as the
        stage wrote it: gone, a file missing, or a file of another size or content (a lost chunk, a
        truncated zarr.json). Empty for an incomplete stage, and for markers older than output records."""
        if not self.is_complete(stage):
            return {}
        damaged = {}
        for name, files in (self.read_marker(stage) or {}).get("outputs", {}).items():
            path = self.path / name
            if not path.exists():
                damaged[name] = "is gone"
                continue
            for rel, record in files.items():
                f = path if rel == "." else path / rel
                if not f.is_file():
                    damaged[name] = f"is damaged: {f.relative_to(self.path)} is missing"
                    break
                if not hashing.unchanged(f, record, hashing.is_chunk(rel)):
                    damaged[name] = f"is damaged: {f.relative_to(self.path)} is not the file `{stage}` wrote"
                    break
        return damaged
