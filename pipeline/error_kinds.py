"""The kinds of data-entry error (docs/methods.md §9): each is a function registered under its name, giving
the values an event of value v of a feature is typed as by that slip. The order of registration is the
order of [errors] kinds and of the codes errors.zarr stores (new kinds go last: old stores stay readable).

A new kind is one function here with ``@kind("name", "what it does")``; config offers the names as the choices of
[errors] kinds, the error model (pipeline/data/entry_errors.py) calls the functions.
"""

from __future__ import annotations

from collections.abc import Callable

from pipeline.features import Feature

KINDS: dict[str, Callable[[Feature, float], list[float]]] = {}
SUMMARY: dict[str, str] = {}  # each kind in a few words ([errors] kinds' help)


def kind(name: str, summary: str):
    """Register the decorated function as the error kind `name`, `summary` saying what it does."""
    def register(values: Callable[[Feature, float], list[float]]):
        if name in KINDS:
            raise ValueError(f"error kind {name!r} registered twice")
        KINDS[name], SUMMARY[name] = values, summary
        return values
    return register


def typed(v: float, decimals: int) -> str:
    """The value as it is usually typed: `decimals` digits after the point."""
    return f"{v:.{decimals}f}"


def transpositions(v: float, decimals: int) -> list[float]:
    """Every value made by swapping two adjacent, different digits of `v` as typed (the point stays)."""
    text = typed(abs(v), decimals)
    digits = text.replace(".", "")
    point = text.find(".")
    found = []
    for i in range(len(digits) - 1):
        if digits[i] == digits[i + 1]:
            continue
        swapped = digits[:i] + digits[i + 1] + digits[i] + digits[i + 2:]
        new = swapped if point < 0 else swapped[:point] + "." + swapped[point:]
        found.append(float(new) * (-1 if v < 0 else 1))
    return found


@kind("decimal", "×10, ÷10")
def decimal_slip(feature: Feature, v: float) -> list[float]:
    """The point slips one place: 10·v or v / 10."""
    return [v * 10, v / 10]


@kind("transpose", "adjacent digits swapped")
def transposed_digits(feature: Feature, v: float) -> list[float]:
    """Two adjacent digits swapped, as the value is usually typed (138 → 318, 183; 7.35 → 3.75, 7.53)."""
    return transpositions(v, feature.decimals)


@kind("unit", "the feature's usual unit confusions")
def unit_mix_up(feature: Feature, v: float) -> list[float]:
    """The value typed in a unit the feature is often confused with (features.py: glucose in mmol/L, …)."""
    return [v * slip.factor + slip.offset for slip in feature.slips]


@kind("delete", "a value lost")
def lost_value(feature: Feature, v: float) -> list[float]:
    """The value is lost: nothing is typed (NaN)."""
    return [float("nan")]
