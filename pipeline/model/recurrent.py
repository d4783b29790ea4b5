"""The recurrent models: an LSTM (the papers') or a GRU over the hourly steps of the features, 2 logits.

Read-out from the final hidden state of each direction — forward at t = 47, backward at t = 0 (the
published code took the output at the last step, where the backward direction has seen one step) —
then activation, dropout, Linear(→ fc), activation, Linear(fc → 2). No softmax inside: the loss is
cross-entropy on logits (the reference applied CrossEntropyLoss to a softmax, a double softmax).

>>> model = MortalityLSTM(ModelParams(hidden=32, bidirectional=True))
>>> model(torch.zeros(4, 48, 19)).shape
torch.Size([4, 2])
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.config import ModelParams
from pipeline.features import FEATURES, WINDOW_HOURS

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}  # config.ACTIVATIONS names them (tests/test_archs.py)
HEAD = ("fc", "dropout", "activation")  # the [model] keys of the read-out every architecture shares (head)


def head(params: ModelParams, width: int) -> nn.Sequential:
    """Every architecture's read-out → 2 logits: activation, dropout, Linear(width → fc), activation,
    Linear(fc → 2)."""
    act = ACTIVATIONS[params.activation]
    return nn.Sequential(act(), nn.Dropout(params.dropout), nn.Linear(width, params.fc), act(), nn.Linear(params.fc, 2))


def last_states(h_n: torch.Tensor, params: ModelParams, batch: int) -> torch.Tensor:
    """The last layer's final hidden state of each direction, (batch, directions · hidden): forward state at
    t = 47 ‖ backward state at t = 0."""
    directions = 2 if params.bidirectional else 1
    return torch.cat(list(h_n.view(params.layers, directions, batch, params.hidden)[-1]), dim=1)


class MortalityLSTM(nn.Module):
    """x (batch, time, feature) float32 in [0, 1] → logits (batch, 2)."""

    NAME, LABEL = "lstm", "LSTM"  # [model] arch; as the report names it
    KEYS = ("hidden", "layers", "bidirectional", *HEAD)  # the [model] keys that shape it, as tune-model suggests them

    def __init__(self, params: ModelParams, n_features: int = len(FEATURES), n_time: int = WINDOW_HOURS):
        super().__init__()
        self.params = params
        self.lstm = nn.LSTM(n_features, params.hidden, num_layers=params.layers, batch_first=True,
                            bidirectional=params.bidirectional,
                            dropout=params.dropout if params.layers > 1 else 0.0)
        self.head = head(params, (2 if params.bidirectional else 1) * params.hidden)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        _, (h_n, _) = self.lstm(x)
        return last_states(h_n, self.params, x.shape[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encode(x))


class MortalityGRU(nn.Module):
    """The LSTM's shape with a GRU cell (fewer weights; YAIB's best recurrent model on MIMIC-IV mortality)."""

    NAME, LABEL = "gru", "GRU"
    KEYS = ("hidden", "layers", "bidirectional", *HEAD)

    def __init__(self, params: ModelParams, n_features: int = len(FEATURES), n_time: int = WINDOW_HOURS):
        super().__init__()
        self.params = params
        self.gru = nn.GRU(n_features, params.hidden, num_layers=params.layers, batch_first=True,
                          bidirectional=params.bidirectional, dropout=params.dropout if params.layers > 1 else 0.0)
        self.head = head(params, (2 if params.bidirectional else 1) * params.hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, h_n = self.gru(x)
        return self.head(last_states(h_n, self.params, x.shape[0]))
