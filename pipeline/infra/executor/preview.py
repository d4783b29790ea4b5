"""The dry run of a Slurm submission: the sbatch script submitit would submit, checked by Slurm.

:func:`preview_submission` follows submitit's public path with a stand-in ``sbatch`` first on PATH that
keeps the script and has the real ``sbatch --test-only`` validate it; nothing is queued, and what submitit
wrote in the jobs folder for it is removed again. :class:`Preview` holds the script and Slurm's verdict.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pipeline.infra.executor.profile import SlurmProfile, make_slurm_executor


@dataclass(frozen=True)
class Preview:
    """What a stage would submit: submitit's own sbatch script, and what ``sbatch --test-only`` said."""

    script: str
    check: str | None  # None: no sbatch on this machine, the script was not validated
    accepted: bool


def preview_submission(profile: SlurmProfile, name: str, jobs_dir: Path | str, n_tasks: int) -> Preview:
    """The sbatch script submitit submits for `n_tasks` calls, without submitting anything.

    submitit's public path is followed exactly (an executor, ``batch()``, ``submit``), with a stand-in
    ``sbatch`` first on PATH: it keeps the script, has the real ``sbatch --test-only`` validate it
    (partition, account, limits — nothing is queued) and answers with a job id no one polls. What
    submitit wrote under `jobs_dir` for it is removed again.
    """
    jobs_dir = Path(jobs_dir)
    real = shutil.which("sbatch")
    with tempfile.TemporaryDirectory(prefix="pipeline-preview-") as tmp, _removing_new_paths(jobs_dir):
        out = Path(tmp)
        check = f'{shlex.quote(real)} --test-only "$1" > {shlex.quote(str(out / "check"))} 2>&1; ' \
                f'echo $? > {shlex.quote(str(out / "code"))}' if real else ""
        stand_in = out / "sbatch"
        stand_in.write_text(f'#!/bin/sh\ncp "$1" {shlex.quote(str(out / "script"))}\n{check}\n'
                            'echo "Submitted batch job 0"\n')
        stand_in.chmod(0o755)
        if shutil.which("srun") is None:  # submitit refuses to build an executor without it; a preview runs
            (out / "srun").write_text("#!/bin/sh\nexit 1\n")  # no job, so a laptop without Slurm can show one
            (out / "srun").chmod(0o755)
        path = os.environ.get("PATH", "")
        os.environ["PATH"] = f"{out}{os.pathsep}{path}"
        try:
            executor = make_slurm_executor(profile, jobs_dir, name)
            with executor.batch():
                for _ in range(n_tasks):
                    executor.submit(_nothing)
        finally:
            os.environ["PATH"] = path
        said = (out / "check").read_text().strip() if real else None
        return Preview((out / "script").read_text(), said, not real or (out / "code").read_text().strip() == "0")


def _nothing() -> None:
    """The call of a preview's tasks (never run)."""


@contextlib.contextmanager
def _removing_new_paths(folder: Path) -> Iterator[None]:
    """Remove, on leaving, whatever was created in `folder` (and the folder and its parents if they were)."""
    top = folder
    while not top.parent.exists():
        top = top.parent
    existed = folder.exists()
    before = set(folder.rglob("*")) if existed else set()
    try:
        yield
    finally:
        if not existed:
            shutil.rmtree(top if top.exists() else folder, ignore_errors=True)
        else:
            for path in sorted(set(folder.rglob("*")) - before, reverse=True):
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
