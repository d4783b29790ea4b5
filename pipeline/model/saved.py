"""The run's model on disk (``model/``) and back: the pipeline's own architectures as weights.pt plus
model.json, or a model trained elsewhere (``[model] external``, pipeline/model/external.py)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.config import ModelParams
from pipeline.errors import InputError, MissingArtifact
from pipeline.features import FEATURES, WINDOW_HOURS
from pipeline.infra import layout
from pipeline.infra.rundir import RunDir
from pipeline.model import archs, external


def save_model(folder: Path, model: nn.Module, meta: dict[str, Any]) -> None:
    """weights.pt + model.json (params and provenance) in `folder` (the caller makes it atomic)."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), folder / layout.WEIGHTS)
    (folder / layout.MODEL_META).write_text(json.dumps({"params": dataclasses.asdict(model.params), **meta},
                                                  indent=2, sort_keys=True) + "\n")


def load_model(run_dir: Path | str, device: str | torch.device = "cpu",
               model: ModelParams | None = None) -> nn.Module:
    """The final model of a run (stage `train`), in eval mode: float32 (n, time, feature) → logits (n, 2).

    `model` is this command's [model] table: a model trained elsewhere is loaded only as it names it (code
    is never chosen by model.json, which a writer of the run directory controls)."""
    run = RunDir(run_dir)
    folder = run.model_dir
    if not (folder / layout.MODEL_META).exists():
        raise MissingArtifact(f"{folder}: no trained model (run the `train` stage first)")
    meta = json.loads((folder / layout.MODEL_META).read_text())
    if "external" in meta:  # the user's model, as `train` stored it and this command's config names it
        return external.load_stored(folder, meta["external"], model, run.path, device)
    if model is not None and model.external:
        arch = meta.get("params", {}).get("arch", "lstm")
        raise InputError(f"{folder / layout.MODEL_META}: the run's model was trained here ({arch}), not [model] "
                         f"external = {model.external!r}; redo `train --force` with this config")
    params = archs.params_from_dict(meta["params"])
    # a model saved before its shape was recorded read the features and the window of its time
    net = archs.build(params, n_features=meta.get("n_features", len(FEATURES)), n_time=meta.get("n_time", WINDOW_HOURS))
    net.load_state_dict(torch.load(folder / layout.WEIGHTS, map_location=device, weights_only=True))
    return net.to(device).eval()
