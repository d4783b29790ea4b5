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
--run-dir D`` cancels exactly one run (its Slurm arrays and its live local workers). What a run directory
records never chooses a process or job by itself: a local worker is signalled only when it carries its
launch's mark in its environment, a Slurm job cancelled only when Slurm shows it as the user's with the
stage's job name (:mod:`.workers`, :mod:`.states`), and a pickle of submitit's (a task's call, its
result) is loaded, by the job or the driver, only when it is the user's own file nobody else can write
(:mod:`.private`, :mod:`.guard`).
A stage's sbatch parameters come from a profile file (``slurm/``): a ``[default]`` table,
overridden per stage by ``[stages.<stage>]``; the fields of :class:`SlurmProfile` are the only
valid keys, defined once here.

The modules: :mod:`.outcome` (how a task ended, the errors), :mod:`.tasks` (what runs inside a task),
:mod:`.base` (the interface), :mod:`.local` (``debug`` and ``local``), :mod:`.slurm` (``slurm``),
:mod:`.profile` (the Slurm profile format, job names), :mod:`.preview` (the dry run of a submission),
:mod:`.states` (what Slurm says about jobs, and scancel), :mod:`.workers` (local worker records),
:mod:`.private` and :mod:`.guard` (which pickles are loaded) and
:mod:`.spec` (choosing a backend, :func:`run_tasks`).
"""

from pipeline.infra.executor.base import Executor
from pipeline.infra.executor.local import DebugExecutor, LocalExecutor
from pipeline.infra.executor.outcome import END_WAIT_S, ArrayBusy, Outcome, TaskFailed, failure
from pipeline.infra.executor.preview import Preview, preview_submission
from pipeline.infra.executor.profile import (
    IMAGES,
    SlurmProfile,
    job_name,
    load_profile,
    make_slurm_executor,
    profile_file,
    resolve_paths,
    run_tag,
    sbatch_parameters,
)
from pipeline.infra.executor.slurm import SlurmExecutor
from pipeline.infra.executor.spec import ExecutorSpec, make_executor, run_tasks
from pipeline.infra.executor.states import ACTIVE, arrays_of, cancel_run, earlier_tasks, end_slurm_tasks, slurm_states
from pipeline.infra.executor.tasks import LOG_FORMAT, CheckpointableTask, LoggedTask, ensure_logging, start_worker
from pipeline.infra.executor.workers import end_local_workers, end_run_workers, live_workers, process_start
from pipeline.infra.rundir import HOST  # the tests read the host the worker records name from here

__all__ = [
    "ACTIVE", "END_WAIT_S", "HOST", "IMAGES", "LOG_FORMAT",
    "ArrayBusy", "CheckpointableTask", "DebugExecutor", "Executor", "ExecutorSpec", "LocalExecutor", "LoggedTask",
    "Outcome", "Preview", "SlurmExecutor", "SlurmProfile", "TaskFailed",
    "arrays_of", "cancel_run", "earlier_tasks", "end_local_workers", "end_run_workers", "end_slurm_tasks",
    "ensure_logging", "failure",
    "job_name", "live_workers", "load_profile", "make_executor", "make_slurm_executor", "preview_submission",
    "profile_file",
    "process_start", "resolve_paths", "run_tag", "run_tasks", "sbatch_parameters", "slurm_states", "start_worker",
]
