"""MIMIC-III in-hospital mortality LSTM, L1 adversarial attack and susceptibility analysis.

Stages (``python -m pipeline --help``): synth → prepare → tune-model → cv → train → tune-attack →
attack → analyze. Each reads and writes files in one run directory.
"""

__version__ = "0.1.0"
