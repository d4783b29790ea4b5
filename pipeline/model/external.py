"""A model trained elsewhere, attacked as the pipeline's own (``[model] external``; docs/methods.md §2.2).

Two forms: a TorchScript file (``torch.jit.save``: code and weights in one archive, no pickle), or an
importable factory ``package.module:function`` that returns an ``nn.Module`` plus a state_dict file
(``[model] weights``, read with ``weights_only=True``). Either must map the pipeline's input — float32
(n, time, feature) in [0, 1], the run's dataset.zarr `x` (with ``prepare.stats_from`` the statistics the model
was trained with) — to 2 float32 logits (n, 2), class 1 = death, finite, each row its sample's alone,
with a gradient reaching the input (the attack follows it); `train` checks all of it on the whole test
set, and a model that fails is one line, exit 1.

`train` stores it in ``model/`` (weights.pt: the TorchScript archive or the state_dict; model.json:
``external`` says which form, from where, and its sha256) and evaluates it once on the test set, so that
tune-attack, attack, errors and analyze run on it unchanged. TorchScript is code, and so is a factory:
what is run is only what this command's config names (pipeline/infra/trusted.py). model.json is
compared with it, never obeyed: a factory is imported by the name in the config, from outside the run
directory; a TorchScript model is read from the file the config names, whose sha256 must be that of
the stored copy. The model always runs on a copy of its input, so one that edits it in place cannot
change the pipeline's data.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import torch
from torch import nn

from pipeline.config import ModelParams
from pipeline.errors import InputError
from pipeline.hashing import file_sha256
from pipeline.infra import layout, trusted

CHECK_BATCH = 256  # rows per forward pass of the check; each batch is compared with its two halves
TOLERANCE = 1e-4  # |batch − halves| allowed (float32 kernels differ slightly by batch size)


class ModelShapeError(InputError):
    """The external model does not map (n, time, features) to (n, 2) logits as the pipeline needs."""


class OnCopies(nn.Module):
    """The user's model, called on a copy of its input (a model that edits its input in place would change
    the dataset's tensors, or the attack's variable). The copy is differentiable: gradients pass."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.clone())


def is_factory(spec: str) -> bool:
    return ":" in spec


def load_user(params: ModelParams, run_dir: Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """The model `[model] external` names (this command's config), in eval mode, and its record for model.json."""
    spec = params.external
    if is_factory(spec):
        weights = Path(params.weights)
        record = {"form": "factory", "factory": spec, "source": str(weights.resolve()), "sha256": sha256(weights)}
        return from_factory(spec, trusted.factory(spec, run_dir), weights, device), record
    path = Path(spec)
    archive = read_named(path)
    record = {"form": "torchscript", "source": str(path.resolve()), "sha256": hashlib.sha256(archive).hexdigest()}
    return torchscript(archive, path, device), record


def load_stored(folder: Path, record: dict, params: ModelParams | None, run_dir: Path,
                device: str | torch.device = "cpu") -> nn.Module:
    """The external model `train` stored in `folder` (model/), as this command's config (`params`) names it:
    model.json's `record` is only compared with the config, and a mismatch is one line."""
    meta = folder / layout.MODEL_META
    named = params.external if params is not None else ""
    if not named:
        raise InputError(f"{meta}: the run's model was trained elsewhere ({record.get('form')}), but this "
                         "command's config names no model.external: pass the model.external (and model.weights) "
                         "`train` was given; code is run only when the config names it")
    form = "factory" if is_factory(named) else "torchscript"
    if record.get("form") != form or record.get("factory", named) != named:
        raise InputError(f"{meta}: the run's model is {record.get('factory') or record.get('form')!r}, not "
                         f"[model] external = {named!r}; redo `train --force` with this config")
    if form == "factory":  # the state_dict is data (weights_only); the code is the config's factory
        return from_factory(named, trusted.factory(named, run_dir), folder / layout.WEIGHTS, device)
    archive = read_named(Path(named))  # the bytes checked are the bytes loaded
    stored = folder / layout.WEIGHTS
    if not stored.is_file() or hashlib.sha256(archive).hexdigest() != file_sha256(stored):
        raise InputError(f"{stored}: not the file [model] external names ({named}: its sha256 differs); "
                         "TorchScript is code, so only that file is loaded: redo `train --force` if the model "
                         "changed")
    return torchscript(archive, Path(named), device)


def store(folder: Path, params: ModelParams) -> None:
    """The model's one file as weights.pt: the TorchScript archive, or the factory's state_dict."""
    source = Path(params.weights if is_factory(params.external) else params.external)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / layout.WEIGHTS).write_bytes(source.read_bytes())


def read_named(path: Path) -> bytes:
    if not path.is_file():
        raise InputError(f"[model] external = {str(path)!r}: no such file (a TorchScript file, or "
                         "'package.module:factory')")
    return path.read_bytes()


def torchscript(archive: bytes, path: Path, device) -> nn.Module:
    try:
        return OnCopies(torch.jit.load(io.BytesIO(archive), map_location=device)).eval()
    except RuntimeError as e:
        raise InputError(f"{path}: not a TorchScript file ({first_line(e)}); save the model with "
                         "torch.jit.save(torch.jit.script(model), path), or name a factory") from None


def from_factory(spec: str, factory, weights: Path, device) -> nn.Module:
    if not weights.is_file():
        raise InputError(f"[model] weights = {str(weights)!r}: no such file (the state_dict of {spec})")
    try:
        model = factory()
    except Exception as e:  # anything the user's code raises, as one line
        raise InputError(f"[model] external = {spec!r}: calling the factory {spec} failed ({type(e).__name__}: "
                         f"{first_line(e)})") from None
    if not isinstance(model, nn.Module):
        raise InputError(f"[model] external = {spec!r}: the factory returned {type(model).__name__}, not an "
                         "nn.Module")
    try:
        model.load_state_dict(torch.load(weights, map_location=device, weights_only=True))
    except (RuntimeError, ValueError, OSError, KeyError) as e:
        raise InputError(f"{weights}: not the state_dict of {spec} ({first_line(e)})") from None
    return OnCopies(model.to(device)).eval()


def check(model: nn.Module, x: torch.Tensor, where: str) -> torch.Tensor:
    """The logits of every row of `x` (the whole test set), or one line (exit 1) unless the model maps it as
    the pipeline needs: float32 (n, 2), finite, a batch's rows equal to its halves', gradients reaching
    the input."""
    logits, mixed = [], 0
    with torch.no_grad():
        for start in range(0, len(x), CHECK_BATCH):
            batch = x[start:start + CHECK_BATCH]
            out = forward(model, batch, where)
            logits.append(out)
            if len(batch) > 1 and torch.isfinite(out).all():
                half = len(batch) // 2
                parts = torch.cat([forward(model, batch[:half], where), forward(model, batch[half:], where)])
                mixed += int((~torch.isclose(out, parts, rtol=TOLERANCE, atol=TOLERANCE)).any(dim=1).sum())
    logits = torch.cat(logits)
    bad = int((~torch.isfinite(logits)).any(dim=1).sum())
    if bad:
        raise ModelShapeError(f"{where}: returns non-finite logits for {bad} of {len(x)} test samples")
    if mixed:
        raise ModelShapeError(f"{where}: the logits of {mixed} of {len(x)} test samples depend on the batch they "
                              "are in (a batch's logits differ from its halves'); each sample must be scored alone")
    check_gradient(model, x[:CHECK_BATCH], where)
    return logits


def forward(model: nn.Module, x: torch.Tensor, where: str) -> torch.Tensor:
    """model(x), or one line when it fails or returns anything but float32 logits (n, 2)."""
    expected = f"float32 (n, {x.shape[1]}, {x.shape[2]}) → float32 logits (n, 2)"
    try:
        out = model(x)
    except Exception as e:  # anything the user's model raises on the pipeline's input
        raise ModelShapeError(f"{where}: fails on the pipeline's input, {expected} ({type(e).__name__}: "
                              f"{first_line(e)})") from None
    if not isinstance(out, torch.Tensor) or out.shape != (x.shape[0], 2):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelShapeError(f"{where}: returns {got} for input {tuple(x.shape)}; the pipeline needs {expected}")
    if out.dtype != torch.float32:
        raise ModelShapeError(f"{where}: returns {out.dtype} logits; the pipeline needs float32 (the attack's "
                              "arithmetic and stored margins are float32)")
    return out


def check_gradient(model: nn.Module, x: torch.Tensor, where: str) -> None:
    """The attack moves the input along the gradient of the logits: it must reach the input, and be finite."""
    probe = x.clone().requires_grad_(True)
    with torch.enable_grad():
        out = forward(model, probe, where)
        grad = None
        if out.requires_grad:
            (grad,) = torch.autograd.grad((out[:, 1] - out[:, 0]).sum(), probe, allow_unused=True)
    if grad is None or not torch.isfinite(grad).all() or not grad.abs().sum() > 0:
        raise ModelShapeError(f"{where}: no gradient reaches the input from the logits (detached, or zero or "
                              "non-finite everywhere); the attack follows that gradient")


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


def sha256(path: Path) -> str:
    if not path.is_file():
        raise InputError(f"[model] external: {path}: no such file")
    return file_sha256(path)
