"""A temporal convolutional network (Bai et al. 2018) over the hourly steps → 2 logits.

`layers` residual blocks, each two causal convolutions of width `kernel` with dilation 2^block (an hour
sees only itself and earlier hours), activation and dropout after each, and a 1×1 convolution on the skip
path where the width changes. The read-out is the mean over the window of the last block's channels (a
shallow stack's last step alone would see a few hours), then the common head (recurrent.head).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.config import ModelParams
from pipeline.features import FEATURES, WINDOW_HOURS
from pipeline.model.recurrent import ACTIVATIONS, HEAD, head


class CausalBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel: int, dilation: int, dropout: float, activation: str):
        super().__init__()
        self.pad = (kernel - 1) * dilation  # on the left only: causal
        self.conv1 = nn.Conv1d(c_in, c_out, kernel, dilation=dilation)
        self.conv2 = nn.Conv1d(c_out, c_out, kernel, dilation=dilation)
        self.act, self.drop = ACTIVATIONS[activation](), nn.Dropout(dropout)
        self.skip = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # (batch, channels, time)
        y = self.drop(self.act(self.conv1(F.pad(h, (self.pad, 0)))))
        y = self.drop(self.act(self.conv2(F.pad(y, (self.pad, 0)))))
        return self.act(y + self.skip(h))


class MortalityTCN(nn.Module):
    """x (batch, time, feature) float32 in [0, 1] → logits (batch, 2)."""

    NAME, LABEL = "tcn", "TCN"
    KEYS = ("hidden", "layers", "kernel", *HEAD)

    def __init__(self, params: ModelParams, n_features: int = len(FEATURES), n_time: int = WINDOW_HOURS):
        super().__init__()
        self.params = params
        widths = [n_features] + [params.hidden] * params.layers
        self.blocks = nn.Sequential(*[CausalBlock(widths[k], widths[k + 1], params.kernel, 2 ** k, params.dropout,
                                                  params.activation) for k in range(params.layers)])
        self.head = head(params, params.hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(x.transpose(1, 2)).mean(dim=2))
