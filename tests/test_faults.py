"""Killed and concurrent runs, full disks, read-only and reused run directories.

Each test makes the fault for real: a driver killed with SIGKILL, a second process holding a
stage, a file-size limit on the process, temporaries left by processes that have ended.
"""

import json
import logging
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import xarray as xr

from pipeline.cli import main
from pipeline.infra.rundir import HOST, RunDir, recover_replaced
from tests.support.chains import pipeline_cmd
from tests.support.runs import FEWEST_QUICK, TINY, copy_run, copy_trained, stage_held

ROOT = Path(__file__).resolve().parent.parent
ATTACK = ["--seed", "5", "cv.folds=3", "attack.targets=test", "attack.max_iter=30", "attack.batch_size=32",
          "attack.chunk_samples=8", "attack.lam=0.001", "attack.lr=0.1", "--executor", "debug", *FEWEST_QUICK]


def children(pid: int) -> list[int]:
    """Live (not zombie) processes whose parent is `pid`, from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def dead_pid() -> int:
    """The pid of a process that has ended (for temporaries whose owner is gone)."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.stat().st_size) for p in folder.rglob("*")}


# ---- item 7: kills and races ----------------------------------------------------------------------

@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_killed_driver_takes_its_local_workers_with_it(small_run, tmp_path):
    run = copy_run(small_run, tmp_path)
    # folds that never end by themselves: the driver is killed while they train
    driver = subprocess.Popen(pipeline_cmd("cv", "--run-dir", str(run), "--executor", "local", "--workers", "2",
                                           "cv.folds=2", "cv.epochs=100000", *TINY),
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: list[int] = []
    try:
        deadline = time.time() + 120
        while not all((run / "cv" / f"fold-{k}" / "checkpoint.pt").exists() for k in range(2)):
            assert time.time() < deadline and driver.poll() is None, "the folds never started training"
            time.sleep(0.2)
        workers = [p for p in children(driver.pid)
                   if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()]
        assert len(workers) == 2
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        deadline = time.time() + 15
        while any(alive(p) for p in workers) and time.time() < deadline:
            time.sleep(0.1)
        assert not any(alive(p) for p in workers), "a local worker outlived its killed driver"
    finally:
        driver.kill()
        for pid in workers:  # never leave orphans behind, even when the test fails
            try:
                if alive(pid) and b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, FileNotFoundError):
                pass


def test_a_second_run_of_a_running_stage_names_the_holder_and_exits_1(trained_run, tmp_path, capsys):
    run = copy_trained(trained_run, tmp_path)
    with stage_held(run, "attack") as holder:
        assert main(["attack", "--run-dir", str(run), *ATTACK]) == 1
        error = capsys.readouterr().err
        assert f"attack: already running in {run}" in error and f"pid {holder.pid} on {HOST}" in error
        assert not (run / "attack.zarr").exists() and not (run / ".stages" / "attack.json").exists()
    # the kernel released the lock with its holder: nothing stale stops the next run
    assert main(["attack", "--run-dir", str(run), *ATTACK]) == 0


def test_a_stage_does_not_start_beside_one_that_writes_what_it_reads_or_reads_what_it_writes(trained_run, tmp_path,
                                                                                             capsys):
    """`analyze` started while `attack --force` swapped attack.zarr crashed with a reshape
    ValueError. A real `attack --force` runs (its iterations never end in the test's time); the test
    waits until it holds its lock."""
    run = copy_trained(trained_run, tmp_path)
    assert main(["attack", "--run-dir", str(run), *ATTACK]) == 0
    forced = subprocess.Popen(pipeline_cmd("attack", "--run-dir", str(run), "--force",
                                           *[a if a != "attack.max_iter=30" else "attack.max_iter=1000000"
                                             for a in ATTACK]),
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 120
        while not (run / ".stages" / "attack.lock").read_text().startswith(f"pid {forced.pid} "):
            assert time.time() < deadline and forced.poll() is None, "attack --force never took its lock"
            time.sleep(0.1)
        capsys.readouterr()
        assert main(["analyze", "--run-dir", str(run), *ATTACK]) == 1
        error = capsys.readouterr().err.strip().splitlines()[-1]
        assert error.startswith(f"error: analyze: `attack` is running in {run} (pid {forced.pid} on {HOST} since ")
        assert error.endswith(") and writes attack.zarr, which analyze reads; run analyze once it has ended"), error
        assert main(["train", "--run-dir", str(run), "--force", *ATTACK, *TINY]) == 1  # attack reads its model
        assert "train: `attack` is running" in capsys.readouterr().err
        assert not (run / "susceptibility.zarr").exists()
    finally:
        os.killpg(forced.pid, signal.SIGKILL)
        forced.wait()
    assert main(["analyze", "--run-dir", str(run), *ATTACK]) == 0  # the first attack's store, untouched


def test_what_killed_runs_left_is_cleaned_or_resumed(small_run, tmp_path):
    run = copy_run(small_run, tmp_path)
    shutil.copytree(small_run / "raw", run / "raw")
    dead = dead_pid()
    left = [run / "prepare-events-k2j4x1", run / f".dataset.zarr.tmp-{HOST}-{dead}",
            run / ".dataset.zarr.tmp-othernode-4242", run / f".raw.tmp-{HOST}-{dead}",
            run / "cv" / "fold-0" / f".checkpoint.pt.tmp-{HOST}-{dead}"]
    for path in left:
        path.mkdir(parents=True)
        (path / "part-0.parquet").write_bytes(b"half-written")
    live = run / "cv" / "fold-1" / f".checkpoint.pt.tmp-othernode-{os.getpid()}"  # may be a live Slurm task's
    live.parent.mkdir(parents=True)
    live.write_bytes(b"being written")
    assert main(["prepare", "--run-dir", str(run), "--seed", "3", "--force"]) == 0
    assert not any(p.exists() for p in left)
    assert live.exists()
    xr.testing.assert_equal(xr.open_zarr(run / "dataset.zarr").load(), xr.open_zarr(small_run / "dataset.zarr").load())


def test_an_empty_attack_store_left_by_a_race_is_made_again(trained_run, tmp_path):
    """Two attacks at once used to leave an empty .attack.zarr.partial; every later attack then failed
    with GroupNotFoundError, even with --force."""
    run = copy_trained(trained_run, tmp_path)
    (run / ".attack.zarr.partial").mkdir()
    assert main(["attack", "--run-dir", str(run), *ATTACK]) == 0
    assert xr.open_zarr(run / "attack.zarr", consolidated=False).found.any()


def test_a_replace_killed_between_its_two_renames_is_finished(tmp_path):
    final = tmp_path / "model"
    old, new = tmp_path / f".model.old-{HOST}-1", tmp_path / f".model.tmp-{HOST}-1"
    old.mkdir()
    (old / "weights.pt").write_text("previous")
    new.mkdir()
    (new / "weights.pt").write_text("new, complete")
    recover_replaced(final)  # killed after `final` was moved aside: the complete new output goes in
    assert (final / "weights.pt").read_text() == "new, complete" and not old.exists() and not new.exists()
    old.mkdir()
    (old / "weights.pt").write_text("previous")
    shutil.rmtree(final)
    recover_replaced(final)  # no new output: the previous one comes back
    assert (final / "weights.pt").read_text() == "previous" and not old.exists()


def test_a_failed_force_keeps_the_complete_stage(trained_run, tmp_path, capsys, caplog):
    from pipeline.attack import shards as attack_stage

    caplog.set_level(logging.INFO)
    run = copy_trained(trained_run, tmp_path)
    assert main(["attack", "--run-dir", str(run), *ATTACK]) == 0
    before = RunDir(run).fingerprint("attack.zarr"), (run / ".stages" / "attack.json").read_text()
    original = attack_stage.L1Attack.run

    def broken(self, *args):
        raise RuntimeError("the GPU fell off the bus")

    attack_stage.L1Attack.run = broken
    try:
        assert main(["attack", "--run-dir", str(run), *ATTACK, "--force"]) == 1
    finally:
        attack_stage.L1Attack.run = original
    assert "the GPU fell off the bus" in capsys.readouterr().err
    assert (RunDir(run).fingerprint("attack.zarr"), (run / ".stages" / "attack.json").read_text()) == before
    assert main(["attack", "--run-dir", str(run), *ATTACK]) == 0  # still complete: skipped
    assert "attack: complete, skipped" in caplog.text


def test_force_with_other_parameters_redoes_finished_folds(small_run, tmp_path):
    run = copy_run(small_run, tmp_path)
    cv = ["cv", "--run-dir", str(run), "--executor", "debug", "--seed", "5", "cv.folds=2", *TINY]
    assert main([*cv, "cv.epochs=1"]) == 0
    assert main([*cv, "cv.epochs=2", "--force"]) == 0  # the finished 1-epoch folds are not reused
    for k in range(2):
        assert len(pd.read_csv(run / "cv" / f"fold-{k}" / "metrics.csv")) == 2
        assert json.loads((run / "cv" / f"fold-{k}" / "done.json").read_text())["epochs"] == 2


def test_force_with_fewer_epochs_does_not_reuse_the_longer_run(small_run, tmp_path):
    """A fold trained for 6 epochs is not the start of a 2-epoch fold."""
    run = copy_run(small_run, tmp_path)
    cv = ["cv", "--run-dir", str(run), "--executor", "debug", "--seed", "5", "cv.folds=2", *TINY]
    assert main([*cv, "cv.epochs=2"]) == 0
    fresh = [pd.read_csv(run / "cv" / f"fold-{k}" / "metrics.csv") for k in range(2)]
    assert main([*cv, "cv.epochs=6", "--force"]) == 0  # its folds keep their 6-epoch checkpoints
    assert main([*cv, "cv.epochs=2", "--force"]) == 0
    for k in range(2):
        again = pd.read_csv(run / "cv" / f"fold-{k}" / "metrics.csv")
        assert len(again) == 2
        pd.testing.assert_frame_equal(again, fresh[k])  # what a fresh 2-epoch fold gives
    assert json.loads((run / "cv" / "summary.json").read_text())["best_epoch"] <= 2


# ---- item 8: full disk, read-only run directory, a skipped stage with another config ------------

def test_a_full_disk_blames_the_output_not_the_input_table(demo_dir, tmp_path):
    def small_files():  # as on a full disk: writes past 20 kB fail (EFBIG rather than ENOSPC)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    run = tmp_path / "run"
    done = subprocess.run(pipeline_cmd("prepare", "--run-dir", str(run), "--mimic-dir", str(demo_dir)), cwd=ROOT,
                          capture_output=True, text=True, timeout=300, preexec_fn=small_files)
    assert done.returncode == 1
    error = "error: " + done.stderr.rsplit("error: ", 1)[-1].strip()  # after the progress bars' last redraw
    assert error.startswith(f"error: {run}/prepare-events-") and "cannot write (file size limit reached" in error
    assert "LABEVENTS" not in error.split(": cannot write")[0].rsplit("/", 1)[0], error  # not the input's path
    assert not (run / "dataset.zarr").exists() and not list(run.glob("prepare-events-*"))


def test_a_full_disk_inside_an_attack_task_is_one_line_naming_the_store(trained_run, tmp_path):
    """The task's OSError(27/28, …) came back without the file, and pointed at an empty log."""
    def small_files():  # the driver and its local worker: writes past 30 kB fail, as on a full disk (the
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # driver's files are smaller, a chunk of 32 targets larger)
        resource.setrlimit(resource.RLIMIT_FSIZE, (30_000, 30_000))

    run = copy_trained(trained_run, tmp_path)
    args = [{"debug": "local", "attack.chunk_samples=8": "attack.chunk_samples=32"}.get(a, a) for a in ATTACK]
    done = subprocess.run(pipeline_cmd("attack", "--run-dir", str(run), *args), cwd=ROOT, capture_output=True,
                          text=True, timeout=300, preexec_fn=small_files)
    assert done.returncode == 1
    error = done.stderr.strip().splitlines()[-1]
    assert error.startswith("error: attack: task 0 failed: ") and "cannot write (file size limit reached" in error
    assert f"{run}/.attack.zarr.partial" in error or f"{run}/attack-shards/shard-0.json" in error, error
    assert "; log: " in error and not (run / "attack.zarr").exists()


def test_a_complete_stage_writes_nothing_when_skipped(trained_run, tmp_path, capsys):
    run = copy_trained(trained_run, tmp_path)
    assert main(["attack", "--run-dir", str(run), *ATTACK]) == 0
    manifest = json.loads((run / "manifest.json").read_text())
    before = snapshot(run)
    # another config: refused (exit 2), kept, and the manifest still says what the stage ran with
    capsys.readouterr()
    assert main(["attack", "--run-dir", str(run), *ATTACK, "attack.lam=0.5"]) == 2
    assert "error: attack: complete in" in (err := capsys.readouterr().err) and "attack.lam: 0.001 → 0.5" in err, err
    assert snapshot(run) == before
    assert json.loads((run / "manifest.json").read_text())["config"] == manifest["config"]
    assert manifest["config"]["attack"]["lam"] == 0.001


def read_only(run: Path) -> list[str]:
    """A command prefix that makes `run` read-only for real: as root a read-only bind mount in a private
    mount namespace (the file system says EROFS, as on a read-only snapshot); otherwise no write bits."""
    if os.geteuid() != 0:
        for path in [run, *run.rglob("*")]:
            path.chmod(path.stat().st_mode & ~0o222)
        return []
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a mount namespace here: {probe.stderr.decode().strip()}")
    return ["unshare", "-m", "sh", "-c", 'mount --bind "$0" "$0" && mount -o remount,ro,bind "$0" && shift && '
            'exec "$@"', str(run), "--"]


def test_a_read_only_run_directory_skips_a_complete_stage(trained_run, tmp_path, caplog):
    run = copy_trained(trained_run, tmp_path)
    assert main(["attack", "--run-dir", str(run), *ATTACK]) == 0
    prefix = read_only(run)
    try:
        def attack(*extra: str) -> subprocess.CompletedProcess:
            return subprocess.run([*prefix, *pipeline_cmd("attack", "--run-dir", str(run), *ATTACK, *extra)],
                                  cwd=ROOT, capture_output=True, text=True, timeout=120)

        skipped = attack()
        assert skipped.returncode == 0, skipped.stderr
        assert "attack: complete, skipped" in skipped.stderr
        forced = attack("--force")  # preflight: the stage would run and cannot write
        assert forced.returncode == 2, forced.stderr
        last = forced.stderr.strip().splitlines()[-1]
        assert last == f"error: run directory {run}: {run} is not a writable folder", last
    finally:
        for path in [run, *run.rglob("*")]:
            path.chmod(path.stat().st_mode | 0o200)


# ---- restarts, forces and races -------------------------------------------------------------

def test_a_deleted_output_is_made_again(trained_run, tmp_path, caplog):
    """A marker without its output is not complete: the stage runs again and says why."""
    run = copy_trained(trained_run, tmp_path)
    attack = ["attack", "--run-dir", str(run), "--executor", "debug", *ATTACK]
    assert main(attack) == 0
    before = xr.open_zarr(run / "attack.zarr", consolidated=False).load()
    shutil.rmtree(run / "attack.zarr")
    with caplog.at_level(logging.WARNING):
        assert main(attack) == 0
    assert "attack: marked complete but attack.zarr is gone; running it again" in caplog.text
    xr.testing.assert_identical(xr.open_zarr(run / "attack.zarr", consolidated=False).load(), before)


def test_an_input_that_changed_while_the_stage_ran_is_an_error_not_a_marker(trained_run, tmp_path, monkeypatch,
                                                                           capsys):
    """`train --force` finishing while `attack` runs. The stage's own work is real; the change
    of its input is made at a known point (when the attack is done) instead of racing a second process."""
    import pipeline.attack.shards

    run = copy_trained(trained_run, tmp_path)
    real = pipeline.attack.shards.attack

    def attack_while_the_model_is_replaced(cfg, run_dir):
        real(cfg, run_dir)
        record = run / "model" / "model.json"
        record.write_text(record.read_text() + " ")  # another model, as far as the fingerprint goes

    monkeypatch.setattr(pipeline.attack.shards, "attack", attack_while_the_model_is_replaced)
    assert main(["attack", "--run-dir", str(run), "--executor", "debug", *ATTACK]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: attack: its input model changed while it ran"), err
    assert not (run / ".stages" / "attack.json").exists(), "marked complete with the wrong model's fingerprint"
    monkeypatch.setattr(pipeline.attack.shards, "attack", real)
    assert main(["attack", "--run-dir", str(run), "--executor", "debug", *ATTACK]) == 0  # redone with the new one
    marker = json.loads((run / ".stages" / "attack.json").read_text())
    assert marker["inputs"]["model"] == RunDir(run).fingerprint("model")


def test_after_a_cohort_change_the_refusal_names_it_and_its_advice_works(small_run, tmp_path, capsys):
    """The split was made for another cohort; the message says so, and `--force` redoes it."""
    run = copy_run(small_run, tmp_path)
    cv = ["cv", "--run-dir", str(run), "--executor", "debug", "--seed", "5", "cv.folds=2", "cv.epochs=1", *TINY]
    assert main(cv) == 0
    before = json.loads((run / "split.json").read_text())
    assert main(["prepare", "--run-dir", str(run), "--mimic-dir", str(small_run / "raw"), "--force",
                 "prepare.min_icu_hours=40"]) == 0
    samples = xr.open_zarr(run / "dataset.zarr", consolidated=False).sizes["sample"]
    made_for = len(before["test"]) + sum(map(len, before["fold"]))
    assert samples < made_for
    capsys.readouterr()
    assert main(cv) == 1  # complete, but its input changed: redo it with --force
    assert main([*cv, "--force"]) == 0  # the advice: redo it, and the split with it
    split = json.loads((run / "split.json").read_text())
    assert len(split["test"]) + sum(map(len, split["fold"])) == samples


def test_a_split_for_another_cohort_is_one_line_naming_the_difference(small_run, tmp_path, capsys):
    run = copy_run(small_run, tmp_path)
    split = {"seed": 5, "test_fraction": 0.15, "folds": 3, "test": [0, 1], "fold": [[2], [3], [4]]}
    (run / "split.json").write_text(json.dumps(split))
    assert main(["cv", "--run-dir", str(run), "--executor", "debug", "--seed", "5", "cv.folds=2", *TINY]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "made for 5 samples, dataset.zarr holds" in err and "made with folds = 3, the config asks for 2" in err
    assert "python -m pipeline run --force" in err
