"""Errors a user can act on: the message names the file, column, rule or option."""

import contextlib
import errno
import re
from collections.abc import Iterator


class InputError(RuntimeError):
    """Input data is missing or malformed, or a rule leaves nothing; the CLI exits with code 1."""


class MissingArtifact(InputError, FileNotFoundError):
    """An earlier stage's output is not in the run directory; the message names it and the stage."""


class StageBusy(InputError):
    """The stage is already running in this run directory (another process holds its lock)."""


class UntrustedFile(InputError):
    """A file the pipeline would unpickle (a pickle is code) is not the user's own, private file."""


# errors that can only come from writing: the run directory's disk, quota or mount, never the input
WRITE_ERRNOS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
                errno.EFBIG: "file size limit reached", errno.EROFS: "read-only file system"}


def write_failure(err: BaseException, path: object) -> InputError | None:
    """An InputError blaming the output `path` when `err` is a failed write (full disk, quota, …)."""
    code = getattr(err, "errno", None)
    if code not in WRITE_ERRNOS:
        return None
    return InputError(f"{path}: cannot write ({WRITE_ERRNOS[code]}: {getattr(err, 'strerror', None) or err}); "
                      "free space or choose another run directory, then run the stage again")


@contextlib.contextmanager
def blaming(path: object) -> Iterator[None]:
    """A failed write inside (a full disk, a quota) becomes an InputError naming the file it was writing, or
    `path` (what the block writes) where the OS did not say: ``write()`` errors carry no file name."""
    try:
        yield
    except OSError as e:
        error = write_failure(e, e.filename or path)
        if error is None:
            raise
        raise error from e


def reported_reason(text: str) -> str | None:
    """The message of the last error of this package's own kind in a traceback's text (a Slurm task's
    failure comes back as text only), or None."""
    found = re.findall(r"^pipeline\.errors\.\w+: (.+)$", text, re.MULTILINE)
    return found[-1] if found else None
