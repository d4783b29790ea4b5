"""Pickles read from a run directory must be the user's own, private files (a pickle is code).

With ``--executor slurm`` submitit writes each task's call as a pickle into ``jobs/<stage>/…`` and the job
unpickles it; the driver unpickles the result pickle the job writes. A run directory may be writable by
others: a file another user renamed over a pickle is theirs (another user cannot create a file of yours,
nor change a 0600 one), and one writable by others may have been rewritten. :func:`private_file` refuses
both; :func:`load_private` checks the very file it reads. The driver writes what submitit writes under
:func:`private_umask`; the job checks its pickle first (:mod:`pipeline.infra.executor.guard`).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.errors import UntrustedFile


def refusal(path: Path | str, st: os.stat_result) -> str | None:
    """Why `st` (of `path`) is not the user's own private file, or None."""
    if not stat.S_ISREG(st.st_mode):
        return f"{path}: not a regular file"
    if st.st_uid != os.geteuid():
        return f"{path}: owned by uid {st.st_uid}, not you (uid {os.geteuid()})"
    if st.st_mode & 0o022:
        return f"{path}: writable by others (mode {st.st_mode & 0o777:o})"
    return None


def private_file(path: Path | str) -> None:
    """UntrustedFile unless `path` is the user's own file that only the user can write (not a link)."""
    reason = refusal(path, os.lstat(path))
    if reason:
        raise UntrustedFile(f"{reason}; a pickle is code, so it is never loaded")


def load_private(path: Path | str) -> Any:
    """The object pickled in `path`, checked as by :func:`private_file` on the very file it is read from
    (through its descriptor: nothing can swap the file between the check and the read)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as e:  # ELOOP: a symbolic link
        private_file(path)
        raise UntrustedFile(f"{path}: cannot open it ({e.strerror})") from None
    with os.fdopen(fd, "rb") as f:
        reason = refusal(path, os.fstat(fd))
        if reason:
            raise UntrustedFile(f"{reason}; a pickle is code, so it is never loaded")
        return pickle.load(f)


@contextlib.contextmanager
def private_umask() -> Iterator[None]:
    """Files and folders created inside are the user's only (0600 / 0700), whatever the user's umask."""
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)
