"""A model trained elsewhere, attacked as the pipeline's own (``[model] external``; docs/methods.md §2.2).

Two forms: a TorchScript file (``torch.jit.save``: code and weights in one archive, no pickle), or an
importable factory ``package.module:function`` that returns an ``nn.Module`` plus a state_dict file
(``[model] weights``, read with ``weights_only=True``). Either must map the pipeline's input — float32
(n, 48, 19) in [0, 1], the run's dataset.zarr `x` (with ``prepare.stats_from`` the statistics the model
was trained with) — to 2 logits (n, 2), class 1 = death; a model of another shape is one line, exit 1.

`train` stores it in ``model/`` (weights.pt: the TorchScript archive or the state_dict; model.json:
``external`` says which form, from where, and its sha256) and evaluates it once on the test set, so that
tune-attack, attack, errors and analyze run on it unchanged. Loading it back runs no code from the run
directory that the user did not name: TorchScript is not pickle, and the factory is the module the user
named in the config (recorded in model.json), imported from the Python path.
"""

from __future__ import annotations

import importlib
import shutil
from pathlib import Path

import torch
from torch import nn

from pipeline.config import ModelParams
from pipeline.errors import InputError
from pipeline.hashing import file_sha256
from pipeline.infra import layout


class ModelShapeError(InputError):
    """The external model does not map (n, time, features) to (n, 2) logits."""


def load_user(params: ModelParams, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """The model `[model] external` names, in eval mode, and its record for model.json."""
    spec = params.external
    if ":" in spec:
        module_name, _, name = spec.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), name)
        except (ImportError, AttributeError) as e:
            raise InputError(f"[model] external = {spec!r}: cannot import the factory ({e})") from None
        weights = Path(params.weights)
        record = {"form": "factory", "factory": spec, "source": str(weights.resolve()), "sha256": sha256(weights)}
        return from_factory(spec, factory, weights, device), record
    path = Path(spec)
    record = {"form": "torchscript", "source": str(path.resolve()), "sha256": sha256(path)}
    return torchscript(path, device), record


def load_stored(folder: Path, record: dict, device: str | torch.device = "cpu") -> nn.Module:
    """The external model as `train` stored it in `folder` (model/)."""
    if record["form"] == "torchscript":
        return torchscript(folder / layout.WEIGHTS, device)
    module_name, _, name = record["factory"].partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as e:
        raise InputError(f"{folder / layout.MODEL_META}: the model's factory {record['factory']!r} cannot be imported "
                         f"({e}); install it where this runs") from None
    return from_factory(record["factory"], factory, folder / layout.WEIGHTS, device)


def store(folder: Path, params: ModelParams) -> None:
    """Copy the model's one file (the TorchScript archive, or the factory's state_dict) as weights.pt."""
    source = Path(params.weights if ":" in params.external else params.external)
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, folder / layout.WEIGHTS)


def torchscript(path: Path, device) -> nn.Module:
    if not path.is_file():
        raise InputError(f"[model] external = {str(path)!r}: no such file (a TorchScript file, or "
                         "'package.module:factory')")
    try:
        return torch.jit.load(str(path), map_location=device).eval()
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"{path}: not a TorchScript file ({first}); save the model with "
                         "torch.jit.save(torch.jit.script(model), path), or name a factory") from None


def from_factory(spec: str, factory, weights: Path, device) -> nn.Module:
    if not weights.is_file():
        raise InputError(f"[model] weights = {str(weights)!r}: no such file (the state_dict of {spec})")
    model = factory()
    if not isinstance(model, nn.Module):
        raise InputError(f"[model] external = {spec!r}: the factory returned {type(model).__name__}, not an "
                         "nn.Module")
    try:
        state = torch.load(weights, map_location=device, weights_only=True)
        model.load_state_dict(state)
    except (RuntimeError, ValueError, OSError, KeyError) as e:
        first = str(e).strip().splitlines()[0]
        raise InputError(f"{weights}: not the state_dict of {spec} ({first})") from None
    return model.to(device).eval()


def check_shape(model: nn.Module, x: torch.Tensor, where: str) -> None:
    """One line, exit 1, unless (n, time, features) → finite float logits (n, 2)."""
    expected = f"float32 (n, {x.shape[1]}, {x.shape[2]}) → logits (n, 2)"
    try:
        with torch.no_grad():
            out = model(x)
    except Exception as e:  # anything the user's model raises on the pipeline's input
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelShapeError(f"{where}: fails on the pipeline's input, {expected} ({type(e).__name__}: "
                              f"{first})") from None
    if not isinstance(out, torch.Tensor) or out.shape != (x.shape[0], 2) or not out.is_floating_point():
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelShapeError(f"{where}: returns {got} for input {tuple(x.shape)}; the pipeline needs {expected}")
    if not torch.isfinite(out).all():
        raise ModelShapeError(f"{where}: returns non-finite logits on the pipeline's input")


def sha256(path: Path) -> str:
    if not path.is_file():
        raise InputError(f"[model] external: {path}: no such file")
    return file_sha256(path)
