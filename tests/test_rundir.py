"""Atomic writes, the manifest and stage completion markers."""

import dataclasses
import json
from pathlib import Path

import pytest

from pipeline.config import ConfigError, PipelineConfig, apply_overrides
from pipeline.infra import rundir, stages
from pipeline.infra.rundir import RunDir, atomic_path

pytestmark = pytest.mark.thirdparty  # the floors job runs these (tests/test_floors.py)


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


def counted_run(tmp_path: Path, monkeypatch) -> tuple[RunDir, PipelineConfig]:
    """A new run directory whose `synth` is :func:`counting_stage`."""
    CALLS.clear()
    use_stage(monkeypatch, "tests.test_rundir:counting_stage")
    run = RunDir(tmp_path / "run")
    cfg = PipelineConfig()
    run.open(cfg.to_dict(), cfg.run.seed)
    return run, cfg


def test_complete_stage_is_skipped_unless_forced(tmp_path, monkeypatch):
    run, cfg = counted_run(tmp_path, monkeypatch)
    assert stages.run_stage("synth", cfg, run) is True
    assert stages.run_stage("synth", cfg, run) is False
    assert stages.run_stage("synth", apply_overrides(cfg, ["run.workers=7"]), run) is False  # how, not what
    other = apply_overrides(cfg, ["run.seed=5"])
    with pytest.raises(ConfigError, match=r"synth: complete in .*, made with another config \(run\.seed: 0 → 5\)"):
        stages.run_stage("synth", other, run)
    assert stages.run_stage("synth", other, run, force=True) is True
    assert CALLS == [0, 5]

    manifest = json.loads(run.manifest_path.read_text())
    record = manifest["stages"]["synth"]
    assert record["seed"] == 5 and record["config"]["run"]["seed"] == 5 and record["seconds"] >= 0
    marker = json.loads(run.marker("synth").read_text())
    assert {k: v for k, v in marker.items() if k != "outputs"} == record  # the file lists: in the marker only
    assert set(marker["outputs"]) == {"raw"}


def test_a_complete_stage_whose_output_changed_runs_again(tmp_path, monkeypatch, caplog):
    run, cfg = counted_run(tmp_path, monkeypatch)
    assert stages.run_stage("synth", cfg, run) is True
    assert run.damaged_outputs("synth") == {}
    (run / "raw" / "out.txt").write_text("edited")
    assert run.damaged_outputs("synth") == {"raw": "is damaged: raw/out.txt is not the file `synth` wrote"}
    assert stages.run_stage("synth", cfg, run) is True
    assert "synth: marked complete but raw is damaged: raw/out.txt is not the file `synth` wrote; running it " \
           "again" in caplog.text
    (run / "raw" / "out.txt").unlink()
    assert run.damaged_outputs("synth") == {"raw": "is damaged: raw/out.txt is missing"}
    assert stages.run_stage("synth", cfg, run) is True and stages.run_stage("synth", cfg, run) is False
    assert CALLS == [0, 0, 0]


def test_failed_stage_is_not_marked_complete(tmp_path, monkeypatch):
    use_stage(monkeypatch, "tests.test_rundir:broken_stage")
    run = RunDir(tmp_path)
    with pytest.raises(OSError):
        stages.run_stage("synth", PipelineConfig(), run)
    assert not run.is_complete("synth")


def test_a_store_made_again_with_its_metadata_in_another_order_has_the_same_fingerprint(tmp_path):
    """zarr 3.0.8 writes the consolidated metadata in the order its writes completed: the same dataset made
    twice differed in zarr.json's bytes, and every stage after a remade prepare was called stale (floors job)."""
    from pipeline import hashing

    arrays = {"median": {"shape": [19]}, "p5": {"shape": [19]}}
    meta = {"zarr_format": 3, "consolidated_metadata": {"metadata": arrays}}
    again = {"consolidated_metadata": {"metadata": dict(reversed(arrays.items()))}, "zarr_format": 3}
    for name, content in (("one", meta), ("two", again)):
        (tmp_path / name / "store.zarr").mkdir(parents=True)
        (tmp_path / name / "store.zarr" / "zarr.json").write_text(json.dumps(content))
    one, two = RunDir(tmp_path / "one"), RunDir(tmp_path / "two")
    assert (tmp_path / "one/store.zarr/zarr.json").read_bytes() != (tmp_path / "two/store.zarr/zarr.json").read_bytes()
    assert one.fingerprint("store.zarr") == two.fingerprint("store.zarr")
    cut = tmp_path / "two" / "store.zarr" / "zarr.json"
    cut.write_bytes(cut.read_bytes()[:30])  # no JSON: its bytes count, and differ
    assert one.fingerprint("store.zarr") != two.fingerprint("store.zarr")
    assert hashing.content_sha256(cut) == hashing.file_sha256(cut)
