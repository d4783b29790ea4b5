"""Damaged outputs of a finished run are noticed: a complete stage's marker records the files it wrote, a
stage whose output is damaged runs again, a stage whose input is damaged says so in one line, and every
command such a line advises works when it is run (docs/reliability.md)."""

import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from pipeline.cli import main
from pipeline.infra.rundir import HOST, RunDir
from tests.support.runs import stage_held

ROOT = Path(__file__).resolve().parent.parent

CHAIN = ["--executor", "debug", "--seed", "3", "synth.admissions=300", "tune-model.trials=2",
         "tune-model.max_epochs=2", "tune-model.epochs_per_report=1", "cv.folds=3", "cv.epochs=2", "model.hidden=8",
         "model.fc=8", "tune-attack.trials=2", "tune-attack.targets=20", "attack.max_iter=12", "attack.scan_points=1",
         "attack.max_edits=2", "errors.beam=1", "errors.max_errors=2",
         "analyze.weak_run=warn"]  # a tiny model: its report says it means little, not what these tests check


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """Every stage of `run`, tiny, on 300 synthetic admissions (copy it before damaging it)."""
    run = tmp_path_factory.mktemp("finished") / "run"
    assert main(["run", "--run-dir", str(run), *CHAIN]) == 0
    return run


@pytest.fixture
def run(finished, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(finished, copy, symlinks=True)
    return copy


def command(stage: str, run: Path, *extra: str) -> int:
    return main([stage, "--run-dir", str(run), *CHAIN, *extra])


def error_line(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, lines
    return lines[0]


def follow(advice: str, run: Path) -> None:
    """Run every `python -m pipeline STAGE [--force]` that an error line advises, in order: each must work."""
    commands = re.findall(r"`python -m pipeline ([\w-]+)( --force)?`", advice)
    assert commands, f"no command advised: {advice}"
    for stage, force in commands:
        assert command(stage, run, *(["--force"] if force else [])) == 0, (stage, advice)


def test_the_marker_records_the_files_each_stage_wrote(finished):
    marker = json.loads((finished / ".stages" / "errors.json").read_text())
    files = marker["outputs"]["errors.zarr"]
    assert "zarr.json" in files and any(name.startswith("flipped/c/") for name in files)
    analyze = json.loads((finished / ".stages" / "analyze.json").read_text())["outputs"]
    assert set(analyze) == {"susceptibility.zarr", "report.md", "tables", "figures"}
    assert "outputs" not in json.loads((finished / "manifest.json").read_text())["stages"]["errors"]


def test_run_redoes_a_complete_stage_whose_store_lost_its_metadata(run, caplog):
    (run / "errors.zarr" / "zarr.json").unlink()
    assert command("run", run) == 0
    assert "errors: marked complete but errors.zarr is damaged: errors.zarr/zarr.json is missing; running it " \
           "again" in caplog.text
    assert xr.open_zarr(run / "errors.zarr", consolidated=False).flipped.any()
    assert command("analyze", run) == 0  # the run left nothing stale


def test_analyze_on_a_damaged_store_is_one_line_and_its_advice_works(run, capsys):
    (run / "errors.zarr" / "zarr.json").unlink()
    assert command("analyze", run, "--force") == 1
    line = error_line(capsys)
    assert line.startswith(f"error: analyze: its input {run}/errors.zarr is damaged: errors.zarr/zarr.json is "
                           "missing") and "`python -m pipeline errors`" in line
    follow(line, run)
    assert command("analyze", run, "--force") == 0


@pytest.mark.parametrize("damage", ["errors.zarr/flipped/c/0", "errors.zarr/n_errors/c/0", "errors.zarr/hour/zarr.json",
                                    "attack.zarr/found/c", "attack.zarr/edit/c/0/0/0/0"])
def test_a_lost_chunk_or_array_is_one_line_not_wrong_numbers(damage, run, capsys):
    """Zarr reads a missing chunk as its fill value: 0.0% success, 0 verified flips, exit 0."""
    path = run / damage
    shutil.rmtree(path) if path.is_dir() else path.unlink()
    assert command("analyze", run, "--force") == 1
    line = error_line(capsys)
    store = damage.split("/")[0]
    assert line.startswith(f"error: analyze: its input {run}/{store} is damaged: {store}/"), line
    follow(line, run)


def test_a_truncated_metadata_file_is_one_line(run, capsys):
    meta = run / "attack.zarr" / "zarr.json"
    meta.write_bytes(meta.read_bytes()[:50])
    assert command("analyze", run, "--force") == 1
    assert "attack.zarr/zarr.json is not the file `attack` wrote" in error_line(capsys)


def test_a_deleted_store_whose_stage_completed_is_named(run, capsys):
    """It used to drop the report's entry-error section without a word."""
    shutil.rmtree(run / "errors.zarr")
    assert command("analyze", run, "--force") == 1
    line = error_line(capsys)
    assert f"its input {run}/errors.zarr is gone" in line
    follow(line, run)
    assert command("analyze", run, "--force") == 0
    assert "## Plausible data-entry errors" in (run / "report.md").read_text()


@pytest.mark.parametrize(("chunk", "said"), [("errors.zarr/n_errors/c/0", "flips do not flip the model"),
                                             ("attack.zarr/edit/c/0/0/0/0", "do not re-derive to a flip")])
def test_without_the_marker_record_a_store_that_lost_data_still_fails_analyze(chunk, said, run, capsys):
    """Markers written before outputs were recorded cannot tell: the verification and the re-derivation
    must fail the stage (they printed "0 of 22 flips verified", "0 of 23 examples re-derive", exit 0)."""
    for stage in ("attack", "errors"):
        marker = run / ".stages" / f"{stage}.json"
        marker.write_text(json.dumps({k: v for k, v in json.loads(marker.read_text()).items() if k != "outputs"}))
    (run / chunk).unlink()
    assert command("analyze", run, "--force") == 1
    line = error_line(capsys)
    assert said in line and chunk.split("/")[0] in line, line
    follow(line, run)
    assert command("analyze", run, "--force") == 0


def test_a_stage_redone_by_hand_makes_run_advise_the_stale_stages_only(run, capsys):
    assert command("errors", run, "--force", "errors.max_errors=1") == 0
    assert command("run", run, "errors.max_errors=1") == 1
    line = error_line(capsys)
    assert "`python -m pipeline analyze --force`" in line and "run --force" not in line
    follow(line, run)
    assert "(at most 1, beam 1)" in (run / "report.md").read_text()


def test_a_tensor_attack_then_back_leaves_no_stale_table(run):
    assert (run / "tables" / "edits_best.csv").exists()
    assert command("attack", run, "--force", "attack.space=tensor") == 0
    assert command("analyze", run, "--force", "attack.space=tensor") == 0
    report = (run / "report.md").read_text()
    assert "model's input (Sun et al.'s attack)" in report and not (run / "tables" / "edits_best.csv").exists()
    assert command("attack", run, "--force") == 0
    assert command("analyze", run, "--force") == 0
    assert "**What the attack changes: the record.**" in (run / "report.md").read_text()
    assert (run / "tables" / "edits_best.csv").exists()


@pytest.mark.parametrize("damage", ["p95 chunks lost", "p5 removed", "an attack store", "truncated metadata"])
def test_frozen_statistics_from_a_damaged_store_are_refused_before_anything_is_written(damage, finished, tmp_path,
                                                                                       capsys):
    """A store whose p95 chunks were lost gave an all-NaN dataset and exit 0; the others tracebacks."""
    stats = tmp_path / "stats.zarr"
    shutil.copytree(finished / ("attack.zarr" if damage == "an attack store" else "dataset.zarr"), stats)
    if damage == "p95 chunks lost":
        shutil.rmtree(stats / "p95" / "c")
    elif damage == "p5 removed":
        shutil.rmtree(stats / "p5")
        meta = json.loads((stats / "zarr.json").read_text())
        meta.get("consolidated_metadata", {}).get("metadata", {}).pop("p5", None)
        (stats / "zarr.json").write_text(json.dumps(meta))
    elif damage == "truncated metadata":
        (stats / "zarr.json").write_bytes((stats / "zarr.json").read_bytes()[:50])
    new = tmp_path / "new"
    assert main(["prepare", "--run-dir", str(new), f"prepare.mimic_dir={finished / 'raw'}",
                 f"prepare.stats_from={stats}"]) == 2
    line = error_line(capsys)
    assert line.startswith(f"error: [prepare] stats_from = '{stats}': "), line
    assert not new.exists()  # not even manifest.json


def test_errors_killed_mid_shard_resumes_to_the_same_store(finished, run):
    """kill -9 of `errors --force` once its shard saved progress; the next run resumes it, and errors.zarr
    equals the one a run without the kill made."""
    shutil.rmtree(run / "errors.zarr")
    (run / ".stages" / "errors.json").unlink()
    progress = RunDir(run).shard_progress("errors", 0)
    driver = subprocess.Popen([sys.executable, "-m", "pipeline", "errors", "--run-dir", str(run), *CHAIN,
                               "errors.batch_size=8"], cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not progress.exists():
        assert driver.poll() is None and time.time() < deadline, "errors ended before it saved any progress"
        time.sleep(0.05)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    assert not (run / "errors.zarr").exists() and json.loads(progress.read_text())["state"]["rows"]
    assert command("errors", run, "errors.batch_size=8") == 0
    again = xr.open_zarr(run / "errors.zarr", consolidated=False).load()
    before = xr.open_zarr(finished / "errors.zarr", consolidated=False).load()
    for name in before.data_vars:
        np.testing.assert_array_equal(again[name].values, before[name].values, err_msg=name)


def test_two_errors_stages_at_once_the_second_names_the_first(run, capsys):
    before = (run / ".stages" / "errors.json").read_bytes()
    with stage_held(run, "errors") as holder:
        assert command("errors", run, "--force") == 1
        line = error_line(capsys)
        assert f"errors: already running in {run}" in line and f"pid {holder.pid} on {HOST}" in line
        assert (run / ".stages" / "errors.json").read_bytes() == before


def small_files(limit: int):
    """As on a full disk: writes past `limit` bytes fail (EFBIG, as ENOSPC would)."""
    def limited():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return limited


# errors.zarr's files are small: a lower limit than analyze's figures need, rather than every target
@pytest.mark.parametrize(("stage", "limit"), [("errors", 3_000), ("analyze", 30_000)])
def test_a_full_disk_names_the_file_and_a_rerun_with_space_completes(stage, limit, run):
    """analyze named the run directory, not the file it could not write; what it had written stays whole."""
    before = {p.relative_to(run): p.read_bytes() for p in (run / "tables").iterdir()}
    done = subprocess.run([sys.executable, "-m", "pipeline", stage, "--run-dir", str(run), *CHAIN, "--force"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600, preexec_fn=small_files(limit))
    assert done.returncode == 1
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("error: ") and "cannot write (file size limit reached" in line, line
    blamed = line.split(": cannot write")[0].rsplit(" ", 1)[-1]
    assert blamed.startswith(f"{run}/") and blamed != f"{run}/", line
    assert {p.relative_to(run): p.read_bytes() for p in (run / "tables").iterdir()} == before  # old tables whole
    assert not list(run.rglob("*.tmp-*"))
    assert command(stage, run, "--force") == 0


# ---- issue probes: the stage runner and what it reads back (docs/reliability.md, "A run directory") ----

def test_a_run_after_a_redone_train_attacks_and_reports_the_new_model(run, caplog):
    """`run` logged "running it again" for every stage after a redone train, then skipped them all: the
    attack and the report stayed the old model's, exit 0."""
    caplog.set_level("INFO")
    old = RunDir(run).model_record()["weights_sha256"]
    (run / "model" / "training_loss.png").unlink()  # train's output damaged: it runs again, here with 1 epoch
    assert command("run", run, "train.epochs=1") == 0
    weights = RunDir(run).model_record()["weights_sha256"]
    assert weights != old
    for stage in ("tune-attack", "attack", "errors", "analyze"):
        assert re.search(f"{stage}: its input .*model.* was redone by this run; running it again", caplog.text), stage
        assert f"{stage}: complete, skipped" not in caplog.text, stage
    assert xr.open_zarr(run / "attack.zarr", consolidated=False).attrs["weights_sha256"] == weights
    assert xr.open_zarr(run / "errors.zarr", consolidated=False).attrs["weights_sha256"] == weights
    assert xr.open_zarr(run / "susceptibility.zarr", consolidated=False).attrs["weights_sha256"] == weights
    auroc = json.loads((run / "model" / "test_metrics.json").read_text())["auroc"]
    assert "| auroc | " in (report := (run / "report.md").read_text()) and f"| {auroc:.4f} |" in report
    assert command("run", run, "train.epochs=1") == 0  # nothing stale is left


@pytest.mark.parametrize("how", ["swapped", "rewritten with its times put back"])
def test_same_size_chunks_swapped_or_rewritten_are_found(how, run, capsys):
    """Chunks were compared by size only: two swapped gave wrong method counts with exit 0."""
    chunks = {}
    for store in ("attack.zarr", "errors.zarr", "dataset.zarr"):
        for chunk in sorted((run / store).rglob("*")):
            if chunk.is_file() and "c" in chunk.relative_to(run / store).parts:
                chunks.setdefault((store, chunk.stat().st_size), []).append(chunk)
    same_size = [(s, p) for (s, _), p in chunks.items() if len(p) >= 2 and p[0].read_bytes() != p[1].read_bytes()]
    assert same_size, "no two chunks of one size in the run's stores"
    store, (a, b, *_) = same_size[0]
    if how == "swapped":
        tmp = a.with_name("swap")
        a.rename(tmp), b.rename(a), tmp.rename(b)
    else:
        st = a.stat()
        a.write_bytes(b.read_bytes())
        os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert command("analyze", run, "--force") == 1
    line = error_line(capsys)
    assert f"its input {run}/{store} is damaged" in line and "wrote" in line, line
    follow(line, run)
    assert command("analyze", run, "--force") == 0


def test_same_size_garbage_in_the_dataset_advises_prepare_and_the_advice_works(run, capsys):
    """The advice was `tune-model --force`, which then failed with a Zstd traceback."""
    chunk = next(p for p in sorted((run / "dataset.zarr" / "x").rglob("*")) if p.is_file() and p.name != "zarr.json")
    chunk.write_bytes(bytes(chunk.stat().st_size))
    assert command("tune-model", run, "--force") == 1
    line = error_line(capsys)
    assert f"its input {run}/dataset.zarr is damaged" in line and "`python -m pipeline prepare`" in line, line
    follow(line, run)
    assert command("run", run) == 0  # prepare made the same dataset again: nothing after it is stale


def test_stray_files_in_outputs_are_no_change(run, caplog):
    """A `.DS_Store` in model/ made `run` refuse, advising to redo all tuning."""
    for folder in ("model", "dataset.zarr", "attack.zarr", "cv"):
        (run / folder / ".DS_Store").write_bytes(b"")
    (run / "model" / ".nfs000000001").write_bytes(b"x")
    caplog.set_level("INFO")
    assert command("run", run) == 0
    assert "running it again" not in caplog.text and "analyze: complete, skipped" in caplog.text


DAMAGES = {"empty": lambda b: b"", "cut off": lambda b: b[:40], "a list": lambda b: b"[1, 2]",
           "not UTF-8": lambda b: b"\xff" + b[1:]}


@pytest.mark.parametrize("damage", DAMAGES)
@pytest.mark.parametrize("record", [".stages/attack.json", "manifest.json"])
def test_a_damaged_marker_or_manifest_reads_as_absent_with_a_warning(record, damage, finished, tmp_path, caplog):
    """What decides: RunDir's reading of the record (the two tests below run the stages on it)."""
    run = tmp_path / "run"
    shutil.copytree(finished, run, ignore=shutil.ignore_patterns("*.zarr", "raw", "cv", "figures", "tables"))
    path = run / record
    path.write_bytes(DAMAGES[damage](path.read_bytes()))
    read = RunDir(run).read_marker("attack") if record.startswith(".stages") else RunDir(run).read_manifest()
    assert read in (None, {}) and f"{path} is damaged" in caplog.text


@pytest.mark.parametrize("record", [".stages/attack.json", "manifest.json"])
def test_a_damaged_marker_or_manifest_is_a_warning_not_a_traceback(record, run, caplog):
    path = run / record
    path.write_bytes(path.read_bytes()[:40])
    caplog.set_level("INFO")
    assert command("run", run) == 0 if record.startswith(".stages") else command("analyze", run, "--force") == 0
    assert f"{path} is damaged" in caplog.text
    if record.startswith(".stages"):  # taken as not complete: the attack ran again and marked itself
        assert "attack: batched L1 proximal attack" in caplog.text
    assert json.loads(path.read_text())["stages" if record == "manifest.json" else "config"]


def test_an_empty_fold_checkpoint_is_named_and_the_fold_starts_afresh(run, caplog):
    """An empty cv/fold-0/checkpoint.pt without done.json: EOFError on every run, even `cv --force`."""
    (run / "cv" / "fold-0" / "done.json").unlink()
    (run / "cv" / "fold-0" / "checkpoint.pt").write_bytes(b"")
    assert command("cv", run, "--force") == 0
    assert f"{run}/cv/fold-0/checkpoint.pt: damaged (EOFError" in caplog.text
    assert (run / "cv" / "fold-0" / "done.json").exists()


def test_a_split_with_a_test_sample_in_a_fold_is_refused(run, capsys):
    """train --force trained on a test sample and its provenance still said "never seen by tuning or CV"."""
    split = json.loads((run / "split.json").read_text())
    leaked = split["test"][0]
    split["fold"][0][0] = leaked  # the counts stay as they were
    (run / "split.json").write_text(json.dumps(split))
    assert command("train", run, "--force") == 1
    line = error_line(capsys)
    assert f"{run}/split.json: sample {leaked} is in the test set and in fold 0" in line, line


def test_a_no_op_run_reads_metadata_not_the_stores(finished, monkeypatch):
    """A no-op `run` hashed every store of the run directory (42 MB in 926 reads on a 20 MB run)."""
    from pipeline import hashing

    read, update = [], hashing.update

    def counted(digest, path):
        read.append(path.stat().st_size)
        update(digest, path)

    monkeypatch.setattr(hashing, "update", counted)
    assert command("run", finished) == 0
    assert sum(read) < 64 << 10, f"{sum(read)} bytes hashed in {len(read)} files"


def prepared_from(tables: Path, run: Path, *extra: str) -> int:
    return main(["prepare", "--run-dir", str(run), "--seed", "3", *extra, f"prepare.mimic_dir={tables}"])


@pytest.mark.parametrize("change", ["rows removed", "a table replaced", "a table gone"])
def test_tables_changed_after_prepare_are_not_skipped_silently(change, finished, tmp_path, capsys, caplog):
    """prepare said `complete, skipped` after its input lost half its rows; input_sha256 was never compared."""
    tables = tmp_path / "tables"
    shutil.copytree(finished / "raw", tables)
    run = tmp_path / "run"
    assert prepared_from(tables, run) == 0
    capsys.readouterr()  # its progress bars
    admissions = tables / "ADMISSIONS.csv.gz"
    if change == "rows removed":
        import gzip

        lines = gzip.decompress(admissions.read_bytes()).splitlines(keepends=True)
        admissions.write_bytes(gzip.compress(b"".join(lines[: len(lines) // 2])))
    elif change == "a table replaced":
        shutil.copy(admissions, tables / "x")
        (tables / "x").rename(admissions)  # the same bytes, another file: read again, found equal
    else:
        shutil.rmtree(tables)
    assert prepared_from(tables, run) == 0 if change != "rows removed" else prepared_from(tables, run) == 1
    if change == "rows removed":
        line = error_line(capsys)
        assert line == ("error: prepare: complete, but the files it read changed since (ADMISSIONS.csv.gz changed); "
                        "make its output again with `python -m pipeline prepare --force`, then redo the stages "
                        "after it"), line
        assert prepared_from(tables, run, "--force") == 0
    elif change == "a table gone":
        assert "the files it read are no longer there" in caplog.text


def test_a_run_directory_others_can_write_is_warned_about(run, caplog):
    run.chmod(0o777)
    assert command("analyze", run, "--force") == 0
    assert f"run directory {run}: writable by others (mode 777" in caplog.text and "trust model" in caplog.text
