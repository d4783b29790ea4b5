"""The mortality model: each feature's physiology, the latent trajectories and the true risk.

Every admission has a latent severity and deterioration; every feature k a latent trajectory
z_k(t) = base_k + drift_k · clip(t / 48 h, 0, 1) in standard units (:class:`Latents`,
:func:`draw_latents`). :data:`PHYSIOLOGY` says how each feature's latent maps to clinical units, how
noisy its measurements are and how much it weighs in the true risk (:func:`true_risk`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.data.synth.units import WINDOW_H, K
from pipeline.features import FEATURES


@dataclass(frozen=True)
class Physiology:
    """One feature: latent → clinical units, measurement noise, and its part in the true risk."""

    loc: float  # population centre (of log(value) when `log`)
    scale: float  # clinical units (log units) per latent unit
    noise: float  # measurement noise sd, same units as loc
    log: bool
    clip: tuple[float, float]  # physiological limits, inside the plausible range of features.py
    normal: tuple[float, float]  # lab reference range: outside it FLAG = "abnormal"
    direction: int  # +1: high is bad, -1: low is bad, 0: both extremes are bad
    severity: float  # loading of the baseline on the admission's severity
    drift: float  # loading of the 48 h drift on its deterioration
    weight: float  # weight in the true risk
    junk: tuple[float, float, float]  # out-of-range values that charting errors produce


P = Physiology
PHYSIOLOGY: dict[str, Physiology] = {
    # name: P(loc, scale, noise, log, clip, normal, direction, severity, drift, weight, junk)
    "potassium": P(4.1, 0.5, 0.2, False, (1.5, 9.0), (3.3, 5.1), 0, 0.25, 0.2, 0.15, (0, -1, 45)),
    "calcium": P(1.12, 0.09, 0.03, False, (0.5, 2.0), (1.12, 1.32), -1, 0.3, 0.2, 0.15, (0, -0.5, 11.2)),
    "ph": P(7.38, 0.07, 0.02, False, (6.8, 7.7), (7.35, 7.45), -1, 0.5, 0.4, 0.35, (6, 5.1, 73.4)),
    "pco2": P(np.log(41), 0.2, 0.06, True, (15, 130), (35, 45), 1, 0.2, 0.2, 0.1, (0, -2, 250)),
    "lactate": P(np.log(1.8), 0.55, 0.12, True, (0.3, 25), (0.5, 2.0), 1, 0.6, 0.5, 0.5, (0, -1, 99)),
    "albumin": P(3.0, 0.55, 0.1, False, (1.0, 5.5), (3.4, 5.4), -1, 0.4, 0.2, 0.25, (0, -0.3, 31)),
    "bun": P(np.log(24), 0.6, 0.06, True, (2, 200), (6, 20), 1, 0.5, 0.3, 0.3, (0, -1, 999)),
    "creatinine": P(np.log(1.1), 0.65, 0.06, True, (0.2, 15), (0.4, 1.1), 1, 0.45, 0.3, 0.2, (0, -0.1, 151)),
    "sodium": P(139, 4.0, 1.0, False, (110, 170), (133, 145), 0, 0.25, 0.2, 0.15, (0, -1, 1399)),
    "bicarbonate": P(24, 4.2, 1.0, False, (5, 50), (22, 32), -1, 0.5, 0.4, 0.25, (0, -1, 99999)),
    "platelet": P(np.log(190), 0.55, 0.06, True, (5, 1200), (150, 440), -1, 0.35, 0.3, 0.2, (0, -1, 99999)),
    "glucose": P(np.log(125), 0.3, 0.12, True, (30, 900), (70, 105), 1, 0.25, 0.2, 0.1, (0, -5, 99999)),
    "magnesium": P(2.0, 0.28, 0.08, False, (0.8, 5.0), (1.6, 2.6), 1, 0.1, 0.1, 0.05, (0, -0.2, 21)),
    "heartrate": P(87, 14, 5, False, (30, 220), (60, 100), 1, 0.5, 0.5, 0.3, (0, -1, 999)),
    "sysbp": P(120, 17, 7, False, (50, 240), (90, 140), -1, 0.5, 0.5, 0.35, (0, -5, 999)),
    "diasbp": P(60, 10, 5, False, (20, 140), (50, 90), -1, 0.45, 0.4, 0.15, (0, -5, 999)),
    "tempc": P(36.9, 0.55, 0.2, False, (32, 42), (36, 38), 0, 0.3, 0.3, 0.2, (0, 98.6, 5.2)),
    "resprate": P(19, 4.5, 2.5, False, (4, 60), (12, 20), 1, 0.45, 0.4, 0.3, (0, -2, 999)),
    "spo2": P(97.3, 1.8, 1.0, False, (60, 100), (95, 100), -1, 0.4, 0.4, 0.3, (0, -1, 101)),
}
del P
assert tuple(PHYSIOLOGY) == tuple(f.name for f in FEATURES)
FAHRENHEIT_JUNK = (0.0, 37.2, 200.0)  # °F items: 0, a °C value in the °F item, nonsense


def _physiology(attr: str) -> np.ndarray:
    return np.array([getattr(PHYSIOLOGY[f.name], attr) for f in FEATURES])


LOC, SCALE, NOISE, IS_LOG = _physiology("loc"), _physiology("scale"), _physiology("noise"), _physiology("log")
CLIP, NORMAL = _physiology("clip"), _physiology("normal")
DECIMALS = np.array([f.decimals for f in FEATURES])  # digits as typed: features.py says it once
DIRECTION, SEVERITY, DRIFT = _physiology("direction"), _physiology("severity"), _physiology("drift")
WEIGHT, JUNK = _physiology("weight"), _physiology("junk")
RISK_INTERCEPT = -3.0  # tuned for ~12 % mortality
RISK_SCALE = 0.65  # tuned for an oracle AUROC of ~0.86


@dataclass
class Latents:
    """Per admission: severity, deterioration and each feature's trajectory z = base + drift · τ."""

    severity: np.ndarray  # (n,)
    base: np.ndarray  # (n, K): z at intime (and before)
    drift: np.ndarray  # (n, K): change of z over the first 48 h (constant after)

    def z(self, adm: np.ndarray, feature: np.ndarray, t: np.ndarray) -> np.ndarray:
        return self.base[adm, feature] + self.drift[adm, feature] * np.clip(t / WINDOW_H, 0.0, 1.0)


def draw_latents(rng: np.random.Generator, n: int) -> Latents:
    severity = rng.standard_normal(n)
    deterioration = 0.5 * severity + np.sqrt(0.75) * rng.standard_normal(n)  # the severe tend to worsen
    # features with both extremes bad are pushed up or down, at random, by severity
    sign = np.where(DIRECTION == 0, rng.choice([-1.0, 1.0], size=(n, K)), DIRECTION)
    base = sign * SEVERITY * severity[:, None] + np.sqrt(1 - SEVERITY**2) * rng.standard_normal((n, K))
    drift = sign * DRIFT * deterioration[:, None] + 0.35 * rng.standard_normal((n, K))
    return Latents(severity, base, drift)


def true_risk(latents: Latents) -> np.ndarray:
    """In-hospital mortality risk from the latent trajectories of the first 48 h.

    h = ½ (mean of z over 0–48 h) + ½ z(48 h) = base + ¾ drift; monotone features enter as ±h, features
    with both extremes bad as h² − 1.
    """
    h = latents.base + 0.75 * latents.drift
    g = np.where(DIRECTION == 0, h**2 - 1, DIRECTION * h)
    return 1 / (1 + np.exp(-(RISK_INTERCEPT + RISK_SCALE * (g @ WEIGHT))))
