"""What a report describes and whether it means anything: its data, its model, and the sanity gates.

A full report with rankings and examples is written for any run, including one whose model is no better
than chance or whose ranking rests on four examples. The gates below say so at the top of the report, and
`run` ends with exit 3 (config `analyze.weak_run = "warn"` keeps exit 0). Every figure here is read from the
run directory's own records (test predictions, attack.zarr, synth.json): read as numbers, never as code.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.infra import layout
from pipeline.infra.rundir import RunDir
from pipeline.model.archs import ARCHS
from pipeline.susceptibility.scores import label

Z95 = 1.959963984540054
SMALL_COHORT = 500  # fewer samples: too few to train a model worth attacking (the open demo has 136 stays)


@dataclass(frozen=True)
class Data:
    kind: str  # "synthetic", "mimic3", "meds"
    text: str  # the report's data line
    published_comparable: bool  # whether Sun et al.'s real-MIMIC-III ranking may stand beside this one


def data_identity(run_dir: Path, attrs: dict, samples: int) -> Data:
    """What the dataset is, from dataset.zarr's attributes: synthetic (with the generator's oracle AUROC, which
    `prepare` records), MIMIC-III tables, or a MEDS dataset (and its feature map)."""
    source = str(attrs.get("source", "mimic3"))
    origin = attrs.get("synthetic")
    if origin is None:  # a store prepared before the origin was recorded: look for the generator's summary
        folder = Path(str(attrs.get("mimic_dir", "")))
        folder = folder if folder.is_absolute() else run_dir / folder
        path = next((p for p in (folder / "synth.json", folder.parent / "synth.json") if p.is_file()), None)
        origin = {"oracle_auroc": _oracle(path)} if path else {}
    small = f"; only {samples} samples: too few to train a model worth attacking" if samples < SMALL_COHORT else ""
    if isinstance(origin, dict) and origin:
        oracle = origin.get("oracle_auroc")
        oracle = f"{oracle:.3f}" if _is_share(oracle) else "unknown"
        via = " written as MEDS and read back" if source == "meds" else ""
        return Data("synthetic", f"**synthetic** MIMIC-III-shaped data{via} (the project's generator): the true "
                    f"risk is known, and a model that knew it would reach AUROC {oracle} (the oracle AUROC). Which "
                    "features matter is set by the generator's weights, not by physiology: the rankings below say "
                    f"nothing about patients{small}", False)
    if source == "meds":
        cohort = attrs.get("cohort_config", {})
        fmap = cohort.get("feature_map", "?") if isinstance(cohort, dict) else "?"
        return Data("meds", f"a MEDS dataset (`{attrs.get('mimic_dir', '?')}`, feature map `{fmap}`); "
                    f"{lab_time_text(attrs)}{small}", False)
    return Data("mimic3", f"MIMIC-III tables (`{attrs.get('mimic_dir', '?')}`){small}", not small)


def lab_time_text(attrs: dict) -> str:
    """Where a MEDS dataset's labs sit in time (prepare.lab_time), with the draw pairing's counts."""
    cohort = attrs.get("cohort_config", {})
    if isinstance(cohort, dict) and cohort.get("lab_time") == "draw":
        lab = attrs.get("event_counts", {}).get("LABEVENTS", {})
        found = lab.get("draw_time", {}) if isinstance(lab, dict) else {}
        said = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in found.items()) if isinstance(found, dict) else ""
        return f"each lab result at its specimen's draw (results paired: {said or 'not counted'})"
    return ("each lab at the time the dataset gives it — the MIMIC-IV ETL from 0.1.0 on writes a result at its "
            "storetime, typically up to an hour after the draw the CSV tables give (prepare.lab_time = \"draw\" "
            "pairs each result with its draw)")


def _is_share(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 1


def _oracle(path: Path) -> float | None:
    try:
        value = json.loads(path.read_text()).get("oracle_auroc")
    except (OSError, ValueError, AttributeError):
        return None
    return float(value) if _is_share(value) else None


def model_name(model: dict) -> str:
    """'LSTM', 'GRU', … or 'external model' — as the report's title names it."""
    if "external" in model:
        return "external model"
    params = model.get("params", {})
    arch, robust = params.get("arch", "lstm"), params.get("robust", "none")
    name = ARCHS[arch].label if arch in ARCHS else str(arch)
    return name if robust == "none" else f"{name}, {robust} training"


def auroc_interval(auroc: float, positives: int, negatives: int) -> tuple[float, float]:
    """The 95% interval of an AUROC by Hanley & McNeil's (1982) standard error."""
    if positives == 0 or negatives == 0 or auroc != auroc:
        return float("nan"), float("nan")
    q1, q2 = auroc / (2 - auroc), 2 * auroc * auroc / (1 + auroc)
    var = (auroc * (1 - auroc) + (positives - 1) * (q1 - auroc * auroc)
           + (negatives - 1) * (q2 - auroc * auroc)) / (positives * negatives)
    half = Z95 * math.sqrt(max(var, 0.0))
    return max(0.0, auroc - half), min(1.0, auroc + half)


def test_line(run_dir: RunDir) -> str:
    """'test AUROC 0.827 (95% interval 0.771–0.883; 61 deaths, 409 survivors)', or '' before `train`."""
    test, metrics = run_dir.model_dir / layout.TEST_PREDICTIONS, run_dir.test_metrics() or {}
    if not test.is_file() or "auroc" not in metrics:
        return ""
    import pandas as pd  # deferred, as in gates()

    y = pd.read_csv(test)["y"].to_numpy()
    auroc, positives, negatives = float(metrics["auroc"]), int((y == 1).sum()), int((y == 0).sum())
    lo, hi = auroc_interval(auroc, positives, negatives)
    return f"test AUROC {auroc:.3f} (95% interval {lo:.3f}–{hi:.3f}; {positives} deaths, {negatives} survivors)"


def gates(run_dir: RunDir, successes: dict[str, int], min_targets: int) -> list[str]:
    """Why this run's report means little (empty: it passes): a model whose held-out AUROC is not clearly
    above 0.5 or that predicts one class only on the test set, or too few successful examples in every
    direction for a feature ranking (`successes`: per direction)."""
    out = []
    test = run_dir.model_dir / layout.TEST_PREDICTIONS
    metrics = run_dir.test_metrics() or {}
    if test.is_file():
        import pandas as pd  # deferred: the CLI imports this module to decide its exit code

        frame = pd.read_csv(test)
        y, prob = frame["y"].to_numpy(), frame["prob"].to_numpy(dtype=float)
        auroc = float(metrics.get("auroc", float("nan")))
        lo, hi = auroc_interval(auroc, int((y == 1).sum()), int((y == 0).sum()))
        if not lo > 0.5:
            out.append(f"the model is not clearly better than chance: test AUROC {auroc:.3f} (95% interval "
                       f"{lo:.3f}–{hi:.3f}, Hanley & McNeil) — its predictions, and so its \"flips\", mean nothing")
        positive = int(np.sum(prob >= 0.5))
        if positive in (0, len(prob)):
            out.append(f"the model predicts {'no death' if positive == 0 else 'death for every patient'} on the "
                       f"test set ({len(prob)} samples): it has only one class of targets to attack")
    if successes and max(successes.values()) < min_targets:
        shown = ", ".join(f"{label(d)} {n}" for d, n in successes.items())
        out.append(f"too few successful examples for a feature ranking ({shown}; analyze.min_targets = "
                   f"{min_targets}): the rankings and heatmaps are noise")
    return out


def successes_of(run_dir: RunDir) -> dict[str, int]:
    """Per direction, the targets with a best example (from attack.zarr; empty without one)."""
    if not (run_dir.path / layout.ATTACK).exists():
        return {}
    attack = run_dir.attack_store()
    found = attack.found.sel(kind="best").values
    pred = attack.pred.values
    return {"0to1": int((found & (pred == 0)).sum()), "1to0": int((found & (pred == 1)).sum())}


def banner(problems: list[str]) -> list[str]:
    """The report's first lines when a gate failed."""
    if not problems:
        return []
    return ["> **This run means little.** Read what follows as a test of the pipeline, not as a finding:", ">",
            *[f"> - {p[0].upper() + p[1:]}." for p in problems], ""]
