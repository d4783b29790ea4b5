"""The run directory: every artifact of one pipeline run, its manifest and per-stage markers.

Artifacts are written under a temporary name and renamed into place when complete, so a crash never
leaves a half-written file at a final path. ``manifest.json`` records the config, seeds, package
versions and stage timings; ``.stages/<stage>.json`` marks a stage complete.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from pipeline import hashing
from pipeline.config import redacted
from pipeline.errors import MissingArtifact, StageBusy
from pipeline.infra.registry import writers

PACKAGES = ("torch", "numpy", "pandas", "pyarrow", "dask", "xarray", "zarr", "optuna", "submitit",
            "mimic-adversarial-pipeline")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


HOST = socket.gethostname()
PROBE_RETRIES = 20  # × 50 ms: how long a stage's lock is tried before it is reported busy


def owner_tag() -> str:
    """Host and process id, in the names of temporaries: a later run can tell whose they are."""
    return f"{HOST}-{os.getpid()}"


def _dead_owner(name: str) -> bool:
    """A temporary named ``….tmp-HOST-PID`` / ``….old-HOST-PID`` of a process on this host that has ended."""
    owner = name.rpartition(".tmp-")[2] if ".tmp-" in name else name.rpartition(".old-")[2]
    host, _, pid = owner.rpartition("-")
    if host != HOST or not pid.isdigit():
        return False  # another machine's (a Slurm task's): it may be alive
    return process_ended(int(pid))


def process_ended(pid: int) -> bool:
    """Whether process `pid` of this host has ended (one we may not signal is alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary sibling of `final` to write (a file or a directory); rename it on success.

    On an exception the temporary is removed and `final` is left as it was.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{owner_tag()}")
    _remove(tmp)
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
    if final.is_dir() and not final.is_symlink():
        # a directory cannot be replaced in one rename: move the old one aside first
        old = final.with_name(f".{final.name}.old-{owner_tag()}")
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old)
    else:
        os.replace(tmp, final)


def recover_replaced(final: Path) -> None:
    """Finish or undo what a killed :func:`atomic_path` left beside `final` (call it holding the lock
    of the stage that writes `final`: no live process is writing it then).

    A killed process can leave ``.NAME.tmp-*`` (a partial output: removed) and, if it died between
    the two renames of a directory, ``.NAME.old-*`` (the previous output, complete) with `final`
    missing: the complete new output (its ``.tmp-`` of the same owner) is put in place if it is
    there, else the previous one is restored.
    """
    final = Path(final)
    for old in final.parent.glob(f".{glob_escape(final.name)}.old-*"):
        tmp = final.with_name(f".{final.name}.tmp-{old.name.rpartition('.old-')[2]}")
        if not final.exists():
            (tmp if tmp.exists() else old).rename(final)
        if old.exists():
            _remove(old)
    for tmp in final.parent.glob(f".{glob_escape(final.name)}.tmp-*"):
        _remove(tmp)


def remove_dead_temporaries(folder: Path) -> list[Path]:
    """Temporaries under `folder` whose writer (a process on this host) has ended: removed."""
    found = [p for p in Path(folder).rglob(".*.tmp-*") if _dead_owner(p.name)] if Path(folder).is_dir() else []
    for path in found:
        _remove(path)
    return found


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


def glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


@contextlib.contextmanager
def consolidated_zarr_v3() -> Iterator[None]:
    """Silence zarr's warning that consolidated metadata is outside the v3 spec: we write it once, at
    the end, as a convenience; readers of our stores do not rely on it."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        yield


def write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode())


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def source_commit() -> str | None:
    """The git commit of the pipeline's source tree, when it is a checkout."""
    src = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None




class RunDir:
    """One run's directory. All stages read their inputs from here and write their outputs here."""

    def __init__(self, path: Path | str):
        self.path = Path(path).resolve()
        self.forced = False  # the stage running now was asked to redo its work (--force)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    @property
    def manifest_path(self) -> Path:
        return self.path / "manifest.json"

    def marker(self, stage: str) -> Path:
        return self.path / ".stages" / f"{stage}.json"

    def jobs_dir(self, stage: str) -> Path:
        """Where submitit keeps a stage's pickles and logs (a shared file system on a cluster)."""
        return self.path / "jobs" / stage

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

        return xr.open_zarr(self.artifact("dataset.zarr"), consolidated=False)

    def split(self) -> dict[str, Any]:
        """split.json: {"test": [...], "fold": [[...], ...], "seed", "test_fraction", "folds"}."""
        return json.loads(self.artifact("split.json").read_text())

    def fingerprint(self, name: str) -> str | None:
        """sha256 of an artifact (a file, or every file of a folder or store by relative path); None if absent."""
        path = self.path / name
        if not path.exists():
            return None
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        digest = hashlib.sha256()
        for f in files:
            digest.update(str(f.relative_to(path)).encode() + b"\0")
            hashing.update(digest, f)
        return digest.hexdigest()

    def fingerprints(self, *names: str) -> dict[str, str | None]:
        return {name: self.fingerprint(name) for name in names}

    def changed_inputs(self, stage: str, inputs: tuple[str, ...]) -> list[str]:
        """Inputs of a complete stage whose content differs from when it completed (markers without
        input hashes, from older versions, report nothing)."""
        recorded = json.loads(self.marker(stage).read_text()).get("inputs")
        if recorded is None:
            return []
        return [name for name in inputs if recorded.get(name) != self.fingerprint(name)]

    def best_params(self, stage: str) -> dict[str, Any] | None:
        """`stage`'s tuning record (tune-model, tune-attack), or None when that stage did not run."""
        path = self.path / stage / "best.json"
        return json.loads(path.read_text()) if path.exists() else None

    def model_record(self) -> dict[str, Any]:
        """model/model.json (parameters and provenance) and the sha256 of the weights."""
        folder = self.artifact("model")
        return {"weights_sha256": hashing.file_sha256(folder / "weights.pt"),
                "model": json.loads((folder / "model.json").read_text())}

    def test_metrics(self) -> dict[str, Any] | None:
        path = self.path / "model" / "test_metrics.json"
        return json.loads(path.read_text()) if path.exists() else None

    def cv_summary(self) -> dict[str, Any] | None:
        """cv/summary.json: mean ± sd over folds and the chosen epoch count; None before `cv` ran."""
        path = self.path / "cv" / "summary.json"
        return json.loads(path.read_text()) if path.exists() else None

    def held_out_predictions(self) -> tuple[list, Any]:
        """Held-out predictions (sample, y, prob): one DataFrame per CV fold, and the test set's or None."""
        import pandas as pd  # deferred, as xarray above

        folds = sorted((self.path / "cv").glob("fold-*/predictions.csv"), key=lambda p: int(p.parent.name[5:]))
        test = self.path / "model" / "test_predictions.csv"
        return [pd.read_csv(f) for f in folds], (pd.read_csv(test) if test.exists() else None)

    def attack_store(self):
        """attack.zarr as an xarray Dataset, opened lazily."""
        import xarray as xr  # deferred: the CLI and every stage import rundir; most need no xarray

        with consolidated_zarr_v3():
            return xr.open_zarr(self.artifact("attack.zarr"))

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
        if not self.manifest_path.exists():
            return {}
        return json.loads(self.manifest_path.read_text())

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
        return self.path / ".stages" / f"{stage}.lock"

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
    def is_complete(self, stage: str) -> bool:
        return self.marker(stage).exists()

    def completed_config(self, stage: str) -> dict[str, Any] | None:
        if not self.is_complete(stage):
            return None
        return json.loads(self.marker(stage).read_text()).get("config")

    def mark_complete(self, stage: str, *, config: dict[str, Any], seed: int, started: float,
                      executor: str, inputs: dict[str, str | None] | None = None,
                      extra: dict[str, Any] | None = None) -> None:
        """The marker records the config, the seed and the sha256 of every input the stage read
        (`inputs`, fingerprinted before the stage read them)."""
        record = {
            "config": config,
            "inputs": inputs or {},
            "seed": seed,
            "executor": executor,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
            "seconds": round(time.time() - started, 3),
            **(extra or {}),
        }
        with self._locked_manifest() as m:
            m.setdefault("stages", {})[stage] = record
        write_json(self.marker(stage), record)
