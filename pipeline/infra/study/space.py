"""Search spaces: parameters in their own units, drawn for a trial and described for people.

A stage declares its search space as Optuna distributions; :func:`suggest` draws one parameter of a
trial from its distribution, and :func:`describe` writes a distribution as the study's user attributes
(and optuna-dashboard) show it.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, IntDistribution


def suggest(trial: optuna.Trial, name: str, distribution: BaseDistribution) -> Any:
    """trial.suggest_* for a declared distribution (Optuna's own dispatcher is private)."""
    if isinstance(distribution, CategoricalDistribution):
        return trial.suggest_categorical(name, distribution.choices)
    if isinstance(distribution, IntDistribution):
        return trial.suggest_int(name, distribution.low, distribution.high, step=distribution.step,
                                 log=distribution.log)
    return trial.suggest_float(name, distribution.low, distribution.high, step=distribution.step,
                               log=distribution.log)


def describe(distribution: BaseDistribution) -> list | str:
    """A distribution as a person reads it: the choices, or "low…high" (+ " log")."""
    if isinstance(distribution, CategoricalDistribution):
        return list(distribution.choices)
    return f"{distribution.low:g}…{distribution.high:g}" + (" log" if distribution.log else "")
