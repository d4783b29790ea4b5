"""Shares of targets with their uncertainty: every share the report prints carries a 95% Wilson interval.

A share of 42 targets (the 1→0 direction of the default run) moves by ±15 points from one resample to the
next; printed bare, 23.8% reads as exact. The Wilson score interval (Wilson 1927) stays inside [0, 1] and
keeps its coverage near 0 and 1 and at small n, where the normal approximation does not (Brown, Cai &
DasGupta 2001).
"""

from __future__ import annotations

import math

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of k successes in n trials; (nan, nan) for n = 0."""
    if n <= 0:
        return float("nan"), float("nan")
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def pct(share: float, n: int | None = None) -> str:
    """'22.7% (18.5–27.5)': the share in percent and, given its denominator n, the 95% Wilson interval.
    '–' for a share of nothing (NaN, or n = 0)."""
    if share is None or share != share or n == 0:
        return "–"
    if n is None:
        return f"{100 * share:.1f}%"
    lo, hi = wilson(round(share * n), n)
    return f"{100 * share:.1f}% ({100 * lo:.1f}–{100 * hi:.1f})"


def count_pct(k: int, n: int) -> str:
    """'18 of 326 (5.5%, 3.5–8.5)'."""
    if n == 0:
        return "none of 0"
    lo, hi = wilson(k, n)
    return f"{k} of {n} ({100 * k / n:.1f}%, {100 * lo:.1f}–{100 * hi:.1f})"
