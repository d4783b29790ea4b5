"""Atomic writes, the manifest and stage completion markers."""

import dataclasses
import json

import pytest

from pipeline.config import PipelineConfig, apply_overrides
from pipeline.infra import rundir, stages
from pipeline.infra.rundir import RunDir, atomic_path


def test_atomic_file_write_leaves_nothing_on_error(tmp_path):
    final = tmp_path / "out.json"
    with pytest.raises(RuntimeError), atomic_path(final) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert list(tmp_path.iterdir()) == []


def test_atomic_directory_replaces_old_one_whole(tmp_path):
    final = tmp_path / "store.zarr"
    for version in ("old", "new"):
        with atomic_path(final) as tmp:
            tmp.mkdir()
            (tmp / version).write_text(version)
            assert not (final / version).exists()
    assert sorted(p.name for p in final.iterdir()) == ["new"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store.zarr"]


def test_failed_directory_write_keeps_the_previous_one(tmp_path):
    final = tmp_path / "d"
    with atomic_path(final) as tmp:
        tmp.mkdir()
        (tmp / "good").write_text("1")
    with pytest.raises(ValueError), atomic_path(final) as tmp:
        tmp.mkdir()
        raise ValueError
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]
    assert (final / "good").exists()


CALLS: list[int] = []


def counting_stage(cfg, run_dir):
    CALLS.append(cfg.run.seed)
    rundir.write_text(run_dir / "raw" / "out.txt", f"seed {cfg.run.seed}")


def broken_stage(cfg, run_dir):
    raise OSError("disk full")


def use_stage(monkeypatch, entry: str) -> None:
    monkeypatch.setitem(stages.STAGES, "synth", dataclasses.replace(stages.STAGES["synth"], entry=entry))


def test_complete_stage_is_skipped_unless_forced(tmp_path, monkeypatch, caplog):
    CALLS.clear()
    use_stage(monkeypatch, "tests.test_rundir:counting_stage")
    run = RunDir(tmp_path / "run")
    cfg = PipelineConfig()
    run.open(cfg.to_dict(), cfg.run.seed)
    assert stages.run_stage("synth", cfg, run) is True
    assert stages.run_stage("synth", cfg, run) is False
    other = apply_overrides(cfg, ["run.seed=5"])
    assert stages.run_stage("synth", other, run) is False
    assert "complete with a different config" in caplog.text
    assert stages.run_stage("synth", other, run, force=True) is True
    assert CALLS == [0, 5]

    manifest = json.loads(run.manifest_path.read_text())
    record = manifest["stages"]["synth"]
    assert record["seed"] == 5 and record["config"]["run"]["seed"] == 5 and record["seconds"] >= 0
    assert json.loads(run.marker("synth").read_text()) == record


def test_failed_stage_is_not_marked_complete(tmp_path, monkeypatch):
    use_stage(monkeypatch, "tests.test_rundir:broken_stage")
    run = RunDir(tmp_path)
    with pytest.raises(OSError):
        stages.run_stage("synth", PipelineConfig(), run)
    assert not run.is_complete("synth")
