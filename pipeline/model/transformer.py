"""A small Transformer encoder over the hourly steps → 2 logits.

Each hour's feature values are embedded linearly (Linear(features → hidden)) plus a fixed sinusoidal encoding of the
hour; `layers` pre-norm encoder layers (`heads` heads, feed-forward 2 · hidden, GELU, dropout) follow;
the read-out is attention pooling — a learned score per hour, softmax over the window, the weighted sum —
then the common head (recurrent.head). The input is the imputed series, which has no padding and no
missing cells (every window has the same hours; `mask` is not an input), so no attention mask is needed: the
pooling learns which hours matter.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from pipeline.config import ModelParams
from pipeline.features import FEATURES, WINDOW_HOURS
from pipeline.model.recurrent import HEAD, head


def hour_encoding(n_time: int, width: int) -> torch.Tensor:
    """The sinusoidal position encoding (Vaswani et al.) of hours 0 … n_time − 1, (n_time, width)."""
    position = torch.arange(n_time, dtype=torch.float32).unsqueeze(1)
    rate = torch.exp(torch.arange(0, width, 2, dtype=torch.float32) * (-math.log(10000.0) / width))
    table = torch.zeros(n_time, width)
    table[:, 0::2] = torch.sin(position * rate)
    table[:, 1::2] = torch.cos(position * rate)[:, : width // 2]
    return table


class MortalityTransformer(nn.Module):
    """x (batch, time, feature) float32 in [0, 1] → logits (batch, 2)."""

    NAME, LABEL = "transformer", "Transformer encoder"
    KEYS = ("hidden", "layers", "heads", *HEAD)

    def __init__(self, params: ModelParams, n_features: int = len(FEATURES), n_time: int = WINDOW_HOURS):
        super().__init__()
        self.params = params
        self.embed = nn.Linear(n_features, params.hidden)
        self.register_buffer("hours", hour_encoding(n_time, params.hidden), persistent=False)
        layer = nn.TransformerEncoderLayer(params.hidden, params.heads, dim_feedforward=2 * params.hidden,
                                           dropout=params.dropout, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, params.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(params.hidden)
        self.score = nn.Linear(params.hidden, 1)
        self.head = head(params, params.hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(self.encoder(self.embed(x) + self.hours[: x.shape[1]]))
        weight = torch.softmax(self.score(h).squeeze(-1), dim=1)  # attention pooling over the hours
        return self.head(torch.einsum("bt,btc->bc", weight, h))
