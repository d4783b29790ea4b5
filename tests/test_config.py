"""Config files, overrides and their errors (one line naming the key/file, exit code 2)."""

import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import config
from pipeline.cli import main
from pipeline.config import ConfigError, PipelineConfig

ROOT = Path(__file__).resolve().parent.parent


def test_local_config_equals_built_in_defaults():
    assert config.load(ROOT / "configs" / "local.toml") == PipelineConfig()


def test_cluster_example_loads():
    cfg = config.load(ROOT / "configs" / "cluster.toml")
    assert cfg.run.executor == "slurm"
    assert cfg.run.storage == ""  # the journal on the shared file system: no database server needed
    assert (ROOT / cfg.run.slurm_profile).is_file()


def test_toml_round_trip():
    cfg = config.apply_overrides(PipelineConfig(), ["run.seed=7", "attack.observed_only=true"])
    assert config.from_dict(__import__("tomllib").loads(config.to_toml(cfg))) == cfg


def test_precedence_file_then_overrides_then_options(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("[run]\nseed = 3\nworkers = 5\n[synth]\nadmissions = 10\n")
    cfg = config.load(f, ["admissions=20", "run.workers=6"], default_table="synth")
    assert (cfg.run.seed, cfg.run.workers, cfg.synth.admissions) == (3, 6, 20)
    cfg = config.replace(cfg, "run", seed=9)
    assert cfg.run.seed == 9 and cfg.synth.admissions == 20


def test_int_is_accepted_for_float_but_not_bool_for_int():
    cfg = config.apply_overrides(PipelineConfig(), ["attack.lr=1"])
    assert cfg.attack.lr == 1.0 and isinstance(cfg.attack.lr, float)
    with pytest.raises(ConfigError, match=r"\[cv\] folds: expected int, got bool"):
        config.apply_overrides(PipelineConfig(), ["cv.folds=true"])


BAD_FILES = [
    ("[synth]\nadmisions = 5\n", r"c\.toml: \[synth\]: unknown key 'admisions'"),
    ("[synth]\nadmissions = 'many'\n", r"c\.toml: \[synth\] admissions: expected int, got str 'many'"),
    ("[sinth]\nadmissions = 5\n", r"c\.toml: unknown table \[sinth\]"),
    ("[run]\nexecutor = 'pbs'\n", r"c\.toml: \[run\] executor: 'pbs' is not one of local, slurm, debug"),
    ("[run\nseed = 1\n", r"c\.toml: invalid TOML"),
]


@pytest.mark.parametrize("text,message", BAD_FILES)
def test_bad_config_file_is_named(tmp_path, text, message):
    f = tmp_path / "c.toml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=message):
        config.load(f)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="config file not found: .*nope.toml"):
        config.load(tmp_path / "nope.toml")


@pytest.mark.parametrize("argv,needle", [
    (["synth", "--config", "{tmp}/missing.toml"], "config file not found: {tmp}/missing.toml"),
    (["synth", "--config", "{tmp}/bad.toml"], "[synth]: unknown key 'admisions'"),
    (["synth", "admissions=lots"], "[synth] admissions: expected int, got str 'lots'"),
    (["synth", "synth.nope=1"], "unknown key 'nope' in [synth]"),
    (["run", "run.workers=2.5"], "[run] workers: expected int, got float 2.5"),
])
def test_cli_bad_config_one_line_exit_2(tmp_path, capsys, argv, needle):
    (tmp_path / "bad.toml").write_text("[synth]\nadmisions = 5\n")
    argv = [a.format(tmp=tmp_path) for a in argv] + ["--run-dir", str(tmp_path / "run")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert needle.format(tmp=tmp_path) in err
    assert not (tmp_path / "run").exists(), "a bad config must not create the run directory"


def test_bad_config_exit_code_of_the_real_command(tmp_path):
    (tmp_path / "bad.toml").write_text("[attack]\nmax_iter = 'x'\n")
    out = subprocess.run([sys.executable, "-m", "pipeline", "attack", "--config", str(tmp_path / "bad.toml")],
                         capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip() == f"error: {tmp_path / 'bad.toml'}: [attack] max_iter: expected int, got str 'x'"


@pytest.mark.parametrize(("args", "message"), [
    (["prepare", "chunk_samples=0"], "[prepare] chunk_samples = 0: must be ≥ 1"),
    (["prepare", "lower_percentile=150"], "[prepare] lower_percentile = 150.0: must be ≥ 0 and < 100"),
    (["attack", "shards=0"], "[attack] shards = 0: must be ≥ 1"),
    (["attack", "lam=-1"], "[attack] lam = -1.0: must be > 0"),
    (["cv", "test_fraction=-0.5"], "[cv] test_fraction = -0.5: must be > 0 and < 1"),
    (["cv", "test_fraction=1.5"], "[cv] test_fraction = 1.5: must be > 0 and < 1"),
    (["cv", "--workers", "0"], "[run] workers = 0: must be ≥ 1"),
    (["errors", "beam=1000000000"], "[errors] beam = 1000000000: must be ≥ 1 and ≤ 1024"),
    (["attack", "max_iter=1000000000000"], "[attack] max_iter = 1000000000000: must be ≥ 1 and ≤ 1e+06"),
    (["attack", "lam=inf"], "[attack] lam = inf: must be > 0 and ≤ 1000"),
    (["errors", "kinds=[]"], "[errors] kinds = []: needs at least 1 item(s)"),
    (["errors", 'kinds=["decimal", "unit", "decimal"]'], "[errors] kinds = ['decimal', 'unit', 'decimal']: "
                                                         "decimal listed more than once"),
])
def test_a_value_outside_its_range_is_one_line_exit_2_and_writes_nothing(args, message, tmp_path, capsys):
    from pipeline.cli import main

    run = tmp_path / "run"
    assert main([args[0], "--run-dir", str(run), "--executor", "debug", *args[1:]]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not run.exists()


def test_every_numeric_key_declares_its_range():
    import dataclasses
    import typing

    from pipeline.config import section_types
    from pipeline.infra.executor import SlurmProfile

    for cls in [*section_types().values(), SlurmProfile]:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if hints[f.name] in (int, float):
                assert f.metadata.get("bounds"), f"{cls.__name__}.{f.name} has no declared range"


@pytest.mark.parametrize(("overrides", "message"), [
    (["attack.space=pixels"], "[attack] space: 'pixels' is not one of record, tensor"),
    (["attack.observed_only=true"], "[attack] observed_only = true is a tensor-space option"),
])
def test_a_bad_attack_space_is_one_line_exit_2(overrides, message, trained_run, tmp_path, capsys):
    from tests.support.runs import copy_trained

    run = copy_trained(trained_run, tmp_path)
    assert main(["attack", "--run-dir", str(run), "--executor", "debug", *overrides]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not (run / "attack.zarr").exists()
