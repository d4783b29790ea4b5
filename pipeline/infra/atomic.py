"""Outputs written whole or not at all: under a temporary name beside the final path, renamed into place
when complete. A temporary's name says which process on which host wrote it, so that a later run can
tell a dead writer's leftovers from a live one's work.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.errors import write_failure

HOST = socket.gethostname()


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


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
    except OSError as e:  # a full disk while writing: name the output, not the temporary nor the run directory
        _remove(tmp)
        error = write_failure(e, final)
        if error is None:
            raise
        raise error from e
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


def glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def write_bytes(path: Path, data: bytes) -> None:
    """`data` at `path`, on disk before the rename: a crash (a node lost, power) leaves the old file or
    the new one, never an empty or cut-off one (a rename can reach the disk before the data it names)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode())


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
