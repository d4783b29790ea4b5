"""Models whose answer is known, for the searches' tests: linear in the model's input."""

import numpy as np
import torch


class Linear(torch.nn.Module):
    """Logits (0, w·x + b): for class 0 the margin Z_1 − Z_0 is w·x + b, and `margin0` at x = 0.5 everywhere."""

    def __init__(self, w: np.ndarray, margin0: float = -1.0):
        super().__init__()
        self.w = torch.nn.Parameter(torch.as_tensor(w, dtype=torch.float32), requires_grad=False)
        self.b = margin0 - float((w * 0.5).sum())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = (x * self.w).sum(dim=(1, 2)) + self.b
        return torch.stack([torch.zeros_like(s), s], dim=1)


class OneCell(torch.nn.Module):
    """logit(1) − logit(0) = w · (x[:, hour, feature] − threshold): only that cell of x counts."""

    def __init__(self, hour: int, feature: int, w: float, threshold: float):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(w), requires_grad=False)
        self.hour, self.feature, self.threshold = hour, feature, threshold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.w * (x[:, self.hour, self.feature] - self.threshold)
        return torch.stack([torch.zeros_like(z), z], dim=1)
