"""The mortality model: the LSTM (`lstm`), how it is trained (`training`, `metrics`) and the stages
that tune, cross-validate and train it (`tune_model`, `cv`, `train`)."""

from pipeline.model.lstm import MortalityLSTM, load_model, params_from_dict, save_model

__all__ = ["MortalityLSTM", "load_model", "params_from_dict", "save_model"]
