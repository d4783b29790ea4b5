"""The job side of :mod:`pipeline.infra.executor.private`: a Slurm task's command is

    python -P -u -m pipeline.infra.executor.guard -u -m submitit.core._submit <folder>

It checks the pickle the task is about to load (:func:`~pipeline.infra.executor.private.private_file`; a
refusal is one line on stderr, which the driver reports), then runs submitit's module as ``__main__``,
under umask 077 so that the result pickle it writes is private too. ``-P``: nothing is imported from the
task's working directory when that lies in the run directory (as the driver's
:func:`~pipeline.infra.trusted.leave_run_dir`). Not imported by the package: ``-m`` runs it fresh.
"""

from __future__ import annotations

import os
import runpy
import sys
import time
from pathlib import Path

import submitit

from pipeline.errors import UntrustedFile
from pipeline.infra.executor.private import private_file

PICKLE_WAIT_S = 60  # submitit moves an array's pickles in place after sbatch returns: a task may start first


def submitted_pickle(folder: str) -> Path:
    """The pickle this Slurm task loads, by submitit's own path logic (its folder and the job's ids)."""
    os.environ["SUBMITIT_FOLDER"] = folder  # what submitit's process_job sets before it reads the paths
    return submitit.JobEnvironment().paths.submitted_pickle


def main(argv: list[str]) -> int:
    """``[-u] -m MODULE ARGS…``: check the task's pickle, then run MODULE as ``python -m`` would."""
    os.umask(0o077)  # the result pickle and checkpoints this task writes are private
    args = argv[1:] if argv[:1] == ["-u"] else argv  # this interpreter already runs unbuffered (-u)
    if len(args) < 3 or args[0] != "-m":
        print(f"usage: python -P -u -m {__spec__.name} -u -m MODULE FOLDER", file=sys.stderr)
        return 2
    module, rest = args[1], args[2:]
    run_dir = Path(rest[-1]).parent.parent  # FOLDER is <run>/jobs/<stage>/%j
    cwd = os.getcwd()
    if not Path(cwd).resolve().is_relative_to(run_dir.resolve()):
        sys.path.insert(0, cwd)  # what -P left out: `python -m` imports from the working directory
    pickled = submitted_pickle(rest[-1])
    deadline = time.time() + PICKLE_WAIT_S
    while not pickled.exists() and time.time() < deadline:
        time.sleep(1)
    if pickled.exists():  # else submitit reports it missing
        try:
            private_file(pickled)
        except UntrustedFile as e:  # one line, in the form the driver finds in a task's log
            print(f"{type(e).__module__}.{type(e).__name__}: {e}", file=sys.stderr)
            return 1
    sys.argv = [module, *rest]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
