"""The house rules, checked on the source: every fact has one owner, modules stay small, and an
import inside a function says why it is there."""

import ast
import dataclasses
import inspect
import json
import re
from pathlib import Path

import pytest

from pipeline.config import AttackConfig, AttackParams
from pipeline.errors import MissingArtifact
from pipeline.infra.registry import STAGES, chain, writers
from pipeline.infra.rundir import RunDir

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted((ROOT / "pipeline").rglob("*.py"))
MAX_LINES = 400


def source(*names: str) -> str:
    return "\n".join((ROOT / n).read_text() for n in names)


def imported_from(path: str, module: str | None) -> set[str]:
    """The names `path` imports from `module` (None: the modules it imports)."""
    found = set()
    for node in ast.walk(ast.parse((ROOT / path).read_text())):
        if isinstance(node, ast.ImportFrom) and module is not None and node.module == module:
            found |= {a.name for a in node.names}
        elif module is None and isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif module is None and isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_a_test_module_imports_no_other_test_module():
    """What tests share lives in tests/support/ (or conftest.py's fixtures): a test module that imports
    another runs that module's fixtures and marks where they are not wanted, and couples the two."""
    found = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            found += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[-1].startswith("test_")
                      or (n == "tests" and any(a.name.startswith("test_") for a in node.names))]
    assert not found, found


def test_no_module_is_over_400_lines():
    long = {str(p.relative_to(ROOT)): n for p in SOURCES if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long


def test_an_import_inside_a_function_says_why():
    """Allowed where it defers a heavy import or one that few callers need; the line (or the one above) says
    so. Never to break an import cycle: there are none (tests/test_layers.py)."""
    silent = []
    for path in SOURCES:
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                for inner in ast.walk(node):
                    if isinstance(inner, ast.Import | ast.ImportFrom):
                        here = lines[inner.lineno - 1] + " " + lines[inner.lineno - 2]
                        block = "\n".join(lines[max(0, inner.lineno - 4):inner.lineno])
                        if "#" not in here and "#" not in block:
                            silent.append(f"{path.relative_to(ROOT)}:{inner.lineno}: {lines[inner.lineno - 1].strip()}")
    assert not silent, "\n".join(silent)


# ---- one owner per fact ---------------------------------------------------------

def test_which_stage_makes_an_artifact_is_the_registry(tmp_path):
    """1. rundir kept its own map (MADE_BY), which left out that train also writes split.json."""
    assert writers("split.json") == ["tune-model", "cv", "train"]
    with pytest.raises(MissingArtifact, match=r"split\.json: not found \(run the `tune-model` or `cv` or `train`"):
        RunDir(tmp_path).artifact("split.json")


def test_the_chain_without_synth_is_the_registrys(tmp_path):
    """2. "skip synth when a MIMIC folder is given" was written in stages.py and in preflight.py."""
    from pipeline.config import PipelineConfig, replace

    cfg = PipelineConfig()
    assert chain(cfg)[0] == "synth" and "synth" not in chain(replace(cfg, "prepare", mimic_dir=str(tmp_path)))
    for module in ("pipeline/preflight.py", "pipeline/infra/stages.py"):  # both take the chain from the registry
        assert {"chain", "stage_config"} <= imported_from(module, "pipeline.infra.registry"), module


def test_a_stages_config_snapshot_is_made_in_one_place():
    """3. stages.py and preflight.py each built {run, stage} themselves: now registry.stage_config, and no
    other module turns the [run] table into a dict."""
    built = [p.relative_to(ROOT).as_posix() for p in SOURCES for node in ast.walk(ast.parse(p.read_text()))
             if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "asdict" and node.args
             and ast.unparse(node.args[0]) == "cfg.run"]
    assert built == ["pipeline/infra/registry.py"]


def test_tuned_parameters_are_applied_by_one_helper():
    """4. launch.py, attack.py and benchmarks/attack_quality.py each read best.json their own way."""
    readers = [p for p in [*SOURCES, *(ROOT / "benchmarks").glob("*.py")] if "best_params(" in p.read_text()]
    assert sorted(p.name for p in readers) == ["launch.py", "rundir.py"]


def test_both_tuning_stages_write_best_json_through_one_function(tmp_path):
    """5. `trials` was a dict in tune-model's best.json and an int in tune-attack's: both stages write it
    with launch.write_best, which writes the record, the study's name and its trials by state."""
    import optuna

    from pipeline.attack import tune_attack
    from pipeline.infra import launch
    from pipeline.model import tune_model

    assert tune_model.write_best is launch.write_best and tune_attack.write_best is launch.write_best
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    study.enqueue_trial({"x": 0.5})
    study.ask()  # one trial left running
    launch.write_best(RunDir(tmp_path), "tune-attack", study, {"trial": 1, "params": {"lr": 0.1}})
    best = json.loads((tmp_path / "tune-attack" / "best.json").read_text())
    assert best == {"trial": 1, "params": {"lr": 0.1}, "study": study.study_name,
                    "trials": {"COMPLETE": 3, "RUNNING": 1}}


def test_which_stages_need_the_storage_is_a_property_of_the_stage():
    """6. preflight.py listed ("tune-model", "tune-attack") itself."""
    storage = {n for n, s in STAGES.items() if s.storage}
    assert storage == {"tune-model", "tune-attack"}
    listed = [f"{p.relative_to(ROOT)}:{node.lineno}" for p in SOURCES if p.name != "registry.py"
              for node in ast.walk(ast.parse(p.read_text())) if isinstance(node, ast.Tuple | ast.List | ast.Set)
              and {getattr(e, "value", None) for e in node.elts} == storage]
    assert not listed, listed


def test_the_attack_algorithm_takes_its_own_keys_only():
    """8. an exclusion list in attack.py and a key list in l1_attack.py; L1Attack took the whole [attack]."""
    own = {f for f in AttackParams.__dataclass_fields__}
    layout = set(AttackConfig.__dataclass_fields__) - own
    assert layout == {"shards", "targets", "batch_size", "chunk_samples"}
    from pipeline.attack.l1 import L1Attack

    signature = inspect.signature(L1Attack.__init__, eval_str=True)
    assert list(signature.parameters) == ["self", "model", "params"]
    assert signature.parameters["params"].annotation is AttackParams
    assert json.loads(json.dumps(AttackConfig(shards=3).params().__dict__)) == AttackParams().__dict__


def test_the_benchmark_attacks_what_the_stage_attacks():
    """9. benchmarks/attack_quality.py read the run's zarr and split.json itself and redid select_targets."""
    module = "benchmarks/attack_quality.py"
    assert "select_targets" in imported_from(module, "pipeline.attack.targets")
    assert "tuned" in imported_from(module, "pipeline.infra.launch")
    assert not {"zarr", "xarray"} & imported_from(module, None)  # the stores are read by the pipeline's code


def test_slurm_needs_a_profile_is_checked_in_one_place():
    """7. executor.py and preflight.py each said "executor slurm needs run.slurm_profile"."""
    saying = [p for p in SOURCES if "needs run.slurm_profile" in p.read_text()]
    assert [p.name for p in saying] == ["profile.py"]


def test_every_list_of_choices_is_written_once():
    """Model and attack optimizers, activations, architectures and error kinds: config.py lists each once;
    the attack spaces pipeline/attack/spaces/, the codes of the record space's searches fewest_edits.py; the
    modules, the tuning spaces and the stores take them from there (a reordered or extended list cannot drift
    apart).
    Item ids of °F and the digits values are typed with: features.py, once."""
    from pipeline import config
    from pipeline.attack import fewest_edits, spaces

    lists = {"model optimizers": config.OPTIMIZERS, "attack optimizers": config.ATTACK_OPTIMIZERS,
             "activations": config.ACTIVATIONS, "architectures": config.ARCHS, "error kinds": config.ERROR_KINDS,
             "attack spaces": spaces.NAMES, "searches of the record space": fewest_edits.METHODS}
    owners = {ROOT / "pipeline" / "config.py", Path(spaces.__file__), Path(fewest_edits.__file__)}
    for path in SOURCES:
        if path in owners:
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Tuple | ast.List) and len(node.elts) > 1 \
                    and all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts):
                words = {e.value for e in node.elts}
                for what, choices in lists.items():
                    assert words != set(choices), f"{path.relative_to(ROOT)}:{node.lineno} lists the {what} again"
    fields = {f.name: f.metadata["choices"] for f in config.dataclasses.fields(config.ModelParams)}
    assert (fields["arch"], fields["optimizer"], fields["activation"]) == (config.ARCHS, config.OPTIMIZERS,
                                                                        config.ACTIVATIONS)
    from pipeline.data.synth.physiology import Physiology
    from pipeline.features import FEATURES

    item_sets = [set(f.fahrenheit_itemids) for f in FEATURES if f.fahrenheit_itemids] + \
        [set(f.all_itemids) for f in FEATURES if len(f.all_itemids) > 1]
    again = [f"{p.relative_to(ROOT)}:{node.lineno}" for p in SOURCES if p.name != "features.py"
             for node in ast.walk(ast.parse(p.read_text())) if isinstance(node, ast.Tuple | ast.List)
             and {getattr(e, "value", None) for e in node.elts} in item_sets]
    assert not again, f"a feature's item ids listed again: {again}"
    assert "decimals" not in {f.name for f in dataclasses.fields(Physiology)}  # features.py says it once


def test_only_the_spaces_name_the_attack_spaces():
    """What differs between the tensor and the record space is the space's: its geometry
    (pipeline/attack/spaces/), its wiring (pipeline/attack/wiring/) and the report's text of it
    (space_text.py, keyed by name); no other module compares the space's name or checks for one space's
    class. The names are listed once, as the choices of [attack] space in config.py (below the attack,
    which reads them). tests/test_layers.py checks the imports: no stage reaches a space but by name."""
    owners = (ROOT / "pipeline" / "attack" / "spaces", ROOT / "pipeline" / "attack" / "wiring")
    asks = re.compile(r'"(record|tensor)"|\bspace\s*[!=]=|isinstance\([^)]*(Record|Tensor)Space')
    found = [f"{path.relative_to(ROOT)}:{n}: {line.strip()}" for path in SOURCES
             if not any(o in path.parents for o in owners) and path.name != "space_text.py"
             for n, line in enumerate(path.read_text().splitlines(), 1) if asks.search(line)
             and not line.startswith("SPACES = (")]
    assert not found, "\n".join(found)


def test_the_run_directory_layout_is_spelled_once():
    """Every name in the run directory is a constant of pipeline/infra/layout.py, which RunDir joins to the
    run's path; the registry's artifacts are built of those names (and of tuning stages' folders)."""
    from pipeline.infra import layout

    names = {v for k, v in vars(layout).items() if k.isupper() and isinstance(v, str)}
    for path in SOURCES:
        if path.name in ("layout.py", "registry.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and "." in node.value:
                assert node.value not in names, f"{path.relative_to(ROOT)}:{node.lineno} spells {node.value!r}"
    folders = {s.name for s in STAGES.values() if s.tunes}
    for stage in STAGES.values():
        for artifact in (*stage.inputs, *stage.outputs, *stage.makes):
            parts = artifact.split("/")
            assert parts[-1] in names and all(p in names | folders for p in parts[:-1]), (stage.name, artifact)
