"""Synthetic MIMIC-III v1.4: the seven tables the pipeline reads, drawn from a known mortality model.

The real MIMIC-III needs credentialed access, so the pipeline's default data come from here (docs/dataset.md,
"Synthetic MIMIC-III"). The model, in short:

* every admission has a latent severity and deterioration; every feature k a latent trajectory
  z_k(t) = base_k + drift_k · clip(t / 48 h, 0, 1) in standard units, t in hours from the ICU intime;
* observed values = clinical transform of z + measurement noise, charted at realistic times with the
  CareVue or MetaVision item ids of the stay's DBSOURCE (vitals ~hourly, labs every 4–24 h, blood gases
  sparse), mixed with non-feature "noise" items;
* true risk = sigmoid(intercept + Σ_k weight_k · g_k(z_k over the first 48 h)), the label is drawn from
  it, and deaths end the stays (most after the first two days);
* a share of admissions is built to trip each cohort rule (``SCENARIOS``) and a share of event rows to
  trip each event rule (error rows, empty VALUENUM, out-of-range values, empty HADM_ID, …).

Everything is vectorized; events are generated and written in chunks of admissions, so memory stays flat
and the row count scales with the single knob ``admissions`` (~1,270 CHARTEVENTS and ~500 LABEVENTS rows per
admission; ``noise_fraction`` sets the share of non-feature rows). Same seed → byte-identical files.

The modules: :mod:`.units` (units, codes, time helpers), :mod:`.physiology` (the mortality model),
:mod:`.items` (item dictionaries, which item charts what), :mod:`.admissions` (admissions, ICU stays,
subjects), :mod:`.events` (CHARTEVENTS, LABEVENTS), :mod:`.tables` (the small tables), :mod:`.writing`
(gzip CSV) and :mod:`.stage` (:func:`generate` and the stage :func:`synth`).
"""

from pipeline.data.synth.admissions import SCENARIOS
from pipeline.data.synth.physiology import PHYSIOLOGY, true_risk
from pipeline.data.synth.stage import NOISE_FRACTION, generate, synth

__all__ = ["NOISE_FRACTION", "PHYSIOLOGY", "SCENARIOS", "generate", "synth", "true_risk"]
