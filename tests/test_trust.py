"""What a report may be trusted for: the CV figures of the model actually trained, the run that means little,
the data it names, the intervals on its shares and the fragility stratified by confidence.

One tiny chain on 300 synthetic admissions whose CV picks an earlier epoch than the last (a learning rate
that makes the held-out loss bounce), and whose model is useless (it predicts one class): both what the
issue asked the report to say.
"""

import json
import math

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from pipeline.cli import main
from pipeline.data import prepare
from pipeline.susceptibility import trust
from pipeline.susceptibility.confidence import BANDS, band_of
from pipeline.susceptibility.shares import pct, wilson
from tests.support.runs import copy_run, script

pytestmark = pytest.mark.thirdparty  # the floors job runs these (tests/test_floors.py)

BOUNCING = ["--executor", "debug", "--seed", "5", "cv.folds=3", "cv.epochs=6", "model.hidden=16", "model.fc=16",
            "model.lr=0.3", "model.optimizer=adam", "attack.max_iter=20", "attack.batch_size=16",
            "attack.chunk_samples=8", "attack.scan_points=1", "attack.max_edits=1", "attack.lam=0.01",
            "attack.lr=0.1"]


@pytest.fixture(scope="module")
def bouncing_run(small_run, tmp_path_factory):
    """small_run through cv, train, attack and analyze with a learning rate too large to settle."""
    run = copy_run(small_run, tmp_path_factory.mktemp("bouncing"))
    for stage in ("cv", "train", "attack", "analyze"):
        assert main([stage, "--run-dir", str(run), *BOUNCING]) == 0, stage
    return run


def test_wilson_and_hanley_mcneil_by_hand():
    lo, hi = wilson(0, 10)
    assert lo == 0 and hi == pytest.approx(1.959964 ** 2 / (10 + 1.959964 ** 2))  # the k = 0 bound in closed form
    lo, hi = wilson(5, 10)
    assert (lo + hi) / 2 == pytest.approx(0.5) and hi - lo == pytest.approx(2 * 0.2634, abs=1e-3)
    # AUROC 0.5 of 10 + 10: Q1 = Q2 = 1/3, var = (0.25 + 2·9·(1/3 − 1/4)) / 100 = 0.0175
    lo, hi = trust.auroc_interval(0.5, 10, 10)
    assert (lo, hi) == pytest.approx((0.5 - 1.959964 * math.sqrt(0.0175), 0.5 + 1.959964 * math.sqrt(0.0175)))
    assert all(v != v for v in trust.auroc_interval(0.7, 0, 10))  # one class: no interval
    assert pct(0.25, 40) == "25.0% (14.2–40.2)" and pct(float("nan"), 3) == "–" and pct(0.5, 0) == "–"


def test_the_report_gives_the_cv_figures_of_the_chosen_epoch(bouncing_run):
    summary = json.loads((bouncing_run / "cv" / "summary.json").read_text())
    chosen, last = summary["best_epoch"], summary["learning_curve"]["last_epoch"]
    assert chosen < last  # the premise: the final model is trained for fewer epochs than CV ran
    assert f"{summary['best_epoch_mean_auroc']:.3f}" != f"{summary['mean']['auroc']:.3f}"  # the two differ
    assert summary["chosen_epoch"]["mean"]["auroc"] == pytest.approx(summary["best_epoch_mean_auroc"])
    report = (bouncing_run / "report.md").read_text()
    row = next(line for line in report.splitlines() if line.startswith("| auroc |"))
    assert row.split("|")[2].strip().startswith(f"{summary['best_epoch_mean_auroc']:.3f} ± ")
    assert f"CV figures at epoch {chosen} of {last}" in report
    model = json.loads((bouncing_run / "model" / "model.json").read_text())
    assert model["epochs"] == chosen
    compare = script("compare_models")  # the runs side by side show the same figure
    assert compare.row(bouncing_run, 3)["cv_auroc"] == pytest.approx(summary["best_epoch_mean_auroc"])


def test_a_useless_model_says_so_at_the_top(bouncing_run):
    lines = (bouncing_run / "report.md").read_text().splitlines()
    assert lines[0].startswith("# ") and lines[4].startswith("> **This run means little.**")
    top = "\n".join(lines[:16]).lower()
    assert "not clearly better than chance" in top and "too few successful examples" in top
    oracle = xr.open_zarr(bouncing_run / "dataset.zarr").attrs["synthetic"]["oracle_auroc"]  # prepare's record
    assert 0.8 < oracle < 0.9 and "**synthetic**" in top and f"auroc {oracle:.3f} (the oracle auroc)" in top
    rows = (bouncing_run / "tables" / "susceptibility_0to1.md").read_text().splitlines()[2:]
    assert rows and all(r.split("|")[-2].strip() == "" for r in rows)  # synthetic: no published figure beside it


def test_confidence_bands_use_the_models_own_test_predictions(bouncing_run):
    targets = pd.read_csv(bouncing_run / "tables" / "confidence_targets.csv")
    test = pd.read_csv(bouncing_run / "model" / "test_predictions.csv").set_index("sample")
    assert len(targets) and np.allclose(targets.probability, test.prob.loc[targets.dataset_index], atol=1e-5)
    assert (targets.band == band_of(targets.probability.to_numpy())).all()
    bands = pd.read_csv(bouncing_run / "tables" / "confidence.csv")
    assert len(bands) == 2 * (len(BANDS) - 1)
    for d, mine in targets.groupby("direction"):
        assert bands[bands.direction == d].targets.sum() == len(mine)
        assert bands[bands.direction == d].edits_le_1.sum() == int((mine.edits <= 1).sum())


def test_the_data_line_names_synthetic_demo_and_meds(tmp_path, demo_run):
    demo = xr.open_zarr(demo_run / "dataset.zarr")
    named = trust.data_identity(demo_run, dict(demo.attrs), demo.sizes["sample"])
    assert named.kind == "mimic3" and "too few" in named.text and not named.published_comparable
    assert demo.attrs["synthetic"] == {}  # prepare recorded: real tables
    big = trust.data_identity(tmp_path, {"source": "mimic3", "mimic_dir": "/data/mimic-iii"}, 30000)
    assert big.kind == "mimic3" and big.published_comparable
    meds = trust.data_identity(tmp_path, {"source": "meds", "mimic_dir": "/data/meds",
                                          "cohort_config": {"feature_map": "mimic-iv"}}, 30000)
    assert meds.kind == "meds" and "`mimic-iv`" in meds.text and not meds.published_comparable


@pytest.mark.parametrize("planted", ['{"oracle_auroc": "import os"}', '{"oracle_auroc": NaN}', "[1, 2]",
                                     '{"oracle_auroc": true}', '{"oracle_auroc": 7}', "not json"])
def test_a_planted_synth_json_is_read_as_a_number_or_not_at_all(tmp_path, planted):
    """A store prepared before prepare recorded the origin: the report looks for raw/synth.json."""
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "synth.json").write_text(planted)
    named = trust.data_identity(tmp_path, {"source": "mimic3", "mimic_dir": "raw"}, 3000)
    assert named.kind == "synthetic" and "AUROC unknown" in named.text
    assert prepare.synthetic_origin(tmp_path / "raw", "mimic3") == {"oracle_auroc": None}
