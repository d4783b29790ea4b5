"""The attack's targets: the correctly classified samples of a run's test set (or of all samples).

Shared by `tune-attack` (which draws its fixed subset from them) and `attack`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from . import training
from .rundir import RunDir


def select_targets(run_dir: RunDir, scope: str) -> pd.DataFrame:
    """Correctly classified samples (of the test set, or all): columns dataset_index, y, pred."""
    data = training.load_data(run_dir.path)
    split = run_dir.split()
    candidates = np.array(sorted(split["test"])) if scope == "test" else np.arange(len(data.y))
    model = run_dir.model()
    with torch.no_grad():
        pred = np.concatenate([model(data.x[candidates[i:i + 1024]]).argmax(1).numpy()
                               for i in range(0, len(candidates), 1024)])
    correct = pred == data.y[candidates]
    return pd.DataFrame({"dataset_index": candidates[correct], "y": data.y[candidates][correct],
                         "pred": pred[correct]})
