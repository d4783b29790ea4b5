"""The command line: stages listed and documented, missing inputs refused, the run directory."""

import json
import subprocess
import sys

import pytest

from pipeline.cli import main
from pipeline.infra.stages import CHAIN

ALL = CHAIN + ["run"]


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "pipeline", *args], capture_output=True, text=True, cwd=cwd)


def test_help_lists_every_stage():
    out = cli("--help")
    assert out.returncode == 0
    for name in ALL:
        assert f"\n    {name} " in out.stdout or f"\n    {name}\n" in out.stdout, name


def test_console_script_is_installed():
    exe = __import__("pathlib").Path(sys.executable).parent / "mimic-pipeline"
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "tune-attack" in out.stdout


@pytest.mark.parametrize("stage", ALL)
def test_each_stage_documents_its_options(stage, capsys):
    with pytest.raises(SystemExit) as e:
        main([stage, "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for opt in ("--config", "--run-dir", "--executor", "--workers", "--seed", "--force", "key=value"):
        assert opt in text
    if stage != "run":
        from pipeline import config

        for f in __import__("dataclasses").fields(config.section_types()[stage]):
            assert "--" + f.name.replace("_", "-") in text


@pytest.mark.parametrize(("stage", "missing"), [
    ("cv", "dataset.zarr: not found (run the `prepare` stage first)"),
    ("tune-attack", "dataset.zarr: not found (run the `prepare` stage first)"),
    ("analyze", "attack.zarr: not found (run the `attack` stage first)"),
])
def test_a_stage_without_its_input_names_it_and_exits_1(stage, missing, tmp_path, capsys):
    assert main([stage, "--run-dir", str(tmp_path / "r"), "--executor", "debug"]) == 1
    assert missing in capsys.readouterr().err
    assert not (tmp_path / "r" / ".stages" / f"{stage}.json").exists()


def test_an_abbreviated_option_is_refused_not_taken_for_another(tmp_path):
    """`--worker 2` was taken as `--workers 2`: argparse's prefix matching is off on every parser."""
    out = cli("synth", "--worker", "2", "--run-dir", str(tmp_path / "r"))
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().endswith("error: unrecognized argument --worker; did you mean --workers?"), out.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(("argv", "message"), [
    (["trian"], "unknown stage 'trian'; did you mean train? (stages: synth, prepare,"),
    (["tune_model", "--seed", "1"], "unknown stage 'tune_model'; did you mean tune-model?"),
    (["synth", "--admisions", "30"], "unrecognized argument --admisions; did you mean --admissions?"),
    (["run", "--froce", "--mimic-dir=x"], "unrecognized argument --froce; did you mean --force?"),
    (["attack", "--max-iters=3"], "unrecognized argument --max-iters=3; did you mean --max-iter?"),
    (["cancel", "--rundir", "x"], "unrecognized argument --rundir; did you mean --run-dir?"),
    (["synth", "--zzz"], "unrecognized argument --zzz\n"),  # nothing close: no guess
])
def test_an_unknown_stage_or_option_suggests_the_closest_exit_2(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main([*argv, "--run-dir", str(tmp_path / "r")])
    assert e.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_bad_executor_is_a_usage_error(tmp_path):
    out = cli("run", "--executor", "pbs", "--run-dir", str(tmp_path))
    assert out.returncode == 2 and "--executor" in out.stderr


def test_a_stage_records_the_manifest(tmp_path):
    out = cli("synth", "--run-dir", str(tmp_path / "r"), "--seed", "11", "synth.admissions=50")
    assert out.returncode == 0, out.stderr
    manifest = json.loads((tmp_path / "r" / "manifest.json").read_text())
    assert manifest["seed"] == 11
    assert manifest["config"]["run"]["seed"] == 11
    assert manifest["config"]["synth"]["admissions"] == 50
    versions = manifest["environment"]["versions"]
    for pkg in ("python", "torch", "zarr", "optuna", "submitit"):
        assert versions[pkg] != "not installed", pkg
    stage = manifest["stages"]["synth"]
    assert stage["seed"] == 11 and stage["seconds"] > 0 and stage["executor"] == "local"


def test_a_storage_password_is_never_written(tmp_path):
    """The manifest and the markers record the config with the URL's password replaced by ***."""
    url = "run.storage=postgresql+psycopg2://alice:S3cr3tPW@db.example.org:5432/optuna"
    out = cli("synth", "--run-dir", str(tmp_path / "r"), "synth.admissions=20", url)
    assert out.returncode == 0, out.stderr
    written = [p for p in (tmp_path / "r").rglob("*") if p.is_file() and p.suffix in (".json", ".log", ".txt")]
    assert written and not any(b"S3cr3tPW" in p.read_bytes() for p in written)
    assert "S3cr3tPW" not in out.stderr + out.stdout
    manifest = json.loads((tmp_path / "r" / "manifest.json").read_text())
    assert manifest["config"]["run"]["storage"] == "postgresql+psycopg2://alice:***@db.example.org:5432/optuna"
