"""The executor layer without a cluster: debug vs local, throttling, errors, profiles, the sbatch script."""

import json
import os
import subprocess
from pathlib import Path

import pytest

from pipeline.config import ConfigError
from pipeline.infra.executor import ExecutorSpec, TaskFailed, job_name, load_profile, preview_submission, run_tasks
from tests.support import tasks

pytestmark = pytest.mark.thirdparty  # the floors job runs these (tests/test_floors.py)

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).parent / "golden"
CALLS = [(i, 123) for i in range(4)]


def test_local_and_debug_give_identical_results(tmp_path):
    debug = run_tasks(tasks.noisy_sum, CALLS, spec=ExecutorSpec("debug"), jobs_dir=tmp_path, stage="t")
    local = run_tasks(tasks.noisy_sum, CALLS, spec=ExecutorSpec("local", workers=2), jobs_dir=tmp_path,
                      stage="t")
    assert debug == local
    assert [r["index"] for r in local] == [0, 1, 2, 3]


def test_local_runs_at_most_n_at_once(tmp_path):
    calls = [(i, 1.0, str(tmp_path)) for i in range(4)]
    assert run_tasks(tasks.record_interval, calls, spec=ExecutorSpec("local", workers=2), jobs_dir=tmp_path,
                     stage="t") == [0, 1, 2, 3]
    spans = [json.loads((tmp_path / f"{i}.json").read_text()) for i in range(4)]
    assert all(s["pid"] != os.getpid() for s in spans)
    events = sorted([(s["start"], 1) for s in spans] + [(s["end"], -1) for s in spans])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    assert peak == 2


def test_profile_stage_table_overrides_default():
    profile = ROOT / "slurm" / "profiles" / "example-gpu-cluster.toml"
    attack, synth = load_profile(profile, "attack"), load_profile(profile, "synth")
    assert (attack.partition, attack.gpus_per_node, attack.constraint) == ("gpu", 1, "a100|h100")
    assert (synth.partition, synth.gpus_per_node) == ("cpu", 0)
    assert synth.python.startswith("apptainer exec --nv")


@pytest.mark.parametrize("text,message", [
    ("[default]\ngpus = 1\n", r"p\.toml: \[stages\.cv\]: unknown key 'gpus'"),
    ("[stages.cv]\nmem_gb = 'lots'\n", r"p\.toml: \[stages\.cv\] mem_gb: expected float"),
    ("[defaults]\n", r"p\.toml: unknown table"),
    # a misspelled stage table used to be ignored (the stage silently got the defaults)
    ("[stages.atack]\ngpus = 1\n", r"p\.toml: unknown stage table\(s\) \[stages\.atack\]; the stages are synth, "),
    ("[stages.tune_model]\n", r"unknown stage table\(s\) \[stages\.tune_model\]; .*tune-model"),
])
def test_bad_profile_is_named(tmp_path, text, message):
    (tmp_path / "p.toml").write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_profile(tmp_path / "p.toml", "cv")


def test_generated_sbatch_script_matches_golden_file(tmp_path):
    """Any change to what is submitted shows up as a diff of this file in review.

    The script is submitit's own, captured by preview_submission (a stand-in sbatch). Regenerate with
    UPDATE_GOLDEN=1 after an intended change.
    """
    profile = load_profile(ROOT / "slurm" / "profiles" / "example-gpu-cluster.toml", "attack")
    jobs = tmp_path / "run" / "jobs" / "attack"
    preview = preview_submission(profile, job_name("attack", "/scratch/run"), jobs, n_tasks=8)
    script = preview.script.replace(str(tmp_path / "run"), "/scratch/run").replace(str(ROOT), "<repo>")
    assert "#SBATCH --job-name=pipeline-attack-" in script  # the run's tag: one run's jobs can be told apart
    assert "wckey" not in script  # submitit's default --wckey=submitit is left out (some sites reject it)
    assert "<repo>/slurm/profiles/pipeline.sif" in script  # relative to the profile, not the working directory
    assert not (tmp_path / "run").exists(), "a preview leaves nothing behind"
    golden = GOLDEN / "sbatch-attack-example-gpu-cluster.sh"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.write_text(script)
    assert script == golden.read_text()


def exec_done(proc: subprocess.Popen, entry: str) -> None:
    """Wait until `proc` runs its program with `entry` in its environment: between fork and exec
    /proc/PID/environ is still the parent's, and the executor rightly leaves such a process alone (a race
    that a loaded CI machine hit)."""
    import time  # only this wait needs it

    environ = Path(f"/proc/{proc.pid}/environ")
    for _ in range(500):
        if entry.encode() in environ.read_bytes().split(b"\0"):
            return
        time.sleep(0.01)
    raise AssertionError(f"pid {proc.pid} never showed {entry} in its environment")


@pytest.mark.parametrize("kind", ["debug", "local"])
def test_a_worker_a_driver_left_alive_stops_the_next_driver_or_is_ended_with_force(tmp_path, kind):
    """The rule for local workers: a second array never writes beside the first's survivors.
    A real process stands for a worker that outlived its driver (started with its launch's mark and
    recorded in workers.json, as LocalExecutor starts and records its pool)."""
    from pipeline.infra.executor import ArrayBusy
    from pipeline.infra.executor.workers import WORKER_ENV, record_workers, worker_mark

    mark = worker_mark(tmp_path, "t0")
    survivor = subprocess.Popen(["sleep", "600"], env={**os.environ, WORKER_ENV: mark})
    try:
        exec_done(survivor, f"{WORKER_ENV}={mark}")
        record_workers(tmp_path / "workers.json", "t0", [survivor.pid])
        with pytest.raises(ArrayBusy, match=rf"local worker pid {survivor.pid} of an earlier run .* still runs"
                                            r".*pipeline cancel.*--force"):
            run_tasks(tasks.noisy_sum, CALLS, spec=ExecutorSpec(kind, workers=2), jobs_dir=tmp_path, stage="t")
        assert survivor.poll() is None  # refused: nothing was stopped
        results = run_tasks(tasks.noisy_sum, CALLS, spec=ExecutorSpec(kind, workers=2), jobs_dir=tmp_path,
                            stage="t", force=True)
        assert survivor.wait(timeout=5) == -9 and len(results) == len(CALLS)
    finally:
        survivor.kill()
        survivor.wait()


def test_workers_of_an_ended_driver_and_a_reused_pid_do_not_stop_a_driver(tmp_path):
    from pipeline.infra.executor import HOST

    alive_but_other = subprocess.Popen(["sleep", "600"])  # its pid with another start time: a reused pid
    try:
        (tmp_path / "workers.json").write_text(json.dumps(
            {"host": HOST, "workers": [[alive_but_other.pid, "1"], [2 ** 22 + 7, "5"]]}))
        assert len(run_tasks(tasks.noisy_sum, CALLS, spec=ExecutorSpec("local", 2), jobs_dir=tmp_path,
                             stage="t")) == len(CALLS)
        assert alive_but_other.poll() is None and not (tmp_path / "workers.json").exists()
    finally:
        alive_but_other.kill()
        alive_but_other.wait()


@pytest.mark.parametrize("kind", ["debug", "local"])
def test_a_task_that_cannot_write_is_one_line_naming_the_file(tmp_path, kind):
    target = tmp_path / "big.bin"
    with pytest.raises(TaskFailed) as e:
        run_tasks(tasks.write_past_the_limit, [(str(target), 1000)], spec=ExecutorSpec(kind, 1), jobs_dir=tmp_path,
                  stage="write")
    assert "\n" not in str(e.value)
    assert str(e.value).startswith(f"write: task 0 failed: {target}: cannot write (file size limit reached"), e.value
