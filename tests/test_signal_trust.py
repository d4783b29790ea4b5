"""Nothing read from a run directory chooses a process to signal, a Slurm job to cancel (issue #36, 14, 15, 24)
or code to run (a pickle in jobs/).

A writer of the run directory can plant ``jobs/<stage>/workers.json`` or ``array.json`` naming any of the
user's processes or jobs; the pipeline signals a process only when the process itself carries the mark its
driver gave it at launch (in its environment, read from /proc), and cancels a Slurm job only when Slurm says
it is the user's and carries this run's stage's job name. A pickle submitit left in ``jobs/`` is loaded, by
the job or the driver, only when it is the user's own file that nobody else can write.
"""

import json
import os
import pickle
import pwd
import subprocess
import sys
import time

import pytest
import submitit

from pipeline.infra.executor import (
    HOST,
    ExecutorSpec,
    SlurmExecutor,
    TaskFailed,
    load_profile,
    process_start,
    run_tasks,
)
from pipeline.infra.executor.slurm import calls_digest
from pipeline.infra.executor.workers import running
from tests.support import tasks
from tests.support.runs import ROOT, TEST_PROFILE

CALLS = [(i, 123) for i in range(2)]


def cancel(run):
    return subprocess.run([sys.executable, "-m", "pipeline", "cancel", "--run-dir", str(run)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def plant_workers(jobs_dir, pid, **extra):
    """A workers.json naming `pid` (with its true start time, as anyone can read from /proc)."""
    jobs_dir.mkdir(parents=True, exist_ok=True)
    (jobs_dir / "workers.json").write_text(json.dumps(
        {"host": HOST, "workers": [[pid, process_start(pid)]], **extra}))


@pytest.fixture
def bystander():
    """One of the user's own processes that the pipeline did not start."""
    proc = subprocess.Popen(["sleep", "600"])
    yield proc
    proc.kill()
    proc.wait()


@pytest.mark.parametrize("force", [False, True])
def test_a_planted_workers_record_never_stops_a_driver_nor_kills_the_process_it_names(tmp_path, bystander, force):
    """Case 14: the refusal advised `cv --force`, which SIGKILLed the named process. A token in the record
    does not help: the process must carry it."""
    jobs = tmp_path / "run" / "jobs" / "cv"
    plant_workers(jobs, bystander.pid, token="0" * 32)
    results = run_tasks(tasks.noisy_sum, CALLS, spec=ExecutorSpec("local", workers=2), jobs_dir=jobs, stage="cv",
                        force=force)
    assert len(results) == len(CALLS)
    time.sleep(0.2)
    assert bystander.poll() is None, "a process the pipeline did not start was killed"


def test_cancel_never_kills_a_process_a_planted_record_names(tmp_path, bystander):
    plant_workers(tmp_path / "run" / "jobs" / "cv", bystander.pid)
    out = cancel(tmp_path / "run")
    time.sleep(0.2)
    assert bystander.poll() is None
    assert out.returncode == 0 and "stopped" not in out.stdout, out


def test_cancel_stops_the_live_local_workers_of_a_run(tmp_path):
    """Case 24: the refusal for a live local worker advises `pipeline cancel`, which only knew Slurm. It
    now ends the run's local workers (those carrying their launch's mark), and their driver fails."""
    run, logs = tmp_path / "run", tmp_path / "spans"
    script = ("import sys; from pipeline.infra.executor import ExecutorSpec, run_tasks; "
              "from tests.support import tasks; "
              "run_tasks(tasks.record_interval, [(i, 600.0, sys.argv[2]) for i in range(2)], "
              "spec=ExecutorSpec('local', workers=2), jobs_dir=sys.argv[1], stage='cv', progress=False)")
    driver = subprocess.Popen([sys.executable, "-c", script, str(run / "jobs" / "cv"), str(logs)], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        record = run / "jobs" / "cv" / "workers.json"
        deadline = time.time() + 120
        while not record.exists():
            assert time.time() < deadline and driver.poll() is None, "the driver never recorded its workers"
            time.sleep(0.1)
        workers = json.loads(record.read_text())["workers"]
        pids = sorted(pid for pid, _ in workers)
        out = cancel(run)
        assert out.returncode == 0, out
        assert f"stopped local worker pid {', '.join(map(str, pids))}" in out.stdout, out
        assert driver.wait(timeout=60) != 0  # its workers were killed: the stage fails
        assert not any(running(pid, start) for pid, start in workers)
        assert not logs.exists(), "a task finished although it was cancelled"
    finally:
        driver.kill()
        driver.wait()


# -- Slurm ------------------------------------------------------------------------------------------------

def squeue_state(job):
    return subprocess.run(["squeue", "-h", "-r", "-j", job, "-o", "%T"], capture_output=True, text=True).stdout


@pytest.fixture
def foreign_job(slurm_cluster, tmp_path):
    """A Slurm array task of the user's that is not the pipeline's (another project's work)."""
    out = subprocess.run(["sbatch", "--parsable", "--array=0", "-J", "someone-elses-work", "-t", "10",
                          "-o", str(tmp_path / "slurm-%A_%a.out"), "--wrap", "sleep 600"],
                         capture_output=True, text=True, check=True)
    job = out.stdout.strip().split(";")[0]
    deadline = time.time() + 60
    while not squeue_state(f"{job}_0").strip():
        assert time.time() < deadline, f"job {job} never showed in squeue"
        time.sleep(0.2)
    yield f"{job}_0"
    subprocess.run(["scancel", job], check=False)


def plant_array(run, task, **extra):
    record = run / "jobs" / "cv" / "array.json"
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps({"tasks": [task], **extra}))
    return record.parent


@pytest.mark.slurm
def test_cancel_never_cancels_a_job_a_planted_array_record_names(tmp_path, foreign_job):
    """Case 15: `pipeline cancel` scancelled whatever array.json named. Only jobs Slurm shows as the user's,
    named for this run's stage, are cancelled."""
    run = tmp_path / "run"
    plant_array(run, foreign_job)
    out = cancel(run)
    assert out.returncode == 0 and "no Slurm array of this run is pending or running" in out.stdout, out
    assert "someone-elses-work" in out.stderr and "left alone" in out.stderr, out.stderr
    assert squeue_state(foreign_job).strip() in {"PENDING", "RUNNING"}, "the foreign job was cancelled"


@pytest.mark.slurm
@pytest.mark.parametrize("kind, same_work", [("local", False), ("slurm", False), ("slurm", True)])
def test_a_forced_stage_never_cancels_a_job_a_planted_array_record_names(tmp_path, foreign_job, kind, same_work):
    """Case 15, claim() under --force: it scancelled the planted record's job before starting its own work.
    A record of the same work (its digest is no secret) made a Slurm driver reattach to that job and wait for
    it (and cancel it when interrupted)."""
    digest = {"calls_sha256": calls_digest(tasks.noisy_sum, [CALLS[0]])} if same_work else {}
    jobs = plant_array(tmp_path / "run", foreign_job, **digest)
    calls = CALLS[:1] if same_work else CALLS
    spec = ExecutorSpec(kind, workers=2, slurm_profile=TEST_PROFILE)
    assert run_tasks(tasks.noisy_sum, calls, spec=spec, jobs_dir=jobs, stage="cv", force=True) == [
        tasks.noisy_sum(*call) for call in calls]
    assert squeue_state(foreign_job).strip() in {"PENDING", "RUNNING"}, "the foreign job was cancelled"


# -- Pickles: what submitit unpickles from the run directory must be the user's own, private file ----------

class Planted:
    """What a writer of the run directory plants as a pickle: unpickling it creates `marker` (any code could
    run there instead)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


@pytest.fixture(scope="session")
def intruder():
    """(uid, gid) of a second local user: another user who can write a shared run directory."""
    name = "pipeline-intruder"
    try:
        user = pwd.getpwnam(name)
    except KeyError:
        if subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name]).returncode:
            pytest.skip("cannot create a second user (useradd, as root)")
        user = pwd.getpwnam(name)
    return user.pw_uid, user.pw_gid


def plant(path, payload, owner=None, mode=0o600):
    """Replace `path` as its other writer would: a new file, renamed over it (theirs, or writable by others)."""
    planted = path.with_name(path.name + ".planted")
    planted.write_bytes(pickle.dumps(payload))
    planted.chmod(mode)
    if owner:
        os.chown(planted, *owner)
    planted.replace(path)


@pytest.mark.slurm
def test_a_submitted_pickle_replaced_before_the_job_starts_never_runs(tmp_path, shared_tmp, slurm_cluster,
                                                                       intruder):
    """The job unpickled whatever ``<job>_submitted.pkl`` held when it started: a file renamed over it by
    another writer of the run directory ran as the user. The job's guard refuses a pickle that is not the
    user's own and private, in one line naming it, before anything unpickles it."""
    profile = tmp_path / "held.toml"  # the array waits (--begin) until the pickles are replaced
    profile.write_text(TEST_PROFILE.read_text().replace('partition = "debug"',
                                                        'partition = "debug"\nextra = ["begin=now+600"]'))
    executor = SlurmExecutor("cv", shared_tmp / "jobs" / "cv", 2, load_profile(profile, "cv"))
    executor.submit(tasks.noisy_sum, CALLS)
    markers = [tmp_path / f"planted-{i}" for i in range(2)]
    pickles = [job.paths.submitted_pickle for job in executor.jobs]
    plant(pickles[0], Planted(markers[0]), owner=intruder)  # another user's file
    plant(pickles[1], Planted(markers[1]), mode=0o666)  # the user's, but anyone may rewrite it
    array = executor.jobs[0].job_id.split("_")[0]
    subprocess.run(["scontrol", "update", f"JobId={array}", "StartTime=now"], check=True)
    executor.wait(progress=False)
    with pytest.raises(TaskFailed) as e:
        executor.results()
    assert not any(m.exists() for m in markers), "a planted pickle ran"
    assert "\n" not in str(e.value), e.value
    assert f"{pickles[0]}: owned by uid {intruder[0]}, not you" in str(e.value), e.value
    log = executor.jobs[1].paths.stderr.read_text()
    assert f"{pickles[1]}: writable by others (mode 666)" in log, log


@pytest.mark.slurm
def test_a_planted_result_pickle_is_never_unpickled_by_the_driver(tmp_path, shared_tmp, slurm_cluster, intruder,
                                                                   caplog):
    """A planted ``array.json`` of the same work (its digest is no secret) naming tasks Slurm no longer knows,
    with their result pickles: a restarted driver unpickled them. Now a result pickle that is not the user's
    own and private is refused with one line naming it, and its task is run again."""
    jobs = shared_tmp / "jobs" / "cv"
    markers = [tmp_path / f"planted-{i}" for i in range(2)]
    tasks_ids = ["999998_0", "999999_0"]
    results = []
    for task, marker, how in zip(tasks_ids, markers, [{"owner": intruder}, {"mode": 0o666}], strict=True):
        result = submitit.SlurmJob(folder=jobs / "%j", job_id=task).paths.result_pickle
        result.parent.mkdir(parents=True)
        plant(result, ("success", Planted(marker)), **how)
        results.append(result)
    (jobs / "array.json").write_text(json.dumps({"calls_sha256": calls_digest(tasks.noisy_sum, CALLS),
                                                 "tasks": tasks_ids}))
    spec = ExecutorSpec("slurm", workers=2, slurm_profile=TEST_PROFILE)
    assert run_tasks(tasks.noisy_sum, CALLS, spec=spec, jobs_dir=jobs, stage="cv", progress=False) == [
        tasks.noisy_sum(*call) for call in CALLS]
    assert not any(m.exists() for m in markers), "a planted result pickle was unpickled"
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(f"{results[0]}: owned by uid {intruder[0]}, not you" in w for w in warnings), warnings
    assert any(f"{results[1]}: writable by others (mode 666)" in w for w in warnings), warnings
