"""The mortality model: the architectures (`archs`: lstm, gru, transformer, tcn, logreg; or a model trained
elsewhere, `external`), how they are trained (`training`, `metrics`), the run's model on disk (`saved`) and
the stages that tune, cross-validate and train it (`tune_model`, `cv`, `train`)."""

from pipeline.model.archs import build, params_from_dict
from pipeline.model.recurrent import MortalityLSTM
from pipeline.model.saved import load_model, save_model

__all__ = ["MortalityLSTM", "build", "load_model", "params_from_dict", "save_model"]
