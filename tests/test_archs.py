"""The architectures of `[model] arch` (pipeline/model/archs.py) and a model trained elsewhere
(`[model] external`, pipeline/model/external.py): each maps the pipeline's input to two logits with
gradients for the attack, trains, and goes through train → attack → errors → analyze on CPU."""

import json

import pytest
import torch
import xarray as xr

from pipeline import config
from pipeline.cli import main
from pipeline.config import ModelParams
from pipeline.infra.registry import chain
from pipeline.model import archs, build, load_model, training
from pipeline.model.recurrent import ACTIVATIONS
from tests.support.runs import FEWEST_QUICK, copy_run, quick_tuning

SMALL = {"hidden": 16, "layers": 2, "fc": 8, "heads": 2}
TINY_MODEL = {"hidden": 8, "layers": 1, "fc": 8, "heads": 2}  # the stages' plumbing, at the least cost
CHAIN = ["--executor", "debug", "--seed", "5", "cv.folds=3", "train.epochs=3", "model.batch_size=64",
         "model.lr=0.01", "attack.max_iter=30", "attack.batch_size=32", "attack.chunk_samples=8",
         "errors.max_errors=2", *FEWEST_QUICK]


def test_every_list_of_choices_is_the_modules_own():
    assert tuple(archs.ARCHS) == config.ARCHS
    assert tuple(ACTIVATIONS) == config.ACTIVATIONS
    model = build(ModelParams(hidden=8, fc=4))
    for name in config.OPTIMIZERS:  # each builds
        assert archs.make_optimizer(model, ModelParams(optimizer=name)) is not None


@pytest.mark.parametrize("arch", config.ARCHS)
def test_each_architecture_maps_the_input_to_two_logits_with_input_gradients(arch):
    params = ModelParams(arch=arch, **SMALL)
    torch.manual_seed(0)
    model = build(params).eval()
    torch.manual_seed(0)
    again = build(params).eval()
    x = torch.rand(5, 48, 19, requires_grad=True)
    out = model(x)
    assert out.shape == (5, 2) and out.dtype == torch.float32
    assert torch.equal(out, again(x))  # the seed fixes the weights
    out[:, 1].sum().backward()
    assert x.grad is not None and (x.grad.abs().sum(dim=(1, 2)) > 0).all()  # every sample moves the logit
    assert torch.allclose(model(x[:2]), out[:2], atol=1e-5)  # a batch's rows do not mix


def test_the_tcn_is_causal_and_logreg_is_linear():
    tcn = build(ModelParams(arch="tcn", hidden=8, layers=3)).eval()
    x = torch.rand(2, 48, 19)
    late = x.clone()
    late[:, 30:] = 0.5
    a, b = tcn.blocks(x.transpose(1, 2)), tcn.blocks(late.transpose(1, 2))
    assert torch.equal(a[..., :30], b[..., :30]) and not torch.equal(a[..., 30:], b[..., 30:])
    lin = build(ModelParams(arch="logreg")).eval()
    z = lambda v: (lin(v)[:, 1] - lin(v)[:, 0])  # noqa: E731 (the log-odds)
    assert torch.allclose(z(x + late) - z(late), z(x) - z(torch.zeros_like(x)), atol=1e-4)


@pytest.mark.parametrize(("settings", "needle"), [
    (["model.arch=transformer", "model.hidden=30"], "[model] hidden = 30 must be a multiple of heads = 4"),
    (["model.weights=w.pt"], "[model] weights is for external = 'package.module:factory'"),
    (["model.external=mylab.models:make"], "a factory needs `weights`"),
])
def test_a_bad_model_table_is_one_line_before_any_task(settings, needle, small_run, tmp_path, capsys):
    run = copy_run(small_run, tmp_path)
    assert main(["train", "--run-dir", str(run), *CHAIN, *settings]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1, err


def test_build_refuses_a_transformer_whose_heads_do_not_divide_its_width():
    with pytest.raises(config.ConfigError, match="hidden = 30 must be a multiple of heads = 4"):
        build(ModelParams(arch="transformer", hidden=30, heads=4))


@pytest.mark.heavy
@pytest.mark.parametrize("arch", ["gru", "transformer", "tcn", "logreg"])
def test_each_architecture_trains_and_is_attacked_through_the_stages(arch, small_run, tmp_path):
    run = copy_run(small_run, tmp_path)
    model_keys = [f"model.arch={arch}", *(f"model.{k}={v}" for k, v in TINY_MODEL.items())]
    for stage in ("train", "attack", "errors", "analyze"):
        assert main([stage, "--run-dir", str(run), *CHAIN, *model_keys]) == 0, stage
    meta = json.loads((run / "model" / "model.json").read_text())
    assert meta["params"]["arch"] == arch
    model = load_model(run)
    assert type(model) is archs.ARCHS[arch].module
    attack = xr.open_zarr(run / "attack.zarr")
    assert int(attack.found.sel(kind="best").sum()) > 0  # some target flipped
    report = (run / "report.md").read_text()
    first_key = (*archs.ARCHS[arch].keys, *archs.TRAINING)[0]  # the model line names its own keys only
    assert f"{archs.ARCHS[arch].label}: {first_key} " in report


def test_tune_model_searches_over_architectures(small_run, tmp_path):
    best, trials = quick_tuning(copy_run(small_run, tmp_path), 2, 2, "tune-model.trials=4",
                                "tune-model.archs=[\"logreg\", \"tcn\"]")
    assert {t.params["arch"] for t in trials} == {"logreg", "tcn"}  # both searched, each with its own keys
    for t in trials:
        assert set(t.params) == {"arch", *archs.ARCHS[t.params["arch"]].keys, *archs.TRAINING}
    assert set(best["params"]) == {"arch", *archs.ARCHS[best["params"]["arch"]].keys, *archs.TRAINING}


# ---- a model trained elsewhere ------------------------------------------------------------------

class Outside(torch.nn.Module):
    """A model as a user might train it elsewhere: a GRU and a linear read-out of its last step."""

    def __init__(self):
        super().__init__()
        self.gru = torch.nn.GRU(19, 8, batch_first=True)
        self.out = torch.nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.gru(x)
        return self.out(h[:, -1])


def outside() -> torch.nn.Module:
    """The factory `[model] external = 'tests.test_archs:outside'` names."""
    torch.manual_seed(11)
    return Outside()


@pytest.mark.heavy
def test_an_external_torchscript_model_is_attacked_through_the_documented_path(small_run, tmp_path):
    """The user's TorchScript file: `pipeline run` skips tune-model and cv, `train` stores and evaluates it
    once, and tune-attack, attack, errors and analyze run on it; its predictions are the file's."""
    model = outside().eval()
    path = tmp_path / "theirs.pt"
    torch.jit.save(torch.jit.script(model), str(path))
    cfg = config.load(None, [f"model.external={path}", f"prepare.mimic_dir={tmp_path}"])
    assert chain(cfg) == ["prepare", "train", "tune-attack", "attack", "errors", "analyze"]
    run = copy_run(small_run, tmp_path)
    for stage in ("train", "tune-attack", "attack", "errors", "analyze"):
        assert main([stage, "--run-dir", str(run), *CHAIN, f"model.external={path}", "tune-attack.trials=2",
                     "tune-attack.targets=8"]) == 0, stage
    meta = json.loads((run / "model" / "model.json").read_text())
    assert meta["external"]["form"] == "torchscript" and meta["external"]["source"] == str(path.resolve())
    loaded = load_model(run, model=cfg.model)  # loaded as this command's config names it, never as model.json does
    x = training.load_data(run).x[:16]
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), atol=1e-6)
    assert int(xr.open_zarr(run / "attack.zarr").found.sel(kind="best").sum()) > 0
    assert "External model (torchscript" in (run / "report.md").read_text()


def test_an_external_factory_with_weights_is_attacked(small_run, tmp_path):
    weights = tmp_path / "weights.pt"
    torch.save(outside().state_dict(), weights)
    run = copy_run(small_run, tmp_path)
    external = ["model.external=tests.test_archs:outside", f"model.weights={weights}"]
    for stage in ("train", "attack"):
        assert main([stage, "--run-dir", str(run), *CHAIN, *external]) == 0, stage
    assert json.loads((run / "model" / "model.json").read_text())["external"]["factory"] == "tests.test_archs:outside"
    loaded = load_model(run, model=config.load(None, external).model)
    assert isinstance(loaded.inner, Outside)  # called on copies of its input (external.OnCopies)


class WrongOutput(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=2)  # (n, 48): no two logits


class WrongInput(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(17, 2)  # 17 features, not 19

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x[:, -1])


@pytest.mark.parametrize(("model", "needle"), [
    (WrongOutput(), "returns (36, 48) for input (36, 48, 19); the pipeline needs float32 (n, 48, 19) → float32 "
                    "logits (n, 2)"),
    (WrongInput(), "fails on the pipeline's input, float32 (n, 48, 19) → float32 logits (n, 2) (RuntimeError"),
])
def test_an_external_model_of_the_wrong_shape_is_one_line(model, needle, small_run, tmp_path, capsys):
    path = tmp_path / "wrong.pt"
    torch.jit.save(torch.jit.script(model), str(path))
    run = copy_run(small_run, tmp_path)
    assert main(["train", "--run-dir", str(run), *CHAIN, f"model.external={path}"]) == 1
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1, err
    assert not (run / "model").exists()


def test_an_external_file_that_is_no_torchscript_is_one_line(small_run, tmp_path, capsys):
    path = tmp_path / "pickled.pt"
    torch.save(outside(), path)  # a pickled module: never loaded (it could run any code)
    run = copy_run(small_run, tmp_path)
    assert main(["train", "--run-dir", str(run), *CHAIN, f"model.external={path}"]) == 2  # preflight
    err = capsys.readouterr().err.strip()
    assert "not a TorchScript file" in err and len(err.splitlines()) == 1, err


def test_the_lstm_default_builds_the_same_weights_as_before():
    """`arch = lstm` is the papers' model unchanged: the same modules in the same order, so the same seed
    gives the same weights (the susceptibility checksum in benchmarks/README.md rests on it)."""
    torch.manual_seed(3)
    model = build(ModelParams(hidden=8, fc=4))
    names = [n for n, _ in model.named_parameters()]
    assert names[:4] == ["lstm.weight_ih_l0", "lstm.weight_hh_l0", "lstm.bias_ih_l0", "lstm.bias_hh_l0"]
    assert names[-4:] == ["head.2.weight", "head.2.bias", "head.4.weight", "head.4.bias"]
    torch.manual_seed(3)
    lstm = torch.nn.LSTM(19, 8, batch_first=True, bidirectional=True)
    assert torch.equal(lstm.weight_ih_l0, model.lstm.weight_ih_l0)

