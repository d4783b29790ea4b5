"""Config files, overrides and their errors (one line naming the key/file, exit code 2)."""

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from pipeline import config
from pipeline.cli import main
from pipeline.config import ConfigError, PipelineConfig

ROOT = Path(__file__).resolve().parent.parent


def test_local_config_equals_built_in_defaults():
    assert config.load(ROOT / "configs" / "local.toml") == PipelineConfig()


# keys whose default is computed, shown commented out: every registered error kind (a new kind needs no edit here)
COMMENTED = {("errors", "kinds")}


def test_local_config_lists_every_key_at_its_default():
    """configs/local.toml said it equals the defaults but lacked keys: a newcomer could not see them."""
    text = (ROOT / "configs" / "local.toml").read_text()
    written = tomllib.loads(text)
    commented, table = set(), None
    for line in text.splitlines():
        if m := re.match(r"\[([\w-]+)\]", line):
            table = m.group(1)
        elif m := re.match(r"#\s*(\w+)\s*=", line):
            commented.add((table, m.group(1)))
    for table, values in PipelineConfig().to_dict().items():
        assert table in written, f"configs/local.toml lacks the table [{table}]"
        for key, default in values.items():
            if (table, key) in COMMENTED:
                assert (table, key) in commented, f"configs/local.toml lacks [{table}] {key} (commented out)"
                continue
            assert key in written[table], f"configs/local.toml lacks [{table}] {key} (default {default!r})"
            assert written[table][key] == default, f"configs/local.toml: [{table}] {key} is not the default {default!r}"


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
    ("[synth]\nadmisions = 5\n", r"c\.toml: \[synth\]: unknown key 'admisions'; did you mean admissions\?"),
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
    (["synth", "synth.admisions=10"], "unknown key 'admisions' in [synth]; did you mean admissions?"),
    (["synth", "sinth.admissions=10"], "unknown table [sinth]; did you mean synth?"),
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


# ---- a complete stage asked for with another config (docs/reliability.md) -------------------------

def test_a_changed_config_on_a_complete_run_is_refused_naming_the_keys(small_run, tmp_path, capsys, caplog):
    """`make run ARGS='--seed 3 synth.admissions=500'` after a complete run kept the old results, exit 0."""
    run = tmp_path / "run"
    shutil.copytree(small_run, run)  # synth (300 admissions) and prepare, seed 3
    files = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main(["run", "--run-dir", str(run), "--seed", "3", "synth.admissions=500"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: synth: complete in {run}, made with another config (synth.admissions: 300 → "
                          "500); not redone.") and len(err.splitlines()) == 1, err
    assert "--run-dir runs/<new-name>" in err and "add --force" in err and "python -m pipeline synth --force" in err
    # a stage kept although one before it would run first: refused before that one runs
    (run / ".stages" / "synth.json").unlink()
    assert main(["run", "--run-dir", str(run), "--seed", "3", "synth.admissions=300", "prepare.min_icu_hours=12"]) == 2
    assert "error: prepare: complete in" in (err := capsys.readouterr().err) and "min_icu_hours: 24.0 → 12.0" in err
    del files[run / ".stages" / "synth.json"]
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()} == files  # nothing written
    # where and how it runs is no other config; --force redoes a stage with the new one, kept from then on
    caplog.set_level("INFO")
    assert main(["prepare", "--run-dir", str(run), "--seed", "3", "--executor", "debug", "--workers", "5"]) == 0
    assert "prepare: complete, skipped" in caplog.text
    synth = ["synth", "--run-dir", str(run), "--seed", "3"]
    assert main([*synth, "synth.admissions=20"]) == 0
    assert main([*synth, "synth.admissions=30"]) == 2
    assert main([*synth, "synth.admissions=30", "--force"]) == 0
    assert main([*synth, "synth.admissions=30"]) == 0 and "synth: complete, skipped" in caplog.text
