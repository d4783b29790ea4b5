"""Run one stage's array of task calls: ``debug`` (in-process), ``local`` (≤ N processes) or ``slurm``.

The three backends are classes behind one interface (:class:`Executor`: submit an array, then wait,
results, cancel) with the same rules everywhere:

- every task runs, and results come back in call order;
- a task that fails does not stop the others; once all have ended the stage fails with
  :class:`TaskFailed`, naming the first failed task, its arguments and its log file;
- tasks keep their progress on disk, so a stage that is run again resumes where its tasks stopped;
  on Slurm a preempted or timed-out task is also requeued and resumes by itself
  (:class:`CheckpointableTask`).

On Slurm the array's task ids are recorded in ``jobs/<stage>/array.json`` until every task has
succeeded: a driver that restarts while the array is pending or running waits for it instead of
submitting a second one, and resubmits only the tasks that failed or vanished. Never do two arrays of
one stage write one run directory: a driver that finds an array of the stage with *other* work (another
config) still pending or running — or local workers a driver left alive (``jobs/<stage>/workers.json``)
— stops with one line (:class:`ArrayBusy`), or with ``--force`` cancels them and waits until they have
ended before it starts its own. Job names carry the
run (``pipeline-<stage>-<tag>``, the tag a hash of the run directory), so ``pipeline cancel
--run-dir D`` cancels exactly one run.
A stage's sbatch parameters come from a profile file (``slurm/``): a ``[default]`` table,
overridden per stage by ``[stages.<stage>]``; the fields of :class:`SlurmProfile` are the only
valid keys, defined once here.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import hashlib
import json
import logging
import multiprocessing
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import submitit
from tqdm.auto import tqdm

from pipeline.config import ConfigError, build_section, option, read_toml
from pipeline.errors import InputError, StageBusy, reported_reason
from pipeline.infra.rundir import HOST, write_json
from pipeline.infra.stages import STAGES

log = logging.getLogger(__name__)


class TaskFailed(RuntimeError):
    """A task of a stage raised or its job died; the message says which and where its log is."""


class ArrayBusy(StageBusy):
    """An earlier array (or local workers) of the stage, doing other work, still runs in this run directory."""


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def ensure_logging() -> None:
    """In a worker process (local or a Slurm task), log INFO lines like the driver does."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, datefmt="%H:%M:%S")


PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def start_worker(driver: int) -> None:
    """Initializer of a local worker process: it dies with the driver that started it.

    Without this a killed driver (SIGKILL, a node's OOM killer, a closed terminal) left its workers
    computing for minutes with nobody to collect their results. On Linux the kernel sends SIGKILL
    when the parent ends (PR_SET_PDEATHSIG); elsewhere a thread polls the parent's pid.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    else:
        def watch() -> None:
            while os.getppid() == driver:
                time.sleep(1.0)
            os._exit(1)

        threading.Thread(target=watch, daemon=True, name="driver-watch").start()
    if os.getppid() != driver:  # the driver was already gone when the request took effect
        os._exit(1)
    ensure_logging()


class LoggedTask:
    """A task function whose log lines (and traceback, if it fails) also go to a file of its own."""

    def __init__(self, fn: Callable[..., Any], log_file: Path):
        self.fn, self.log_file = fn, Path(log_file)

    def __call__(self, *args: Any) -> Any:
        ensure_logging()
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(self.log_file, mode="a")
        handler.setFormatter(logging.Formatter(LOG_FORMAT, datefmt="%H:%M:%S"))
        root = logging.getLogger()
        root.addHandler(handler)
        try:
            return self.fn(*args)
        except Exception:
            logging.getLogger(__name__).error("task failed:\n%s", traceback.format_exc())
            raise
        finally:
            root.removeHandler(handler)
            handler.close()


class CheckpointableTask(submitit.helpers.Checkpointable):
    """A task function that saves its progress on disk, so that a requeued call resumes.

    submitit calls :meth:`checkpoint` on preemption / time-out; the default resubmits this same
    call with the same arguments, and the function picks up from what it saved.

    It also records the driver's versions (:mod:`pipeline.infra.versions`) when created, and a task
    whose Python, packages or source commit differ from them fails at its start, naming each one.
    """

    def __init__(self, fn: Callable[..., Any]):
        from pipeline.infra.versions import runtime_versions

        self.fn = fn
        self.driver_versions = runtime_versions()

    def __call__(self, *args: Any) -> Any:
        from pipeline.infra.versions import check_versions

        ensure_logging()
        if getattr(self, "driver_versions", None) is not None:  # None: pickled before versions were recorded
            check_versions(self.driver_versions)
        return self.fn(*args)

    def __repr__(self) -> str:
        return f"CheckpointableTask({getattr(self.fn, '__qualname__', self.fn)!r})"


@dataclass(frozen=True)
class SlurmProfile:
    """sbatch parameters of one stage. Keys of a profile file are exactly these fields."""

    partition: str = option("", "partition (empty: the cluster's default)")
    account: str = option("", "account to charge (empty: none)")
    qos: str = option("", "quality of service (empty: none)")
    constraint: str = option("", "node feature constraint, e.g. a GPU type (empty: none)")
    time_min: int = option(60, "time limit per array task, minutes", ge=1)
    cpus_per_task: int = option(1, "CPUs per array task", ge=1)
    mem_gb: float = option(4.0, "memory per array task, GB", gt=0)
    gpus_per_node: int = option(0, "GPUs per array task (0: none requested)", ge=0)
    array_parallelism: int = option(64, "array tasks running at once at most", ge=1)
    signal_delay_s: int = option(60, "seconds before the time limit at which a task is told to checkpoint",
                                ge=0)
    max_requeue: int = option(3, "times a timed-out task is requeued (preemptions do not count)", ge=0)
    wckey: str = option("", "workload characterization key, sbatch --wckey (empty: none; submitit's default "
                            "'submitit' is rejected where a site enforces its own wckeys)")
    python: str = option(
        "", "command that runs Python in the job, e.g. 'apptainer exec --nv pipeline.sif python' "
            "(empty: this interpreter)")
    setup: list[str] = field(default_factory=list, metadata={
        "help": "shell lines run before the task (module loads, exports)", "choices": None})
    extra: list[str] = field(default_factory=list, metadata={
        "help": "further sbatch flags as 'name=value', e.g. 'mail-type=FAIL'", "choices": None})


def load_profile(path: Path, stage: str) -> SlurmProfile:
    """The profile of `stage`: ``[default]`` updated by ``[stages.<stage>]``."""
    data = read_toml(Path(path))
    unknown = set(data) - {"default", "stages"}
    if unknown:
        raise ConfigError(f"{path}: unknown table(s) {sorted(unknown)} (expected [default], [stages.*])")
    misspelled = sorted(set(data.get("stages", {})) - set(STAGES))  # would silently give the stage the defaults
    if misspelled:
        raise ConfigError(f"{path}: unknown stage table(s) {', '.join(f'[stages.{s}]' for s in misspelled)}; "
                          f"the stages are {', '.join(STAGES)}")
    values = dict(data.get("default", {}))
    values.update(data.get("stages", {}).get(stage, {}))
    profile = build_section(SlurmProfile, values, f"{path}: [stages.{stage}]")
    return dataclasses.replace(profile, python=resolve_paths(profile.python, Path(path).resolve().parent))


def resolve_paths(command: str, base: Path) -> str:
    """`command` with its relative paths (a word holding a '/' or naming a container image) made absolute
    against `base`, the profile's folder: a profile means the same from any working directory."""
    words = shlex.split(command)
    for i, word in enumerate(words):
        if word.startswith(("-", "$", "~")) or Path(word).is_absolute() or \
                ("/" not in word and not word.endswith(IMAGES)):
            continue
        words[i] = str(base / word)
    return shlex.join(words)


IMAGES = (".sif", ".simg", ".img")  # Apptainer / Singularity images


def run_tag(run_dir: Path | str) -> str:
    """A short hash of the run directory: job names carry it, so one run's jobs can be told apart."""
    return hashlib.sha1(str(Path(run_dir).resolve()).encode()).hexdigest()[:8]


def job_name(stage: str, run_dir: Path | str) -> str:
    return f"pipeline-{stage}-{run_tag(run_dir)}"


def sbatch_parameters(profile: SlurmProfile, name: str) -> dict[str, Any]:
    """submitit's Slurm parameter names → values, for `profile`."""
    extra = {}
    for item in profile.extra:
        flag, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"slurm profile extra {item!r}: expected 'name=value'")
        extra[flag.strip()] = value.strip()
    params: dict[str, Any] = {
        "job_name": name,
        "time": profile.time_min,
        "cpus_per_task": profile.cpus_per_task,
        "mem": f"{int(profile.mem_gb * 1024)}MB",
        "array_parallelism": profile.array_parallelism,
        "signal_delay_s": profile.signal_delay_s,
        "setup": list(profile.setup),
        "wckey": profile.wckey or None,  # None: no --wckey line at all
    }
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(profile, key):
            params[key] = getattr(profile, key)
    if profile.gpus_per_node:
        params["gpus_per_node"] = profile.gpus_per_node
    if extra:
        params["additional_parameters"] = extra
    return params


def python_command(profile: SlurmProfile) -> str:
    return profile.python or shlex.quote(sys.executable)


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


@dataclass(frozen=True)
class ExecutorSpec:
    """Which launcher and how much parallelism; the run's ``[run]`` table provides it."""

    kind: str = "local"
    workers: int = 1
    slurm_profile: Path | None = None


@dataclass
class Outcome:
    """How one task ended: its result, or the error it raised; and where its log is."""

    result: Any = None
    error: str | None = None
    log: Path | None = None
    reason: str | None = None  # the one line of an InputError the task raised (a full disk, a bad input)


def failure(error: BaseException, log_file: Path) -> Outcome:
    """The outcome of a task that raised `error`."""
    return Outcome(error=repr(error), log=log_file, reason=str(error) if isinstance(error, InputError) else None)


class Executor:
    """Runs the calls of one stage's array: ``submit`` them, then ``wait``, ``results``, ``cancel``."""

    kind = ""

    def __init__(self, stage: str, jobs_dir: Path, workers: int = 1, force: bool = False):
        self.stage, self.jobs_dir, self.workers = stage, Path(jobs_dir), max(1, workers)
        self.force = force  # cancel what still runs of an earlier array of the stage (--force)
        self.calls: list[tuple] = []

    def claim(self, keep: set[str] = frozenset(), name: str = "") -> None:
        """Make sure nothing else writes this stage's outputs: Slurm tasks of an earlier array (recorded in
        ``array.json``, or by job `name`) other than those in `keep` (reattached), and local workers a
        driver left (``workers.json``). Found: ArrayBusy, or with `force` they are stopped and awaited."""
        slurm = sorted(earlier_tasks(self.jobs_dir / "array.json", name) - set(keep))
        local = live_workers(self.jobs_dir / "workers.json")
        if not slurm and not local:
            return
        what = ", ".join(filter(None, [f"Slurm array {', '.join(arrays_of(slurm))}" if slurm else "",
                                        f"local worker pid {', '.join(map(str, local))}" if local else ""]))
        if not self.force:
            raise ArrayBusy(f"{self.stage}: {what} of an earlier run of this stage, with other work, still runs "
                            f"in {self.jobs_dir.parent.parent}; wait for it, stop it with `python -m pipeline "
                            f"cancel --run-dir {self.jobs_dir.parent.parent}`, or run with --force to stop it first")
        log.warning("%s: --force: stopping %s of an earlier run of this stage, and waiting until it has ended",
                    self.stage, what)
        if slurm:
            end_slurm_tasks(slurm, self.stage)
        if local:
            end_local_workers(local, self.stage)

    def task_log(self, index: int) -> Path:
        return self.jobs_dir / f"task-{index}.log"

    def submit(self, fn: Callable[..., Any], calls: Sequence[tuple]) -> None:
        raise NotImplementedError

    def wait(self, progress: bool = True) -> None:
        raise NotImplementedError

    def outcomes(self) -> list[Outcome]:
        raise NotImplementedError

    def cancel(self) -> None:
        """Stop what has not ended (the tasks' progress on disk stays, so a later run resumes)."""

    def results(self) -> list[Any]:
        """The results in call order, once every task has ended; TaskFailed names the first failure."""
        outcomes = self.outcomes()
        failed = [i for i, o in enumerate(outcomes) if o.error is not None]
        if failed:
            i = failed[0]
            first = outcomes[i]
            more = f" ({len(failed) - 1} more failed)" if len(failed) > 1 else ""
            empty = not (first.log and first.log.exists() and first.log.stat().st_size)
            log_file = f"{first.log}{' (empty)' if empty else ''}"
            if first.reason:  # the task said what is wrong in one line: that line, not a traceback
                raise TaskFailed(f"{self.stage}: task {i} failed{more}: {first.reason}; log: {log_file}")
            raise TaskFailed(f"{self.stage}: task {i} {self.calls[i]!r} failed{more}; log: {log_file}\n"
                             f"{first.error}")
        return [o.result for o in outcomes]

    def run(self, fn: Callable[..., Any], calls: Sequence[tuple], progress: bool = True) -> list[Any]:
        """Submit, wait for every task, return the results; an interrupted driver cancels its tasks."""
        self.submit(fn, calls)
        try:
            self.wait(progress)
        except KeyboardInterrupt:
            self.cancel()
            raise
        return self.results()


class DebugExecutor(Executor):
    """In this process, one task after the other (for pdb and tests)."""

    kind = "debug"

    def submit(self, fn: Callable[..., Any], calls: Sequence[tuple]) -> None:
        self.claim()
        self.fn, self.calls, self._outcomes = fn, [tuple(c) for c in calls], []

    def wait(self, progress: bool = True) -> None:
        for i, args in enumerate(tqdm(self.calls, desc=self.stage, disable=not progress)):
            try:
                self._outcomes.append(Outcome(LoggedTask(self.fn, self.task_log(i))(*args), log=self.task_log(i)))
            except Exception as e:  # the failure rule: the other tasks still run
                self._outcomes.append(failure(e, self.task_log(i)))

    def outcomes(self) -> list[Outcome]:
        return self._outcomes


class LocalExecutor(Executor):
    """At most `workers` processes at once on this machine."""

    kind = "local"

    def submit(self, fn: Callable[..., Any], calls: Sequence[tuple]) -> None:
        self.claim()
        self.calls = [tuple(c) for c in calls]
        # spawn, not fork: a forked child of a process holding torch/OpenMP threads can deadlock
        self._pool = ProcessPoolExecutor(max_workers=min(self.workers, len(self.calls)),
                                         mp_context=multiprocessing.get_context("spawn"),
                                         initializer=start_worker, initargs=(os.getpid(),))
        self._futures: list[Future] = [self._pool.submit(LoggedTask(fn, self.task_log(i)), *args)
                                       for i, args in enumerate(self.calls)]
        # who works for this stage now: a later driver waits for them (they die with this driver, but a
        # process's death takes a moment, and elsewhere than Linux only a poll notices it)
        write_json(self.jobs_dir / "workers.json", {"host": HOST, "workers": [
            [w.pid, process_start(w.pid)] for w in multiprocessing.active_children()]})

    def wait(self, progress: bool = True) -> None:
        for _ in tqdm(as_completed(self._futures), total=len(self._futures), desc=self.stage, disable=not progress):
            pass
        self._pool.shutdown()
        (self.jobs_dir / "workers.json").unlink(missing_ok=True)

    def outcomes(self) -> list[Outcome]:
        outcomes = []
        for i, future in enumerate(self._futures):
            if future.cancelled():
                outcomes.append(Outcome(error="cancelled", log=self.task_log(i)))
            elif future.exception() is not None:
                outcomes.append(failure(future.exception(), self.task_log(i)))
            else:
                outcomes.append(Outcome(future.result(), log=self.task_log(i)))
        return outcomes

    def cancel(self) -> None:
        """Drop the queued tasks and stop the running ones (shutdown alone lets them run to the end)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        for worker in multiprocessing.active_children():
            worker.terminate()


ACTIVE = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED", "RESIZING", "REQUEUE_HOLD",
          "REQUEUE_FED", "SIGNALING", "STAGE_OUT"}


class SlurmExecutor(Executor):
    """One ``sbatch --array`` per stage through submitit; reattaches to the array a restarted driver left."""

    kind = "slurm"

    def __init__(self, stage: str, jobs_dir: Path, workers: int, profile: SlurmProfile, run_dir: Path,
                 force: bool = False):
        super().__init__(stage, jobs_dir, workers, force)
        self.profile, self.name = profile, job_name(stage, run_dir)
        self.record = self.jobs_dir / "array.json"

    def submit(self, fn: Callable[..., Any], calls: Sequence[tuple]) -> None:
        self.calls = [tuple(c) for c in calls]
        digest = hashlib.sha256(repr((getattr(fn, "fn", fn).__qualname__, self.calls)).encode()).hexdigest()
        task = fn if isinstance(fn, CheckpointableTask) else CheckpointableTask(fn)
        jobs: list[submitit.Job | None] = [None] * len(self.calls)
        if self.record.exists() and json.loads(self.record.read_text())["calls_sha256"] == digest:
            for i, job_id in enumerate(json.loads(self.record.read_text())["tasks"]):
                job = submitit.SlurmJob(folder=self.jobs_dir / "%j", job_id=job_id)
                if _still_useful(job):
                    jobs[i] = job
            log.info("%s: reattached to %d task(s) of array %s", self.stage, sum(j is not None for j in jobs),
                     json.loads(self.record.read_text())["tasks"][0].split("_")[0])
        self.claim(keep={job.job_id for job in jobs if job is not None}, name=self.name)
        missing = [i for i, job in enumerate(jobs) if job is None]
        if missing:
            executor = make_slurm_executor(self.profile, self.jobs_dir, self.name)
            with executor.batch():  # one sbatch --array for all calls
                submitted = [executor.submit(task, *self.calls[i]) for i in missing]
            for i, job in zip(missing, submitted, strict=True):
                jobs[i] = job
            log.info("%s: submitted array job %s (%d tasks), logs in %s", self.stage,
                     submitted[0].job_id.split("_")[0], len(submitted), self.jobs_dir)
        self.jobs = jobs
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        write_json(self.record, {"calls_sha256": digest, "name": self.name, "tasks": [j.job_id for j in jobs]})

    def wait(self, progress: bool = True) -> None:
        for _ in tqdm(submitit.helpers.as_completed(self.jobs, poll_frequency=1), total=len(self.jobs),
                      desc=self.stage, disable=not progress):
            pass

    def outcomes(self) -> list[Outcome]:
        outcomes = []
        for job in self.jobs:
            try:
                outcomes.append(Outcome(job.result(), log=Path(str(job.paths.stderr))))
            except Exception as e:  # reported by results(); a remote error comes back as its traceback's text
                outcomes.append(Outcome(error=f"(Slurm job {job.job_id}) {e}", log=Path(str(job.paths.stderr)),
                                        reason=reported_reason(str(e))))
        return outcomes

    def results(self) -> list[Any]:
        results = super().results()
        # every task succeeded: the record has done its job; a later run of the stage submits afresh
        # (its tasks find their finished work on disk) instead of reusing these results
        self.record.unlink(missing_ok=True)
        return results

    def cancel(self) -> None:
        for job in self.jobs:
            job.cancel(check=False)


def _still_useful(job: submitit.Job) -> bool:
    """A recorded task worth waiting for: finished with a result, or still pending / running.

    Its state comes from squeue first: accounting (what submitit's ``job.state`` reads) can lag a
    just-submitted array by seconds, which made a restarted driver resubmit tasks that were queued.
    """
    if job.paths.result_pickle.exists():
        try:
            job.result()
            return True
        except Exception:  # it failed: resubmit it
            return False
    return slurm_states({job.job_id}).get(job.job_id) in ACTIVE


def earlier_tasks(record: Path, name: str = "") -> set[str]:
    """Slurm tasks still pending or running of the array `record` (``array.json``) holds, and of any
    job named `name` (an array whose driver was killed before it could record it)."""
    if not (shutil.which("squeue") or shutil.which("sacct")):
        return set()  # no Slurm here (a run directory copied off the cluster): nothing of it runs here
    tasks = set(json.loads(record.read_text())["tasks"]) if record.exists() else set()
    states = slurm_states(tasks) if tasks else {}
    if name and shutil.which("squeue"):
        states |= _job_states(["squeue", "-h", "-r", "-n", name, "-o", "%i|%T"])
    return {task for task, state in states.items() if state in ACTIVE}


def arrays_of(tasks: Sequence[str]) -> list[str]:
    return sorted({t.split("_")[0] for t in tasks})


END_WAIT_S = 900  # Slurm's KillWait and epilogs take seconds; a node that does not answer, minutes


def end_slurm_tasks(tasks: Sequence[str], stage: str) -> None:
    """scancel the arrays of `tasks` and return once Slurm reports none of them pending or running."""
    done = subprocess.run(["scancel", *arrays_of(tasks)], capture_output=True, text=True)
    if done.returncode != 0:
        raise InputError(f"scancel {' '.join(arrays_of(tasks))}: {done.stderr.strip() or f'exit {done.returncode}'}")
    deadline = time.monotonic() + END_WAIT_S
    while active := sorted(t for t, s in slurm_states(set(tasks)).items() if s in ACTIVE):
        if time.monotonic() > deadline:
            raise ArrayBusy(f"{stage}: Slurm task(s) {', '.join(active)} still not ended {END_WAIT_S} s after "
                            "scancel; run again once squeue no longer shows them")
        time.sleep(1.0)
    log.info("%s: Slurm array %s has ended", stage, ", ".join(arrays_of(tasks)))


def process_start(pid: int) -> str | None:
    """When process `pid` started (clock ticks since boot, from /proc): with the pid, it names one process
    (a pid is reused once its process has ended). None where /proc has no such process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[19]
    except (OSError, IndexError):
        return None


def live_workers(record: Path) -> list[int]:
    """The local workers in `record` (``workers.json``) that are still alive on this host."""
    if not record.exists():
        return []
    data = json.loads(record.read_text())
    if data.get("host") != HOST:
        return []  # another machine's workers die with their driver there
    return [pid for pid, start in data["workers"] if process_start(pid) is not None and process_start(pid) == start]


def end_local_workers(pids: Sequence[int], stage: str) -> None:
    """SIGKILL local workers a driver left, and return once they have ended."""
    starts = {pid: process_start(pid) for pid in pids}
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + END_WAIT_S
    while alive := [pid for pid in pids if starts[pid] is not None and process_start(pid) == starts[pid]
                    and _process_state(pid) != "Z"]:
        if time.monotonic() > deadline:
            raise ArrayBusy(f"{stage}: local worker pid {', '.join(map(str, alive))} still alive after SIGKILL")
        time.sleep(0.1)


def _process_state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return None


def slurm_states(jobs: set[str]) -> dict[str, str]:
    """{job id: state} of the `jobs` Slurm knows: squeue's (a cancelled task stays COMPLETING until its
    processes are gone), then accounting's for those squeue has forgotten. A job neither knows: absent."""
    states = _job_states(["squeue", "-h", "-r", "-o", "%i|%T", "-j", ",".join(sorted(jobs))])  # -r: a task a line
    forgotten = jobs - states.keys()
    if forgotten:
        states |= _job_states(["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", ",".join(sorted(forgotten))])
    return states


def _job_states(command: list[str]) -> dict[str, str]:
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        log.warning("cannot ask Slurm about jobs: %s", e)
        return {}
    if out.returncode != 0:
        if "Invalid job id" not in out.stderr:  # squeue's answer for a job it has forgotten
            log.warning("cannot ask Slurm about jobs: %s", out.stderr.strip())
        return {}
    states = {}
    for line in out.stdout.splitlines():  # a requeued job in sacct: its last record counts
        job, _, state = line.partition("|")
        if state.strip():
            states[job.strip()] = state.split()[0].rstrip("+")
    return states


def make_executor(spec: ExecutorSpec, stage: str, jobs_dir: Path, force: bool = False) -> Executor:
    """The backend of `spec` for one stage; the run directory is the parent of ``jobs/<stage>``. With
    `force` it stops what an earlier array of the stage still runs instead of refusing to start."""
    if spec.kind == "debug":
        return DebugExecutor(stage, jobs_dir, force=force)
    if spec.kind == "local":
        return LocalExecutor(stage, jobs_dir, spec.workers, force)
    if spec.kind == "slurm":
        if spec.slurm_profile is None:
            raise ConfigError("executor slurm needs run.slurm_profile")
        return SlurmExecutor(stage, jobs_dir, spec.workers, load_profile(spec.slurm_profile, stage),
                             Path(jobs_dir).parent.parent, force)
    raise ConfigError(f"unknown executor {spec.kind!r} (known: debug, local, slurm)")


def run_tasks(fn: Callable[..., Any], calls: Sequence[tuple], *, spec: ExecutorSpec, jobs_dir: Path,
              stage: str, progress: bool = True, force: bool = False) -> list[Any]:
    """Call ``fn(*args)`` for every tuple in `calls` on the backend of `spec`; the results in call order."""
    calls = [tuple(c) for c in calls]
    if not calls:
        return []
    log.info("%s: %d task(s) on %s executor", stage, len(calls), spec.kind)
    return make_executor(spec, stage, jobs_dir, force).run(fn, calls, progress)


def make_slurm_executor(profile: SlurmProfile, jobs_dir: Path, name: str) -> submitit.SlurmExecutor:
    """submitit's Slurm executor itself (AutoExecutor would drop a None, e.g. to leave out --wckey)."""
    executor = submitit.SlurmExecutor(folder=Path(jobs_dir) / "%j", max_num_timeout=profile.max_requeue,
                                      python=profile.python or None)
    executor.update_parameters(**sbatch_parameters(profile, name))
    return executor


def cancel_run(run_dir: Path) -> list[str]:
    """scancel the arrays a run recorded (``jobs/*/array.json``) that Slurm still shows pending or running;
    returns their job ids. InputError (one line) when scancel is missing or fails."""
    tasks = {task for record in Path(run_dir).glob("jobs/*/array.json")
             for task in json.loads(record.read_text())["tasks"]}
    if not tasks:
        return []
    if shutil.which("scancel") is None:
        raise InputError("scancel: not found on PATH (run `pipeline cancel` where Slurm's commands are)")
    states = slurm_states(tasks)
    ids = sorted({t.split("_")[0] for t in tasks if states.get(t) in ACTIVE})
    if ids:
        done = subprocess.run(["scancel", *ids], capture_output=True, text=True)
        if done.returncode != 0:
            raise InputError(f"scancel {' '.join(ids)}: {done.stderr.strip() or f'exit {done.returncode}'}")
    return ids
