"""The stage commands the tests share: the attack's small settings, the tiny whole chain and what a complete
run holds, a stage as a subprocess."""

import json
import sys

import xarray as xr

from pipeline.cli import main
from pipeline.infra.stages import CHAIN
from tests.support.runs import FEWEST_QUICK

# the plumbing (shards, resuming, markers, tuning's config) does not depend on how many targets there are: the
# test set's (about 35 in batches of 8) and one edit at most (tests/test_fewest_edits.py checks the searches)
ATTACK = ["--seed", "5", "cv.folds=3", "attack.targets=test", "attack.max_iter=30", "attack.batch_size=8",
          "attack.chunk_samples=8", "attack.lam=0.001", "attack.lr=0.1", *FEWEST_QUICK, "attack.max_edits=1"]


def run_attack(run, *extra):
    assert main(["attack", "--run-dir", str(run), *ATTACK, *extra]) == 0
    return xr.open_zarr(run / "attack.zarr", consolidated=False)


TINY_CHAIN = [
    "tune-model.trials=2", "tune-model.max_epochs=2", "tune-model.epochs_per_report=1", "tune-model.max_hidden=32",
    "cv.folds=2", "cv.epochs=2", "train.epochs=3",
    "tune-attack.trials=2", "tune-attack.targets=8",
    "attack.max_iter=20", "attack.batch_size=16", "attack.chunk_samples=8", *FEWEST_QUICK,
    "errors.max_errors=2", "errors.beam=1",  # greedy, two errors: a third of the errors stage's time
    "analyze.weak_run=warn",  # a tiny model's report says it means little; these tests check the plumbing
]
FIGURES = {"gpp_heatmap.png", "s_heatmap.png", "gap_heatmap.png", "s_j_ranking.png", "norms.png",
           "iteration_cdf.png", "cv_roc_pr.png", "edit_gpp_heatmap.png",  # record space (the default):
           "one_edit_heatmap.png", "one_edit_size_heatmap.png",  # the edits and the one-edit map
           "one_edit_undetected_heatmap.png",  # the one-edit map no check notices (docs/methods.md §11)
           "errors_heatmap.png",  # the errors stage
           "confidence.png"}  # the fragility against the model's confidence


def assert_complete(run):
    assert {p.stem for p in (run / ".stages").glob("*.json")} >= set(CHAIN) - {"synth"}
    assert {p.name for p in (run / "figures").glob("*.png")} == FIGURES
    report = (run / "report.md").read_text()
    for name in FIGURES:
        assert f"(figures/{name})" in report
    for section in ("## Summary", "## Data", "## Model", "## Attack", "## Plausible data-entry errors",
                    "## Susceptibility", "## Would the checks catch it?", "## What the fragility depends on"):
        assert section in report
    sus = xr.open_zarr(run / "susceptibility.zarr")
    assert sus.s.dims == ("direction", "kind", "time", "feature")
    for row in json.loads((run / "tables" / "summary.json").read_text()):
        assert row["realizable"] == row["successes"], row  # every example re-derives from its edited record
    assert int(sus.targets.sum()) == xr.open_zarr(run / "attack.zarr").sizes["sample"]
    return sus


def pipeline_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "pipeline", *args]
