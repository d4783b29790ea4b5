"""The architectures `[model] arch` chooses: each one's module and the [model] keys that shape it, which
are also the keys tune-model searches for it (docs/methods.md §2.1). A new architecture is a module with
a class ``(params, n_features, n_time)`` → logits (batch, 2) that declares its NAME, LABEL and KEYS, its
class in MODULES, and its name in config.ARCHS.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from pipeline import config
from pipeline.config import ModelParams
from pipeline.features import FEATURES, WINDOW_HOURS
from pipeline.model.logreg import MortalityLogReg
from pipeline.model.recurrent import MortalityGRU, MortalityLSTM
from pipeline.model.tcn import MortalityTCN
from pipeline.model.transformer import MortalityTransformer

TRAINING = ("optimizer", "lr", "batch_size")  # every architecture's, searched after its own


@dataclass(frozen=True)
class Arch:
    label: str  # as the report names it
    module: type[nn.Module]
    keys: tuple[str, ...]  # the [model] keys that shape it, in the order tune-model suggests them


# each class declares its NAME, LABEL and KEYS in its own module; this is where they are registered
MODULES = (MortalityLSTM, MortalityGRU, MortalityTransformer, MortalityTCN, MortalityLogReg)
ARCHS: dict[str, Arch] = {m.NAME: Arch(m.LABEL, m, m.KEYS) for m in MODULES}
if tuple(ARCHS) != config.ARCHS:  # config (below the model) offers the names as [model] arch's choices
    raise ImportError(f"the registered architectures {tuple(ARCHS)} are not config.ARCHS {config.ARCHS}")


def build(params: ModelParams, n_features: int = len(FEATURES), n_time: int = WINDOW_HOURS) -> nn.Module:
    """The model of `params.arch`: float32 (n, n_time, n_features) in [0, 1] → logits (n, 2)."""
    params.check()
    return ARCHS[params.arch].module(params, n_features, n_time)


def params_from_dict(values: dict[str, Any]) -> ModelParams:
    """ModelParams from a dict that may hold other keys too (e.g. an Optuna trial's)."""
    names = {f.name for f in dataclasses.fields(ModelParams)}
    return ModelParams(**{k: v for k, v in values.items() if k in names})


def make_optimizer(model: nn.Module, params: ModelParams) -> torch.optim.Optimizer:
    if params.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=params.lr)
    if params.optimizer == "rmsprop":
        return torch.optim.RMSprop(model.parameters(), lr=params.lr)
    if params.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=params.lr, momentum=0.9)
    raise ValueError(f"unknown optimizer {params.optimizer!r} (known: {', '.join(config.OPTIMIZERS)})")
