"""The mortality model: an LSTM over 48 hourly steps of 19 features, returning 2 logits.

Read-out from the final hidden state of each direction — forward at t = 47, backward at t = 0 (the
published code took the output at the last step, where the backward direction has seen one step) —
then activation, dropout, Linear(→ fc), activation, Linear(fc → 2). No softmax inside: the loss is
cross-entropy on logits (the reference applied CrossEntropyLoss to a softmax, a double softmax).

>>> model = MortalityLSTM(ModelParams(hidden=32, bidirectional=True))
>>> model(torch.zeros(4, 48, 19)).shape
torch.Size([4, 2])
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.config import ModelParams
from pipeline.errors import MissingArtifact

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}
OPTIMIZERS = ("adam", "rmsprop", "sgd")


def params_from_dict(values: dict[str, Any]) -> ModelParams:
    """ModelParams from a dict that may hold other keys too (e.g. an Optuna trial's)."""
    names = {f.name for f in dataclasses.fields(ModelParams)}
    return ModelParams(**{k: v for k, v in values.items() if k in names})


class MortalityLSTM(nn.Module):
    """x (batch, time, feature) float32 in [0, 1] → logits (batch, 2)."""

    def __init__(self, params: ModelParams, n_features: int = 19):
        super().__init__()
        self.params = params
        self.lstm = nn.LSTM(n_features, params.hidden, num_layers=params.layers, batch_first=True,
                            bidirectional=params.bidirectional,
                            dropout=params.dropout if params.layers > 1 else 0.0)
        directions = 2 if params.bidirectional else 1
        act = ACTIVATIONS[params.activation]
        self.head = nn.Sequential(act(), nn.Dropout(params.dropout), nn.Linear(directions * params.hidden, params.fc),
                                  act(), nn.Linear(params.fc, 2))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The read-out: last layer's final hidden state of each direction, (batch, directions · hidden)."""
        _, (h_n, _) = self.lstm(x)
        directions = 2 if self.params.bidirectional else 1
        last_layer = h_n.view(self.params.layers, directions, x.shape[0], self.params.hidden)[-1]
        return torch.cat(list(last_layer), dim=1)  # forward state at t = 47 ‖ backward state at t = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encode(x))


def make_optimizer(model: nn.Module, params: ModelParams) -> torch.optim.Optimizer:
    if params.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=params.lr)
    if params.optimizer == "rmsprop":
        return torch.optim.RMSprop(model.parameters(), lr=params.lr)
    if params.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=params.lr, momentum=0.9)
    raise ValueError(f"unknown optimizer {params.optimizer!r} (known: {', '.join(OPTIMIZERS)})")


def save_model(folder: Path, model: MortalityLSTM, meta: dict[str, Any]) -> None:
    """weights.pt + model.json (params and provenance) in `folder` (the caller makes it atomic)."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), folder / "weights.pt")
    (folder / "model.json").write_text(json.dumps({"params": dataclasses.asdict(model.params), **meta},
                                                  indent=2, sort_keys=True) + "\n")


def load_model(run_dir: Path | str, device: str | torch.device = "cpu") -> MortalityLSTM:
    """The final model of a run (stage `train`), in eval mode: float32 (n, 48, 19) → logits (n, 2)."""
    folder = Path(run_dir) / "model"
    if not (folder / "model.json").exists():
        raise MissingArtifact(f"{folder}: no trained model (run the `train` stage first)")
    meta = json.loads((folder / "model.json").read_text())
    model = MortalityLSTM(ModelParams(**meta["params"]), n_features=meta.get("n_features", 19))
    model.load_state_dict(torch.load(folder / "weights.pt", map_location=device, weights_only=True))
    return model.to(device).eval()
