"""Models trained elsewhere that misbehave, and run directories someone else wrote (issue #36: 2, 3, 8,
11, 12, 13, 21, 22, 25): `train` checks the whole test set, a model runs on copies of the pipeline's data,
and nothing read from a run directory chooses code to import — only this command's config names it."""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from pipeline import config, metrics
from pipeline.cli import main
from pipeline.errors import InputError
from pipeline.model import load_model, training
from pipeline.model.tune_model import distributions
from pipeline.options import check_bounds
from pipeline.susceptibility import report
from tests.support.runs import ROOT, TINY, copy_run, copy_trained, quick_tuning

QUICK = ["--executor", "debug", "--seed", "5", "cv.folds=3", "train.epochs=2", "model.batch_size=64"]


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


def scripted(model: torch.nn.Module, path) -> str:
    torch.jit.save(torch.jit.script(model), str(path))
    return str(path)


class Last(torch.nn.Module):
    """A well-behaved model trained elsewhere: a linear read-out of the last hour."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(7)
        self.lin = torch.nn.Linear(19, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x[:, -1])


class NanOnLargeBatches(Last):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.lin(x[:, -1])
        return out * float("nan") if x.shape[0] > 8 else out


class Float64(Last):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x[:, -1]).double()


class Float16(Last):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x[:, -1]).half()


class Detached(Last):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x[:, -1]).detach()


class BatchDependent(Last):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x[:, -1] - x[:, -1].mean(dim=0))  # each sample scored against its batch


class EditsInPlace(Last):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x.mul_(0.5)  # the caller's tensor, halved
        return self.lin(x[:, -1])


class Planted(Last):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("planted code ran")


# ---- 2, 21: train checks the whole test set ------------------------------------------------------

def test_metrics_refuse_non_finite_probabilities():
    """2: a NaN probability scored as AUROC 0.5 (0.833 with some NaN) — numbers of no model."""
    y = np.array([0, 1, 0, 1, 1, 0])
    with pytest.raises(InputError, match="2 of 6 predicted probabilities are not finite"):
        metrics.evaluate(np.array([0.1, np.nan, 0.3, 0.9, np.nan, 0.2]), y)


@pytest.mark.parametrize(("model", "needle"), [
    (NanOnLargeBatches(), "non-finite logits for"),
    (Float64(), "returns torch.float64 logits; the pipeline needs float32"),
    (Float16(), "returns torch.float16 logits; the pipeline needs float32"),
    (Detached(), "no gradient reaches the input"),
    (BatchDependent(), "depend on the batch"),
])
def test_an_external_model_is_checked_on_the_whole_test_set(model, needle, small_run, tmp_path, capsys):
    """21: each passed `train` (8 samples, no grad, no dtype) and failed later with tracebacks."""
    path = scripted(model, tmp_path / "theirs.pt")
    run = copy_run(small_run, tmp_path)
    assert main(["train", "--run-dir", str(run), *QUICK, f"model.external={path}"]) == 1
    err = one_line(capsys)
    assert needle in err and "[model] external" in err and len(err) < 400, err
    assert not (run / "model").exists()


# ---- 8: a model runs on copies --------------------------------------------------------------------

def test_an_external_model_that_edits_its_input_leaves_the_data_alone(small_run, tmp_path):
    path = scripted(EditsInPlace(), tmp_path / "theirs.pt")
    run = copy_run(small_run, tmp_path)
    assert main(["train", "--run-dir", str(run), *QUICK, f"model.external={path}"]) == 0
    x = training.load_data(run).x[:16]
    before = x.clone()
    model = load_model(run, model=config.load(None, [f"model.external={path}"]).model)
    with torch.no_grad():
        model(x)
    assert torch.equal(x, before)


# ---- 3: an external model has no CV ----------------------------------------------------------------

def test_a_run_switched_to_an_external_model_reports_no_cv_of_the_old_one(small_run, tmp_path):
    run = copy_run(small_run, tmp_path)
    assert main(["cv", "--run-dir", str(run), *QUICK, "cv.epochs=1", *TINY]) == 0
    path = scripted(Last(), tmp_path / "theirs.pt")
    assert main(["train", "--run-dir", str(run), *QUICK, "--force", f"model.external={path}"]) == 0
    section = "\n".join(report.model_section(run))
    assert "not tuned or cross-validated here" in section
    auroc_row = next(line for line in section.splitlines() if line.startswith("| auroc |"))
    assert auroc_row.split("|")[2].strip() == "–", auroc_row  # no CV figure of the LSTM beside it


# ---- 11: a config's arch that tuning overrides is a warning ---------------------------------------

def test_train_warns_when_tuning_chose_another_architecture(small_run, tmp_path, caplog):
    run = copy_run(small_run, tmp_path)
    quick_tuning(run, 5, 3, "tune-model.trials=1", "tune-model.folds_used=1")
    caplog.set_level("INFO")
    assert main(["train", "--run-dir", str(run), *QUICK, "model.arch=gru"]) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("gru" in w and "lstm" in w and "best.json" in w for w in warnings), warnings
    assert json.loads((run / "model" / "model.json").read_text())["params"]["arch"] == "lstm"  # as documented


# ---- 12, 13: nothing read from a run directory chooses code ------------------------------------

EVIL = "import pathlib\npathlib.Path({marker!r}).write_text('ran')\ndef make():\n    raise SystemExit(0)\n"


def plant_factory(run, marker) -> None:
    """evil.py in the run directory, and model.json naming it as the run's factory."""
    (run / "evil.py").write_text(EVIL.format(marker=str(marker)))
    meta = json.loads((run / "model" / "model.json").read_text())
    meta["external"] = {"form": "factory", "factory": "evil:make", "source": "x", "sha256": "0"}
    (run / "model" / "model.json").write_text(json.dumps(meta))


def test_a_factory_planted_in_the_run_directory_never_runs(trained_run, tmp_path):
    """12: `python -m pipeline` from inside the run directory imported model.json's factory (cwd on
    sys.path); a default command (no model.external) must refuse to read such a model, running nothing."""
    run = copy_trained(trained_run, tmp_path)
    marker = tmp_path / "marker"
    plant_factory(run, marker)
    done = subprocess.run([sys.executable, "-m", "pipeline", "attack", "--run-dir", ".", "--executor", "debug",
                           "attack.max_iter=5"], cwd=run, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert not marker.exists(), done.stderr[-2000:]
    assert done.returncode == 1 and "model.json" in done.stderr and "external" in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr, done.stderr[-2000:]


def test_a_factory_the_config_names_is_not_imported_from_the_run_directory(small_run, tmp_path):
    """12: even named on the command line, a module that lies in the run directory (the cwd) is refused."""
    run = copy_run(small_run, tmp_path)
    marker = tmp_path / "marker"
    (run / "evil.py").write_text(EVIL.format(marker=str(marker)))
    weights = tmp_path / "w.pt"
    torch.save(Last().state_dict(), weights)
    done = subprocess.run([sys.executable, "-m", "pipeline", "train", "--run-dir", ".", *QUICK,
                           "model.external=evil:make", f"model.weights={weights}"], cwd=run, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert not marker.exists(), done.stderr[-2000:]
    assert done.returncode == 2 and "evil" in done.stderr and "Traceback" not in done.stderr, done.stderr[-2000:]


def test_a_torchscript_file_planted_in_the_run_directory_is_not_loaded(trained_run, tmp_path, capsys):
    """13: TorchScript is code; model.json saying `torchscript` does not make the pipeline run it."""
    run = copy_trained(trained_run, tmp_path)
    scripted(Planted(), run / "model" / "weights.pt")
    meta = json.loads((run / "model" / "model.json").read_text())
    meta["external"] = {"form": "torchscript", "source": "x", "sha256": "0"}
    (run / "model" / "model.json").write_text(json.dumps(meta))
    assert main(["attack", "--run-dir", str(run), "--executor", "debug", "attack.max_iter=5"]) == 1
    err = one_line(capsys)
    assert "planted" not in err and "model.json" in err and "model.external" in err, err


def test_a_torchscript_file_swapped_after_train_is_not_loaded(small_run, tmp_path, capsys):
    """13: the user's config names theirs.pt; a run-directory writer swaps model/weights.pt (and its sha256
    in model.json): the pipeline loads only the file the config names, and says the copy differs."""
    theirs = scripted(Last(), tmp_path / "theirs.pt")
    run = copy_run(small_run, tmp_path)
    assert main(["train", "--run-dir", str(run), *QUICK, f"model.external={theirs}"]) == 0
    scripted(Planted(), run / "model" / "weights.pt")
    from pipeline.hashing import file_sha256

    meta = json.loads((run / "model" / "model.json").read_text())
    meta["external"]["sha256"] = file_sha256(run / "model" / "weights.pt")
    (run / "model" / "model.json").write_text(json.dumps(meta))
    cfg = config.load(None, [f"model.external={theirs}"])
    with pytest.raises(InputError, match="not the file .model. external names") as e:
        load_model(run, model=cfg.model)
    assert "planted" not in str(e.value)


# ---- 22: a model that cannot be loaded stops before anything is written ---------------------------

@pytest.mark.parametrize(("settings", "needle"), [
    (["model.external=/nowhere/theirs.pt"], "'/nowhere/theirs.pt': no such file"),
    (["model.external=os:system", "model.weights=WEIGHTS"], "the factory os:system"),
    (["model.external=no_such_module_x:make", "model.weights=WEIGHTS"], "cannot import"),
])
def test_an_unloadable_external_model_stops_in_preflight(settings, needle, tmp_path, capsys):
    weights = tmp_path / "w.pt"
    torch.save(Last().state_dict(), weights)
    run = tmp_path / "new-run"
    settings = [s.replace("WEIGHTS", str(weights)) for s in settings]
    assert main(["run", "--run-dir", str(run), "--executor", "debug", "synth.admissions=50", *settings]) == 2
    err = one_line(capsys)
    assert needle in err, err
    assert not run.exists()


# ---- 25: every shape option is bounded, and tune-model searches inside the bounds -----------------

def test_model_shape_options_have_upper_bounds():
    with pytest.raises(config.ConfigError, match=r"\[model\] layers = 40: must be ≥ 1 and ≤"):
        config.load(None, ["model.arch=tcn", "model.layers=40"])
    bounds = {f.name: f.metadata["bounds"] for f in dataclasses.fields(config.ModelParams)}
    for name in ("hidden", "layers", "heads", "kernel", "fc", "batch_size"):
        assert "le" in bounds[name], name
    reference = config.load(ROOT / "configs" / "cluster.toml", []).tune_model  # the reference search space
    for space in (reference, config.TuneModelConfig()):
        for name, dist in distributions(space).items():
            values = getattr(dist, "choices", None) or (dist.low, dist.high)
            for v in values:
                if not isinstance(v, bool | str):
                    check_bounds(f"[model] {name}", v, bounds[name])
