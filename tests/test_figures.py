"""Every figure, drawn from a real (tiny) record-space run: the report's figures (analyze), the model's
(pipeline/figures.py), and the analysis scripts' with one run and with several. Each is a decodable PNG
of a sensible size with something drawn on it; where a figure encodes a choice (a colour scale per
panel, the attack's budget, the edited values boxed) the figure object is checked for it."""

import shutil
import struct

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from matplotlib.patches import Rectangle

from pipeline import figures as model_figures
from pipeline.cli import main
from pipeline.susceptibility import figures
from tests.support.chains import ATTACK, FIGURES
from tests.support.runs import copy_trained, script

pytestmark = pytest.mark.thirdparty  # the floors job runs these (tests/test_floors.py): matplotlib's calls

PNG = b"\x89PNG\r\n\x1a\n"


def assert_png(path, min_px: int = 300, max_px: int = 6000) -> None:
    """A PNG that decodes, of a width and height a page can show, that is not one flat colour."""
    head = path.read_bytes()[:24]
    assert head[:8] == PNG, f"{path.name}: not a PNG"
    width, height = struct.unpack(">II", head[16:24])  # the IHDR chunk
    assert min_px <= width <= max_px and min_px <= height <= max_px, f"{path.name}: {width} × {height} px"
    pixels = matplotlib.image.imread(path)
    assert pixels.shape[:2] == (height, width)
    assert pixels[..., :3].std() > 0.02, f"{path.name}: nothing drawn"


@pytest.fixture(scope="module")
def run(trained_run, tmp_path_factory):
    """trained_run attacked in record space (the test set's targets, the tests' small attack), its entry
    errors searched greedily, and analyzed."""
    run = copy_trained(trained_run, tmp_path_factory.mktemp("figures"))
    assert main(["attack", "--run-dir", str(run), "--executor", "debug", *ATTACK]) == 0
    assert main(["errors", "--run-dir", str(run), "--executor", "debug", "--seed", "5", "errors.beam=1",
                 "errors.max_errors=2"]) == 0
    assert main(["analyze", "--run-dir", str(run), "--executor", "debug", "--seed", "5"]) == 0
    return run


@pytest.fixture(scope="module")
def runs(run, tmp_path_factory):
    """Three runs to compare: the run and two copies under other (one long) names."""
    where = tmp_path_factory.mktemp("several")
    copies = [where / "gru-with-a-rather-long-run-name", where / "tcn"]
    for copy in copies:
        shutil.copytree(run, copy, ignore=shutil.ignore_patterns("raw", "jobs", "*.journal"))
    return [run, *copies]


def test_every_report_figure_is_drawn_and_named_in_the_report(run):
    drawn = {p.name for p in (run / "figures").glob("*.png")}
    assert drawn >= FIGURES - {"cv_roc_pr.png"}  # trained_run has no cross-validated folds
    report = (run / "report.md").read_text()
    for name in drawn:
        assert_png(run / "figures" / name)
        assert f"(figures/{name})" in report


def test_kinds_of_another_scale_get_a_colour_scale_each(run, tmp_path):
    sus = xr.open_zarr(run / "susceptibility.zarr").load()
    panels = sus.edit_gpp.sizes["direction"] * sus.edit_gpp.sizes["kind"]
    fig = figures.score_heatmaps(sus.edit_gpp, sus.n, tmp_path / "own.png", "edits", "share", per_panel=True)
    images = [ax.images[0] for ax in fig.axes if ax.images]
    assert len(images) == panels
    assert len(fig.axes) == 2 * panels  # and a colourbar each
    for image in images:  # each scale from 0 to its own panel's largest share
        data = np.asarray(image.get_array(), float)
        top = np.nanmax(data) if np.nanmax(data) > 0 else 1.0
        assert image.get_clim() == pytest.approx((0, top))
    tops = {round(image.get_clim()[1], 6) for image in images}
    assert len(tops) > 1, "the panels' data differ, their scales must too"
    assert "each panel its own colour scale" in fig._suptitle.get_text()
    assert_png(tmp_path / "own.png")
    shared = figures.score_heatmaps(sus.edit_gpp, sus.n, tmp_path / "shared.png", "edits", "share")
    assert {image.get_clim() for ax in shared.axes for image in ax.images} == {(0, float(sus.edit_gpp.max()))}
    assert len(shared.axes) == panels + 1  # one colourbar for all


def test_the_iteration_figure_names_what_it_plots_and_marks_the_budget(run, tmp_path):
    attack = xr.open_zarr(run / "attack.zarr").load()
    iterated = ["first", "l1_best"]  # record space: best comes from the searches, not from an iteration
    direction = xr.where(attack.pred == 0, "0to1", "1to0")
    iteration = attack.iteration.sel(kind=iterated)
    iteration = iteration.where(iteration >= 0)  # as analyze reads it: NaN, none
    fig = figures.iteration_cdf(iteration, attack.found.sel(kind=iterated), direction, 30, tmp_path / "it.png")
    (ax,) = fig.axes
    assert ax.get_title() == "when the L1 attack found its first and l1_best examples"
    assert any(list(line.get_xdata()) == [30, 30] for line in ax.lines), "max_iter is marked"
    labels = ax.get_legend_handles_labels()[1]
    assert "max_iter = 30 (the budget)" in labels and "last 10% of the budget" in labels
    late = iteration.sel(kind="l1_best").values[attack.found.sel(kind="l1_best").values & (attack.pred == 0).values]
    share = f"{100 * np.mean(late >= 27):.0f}% found at iteration ≥ 27"
    assert any(label.startswith("0→1, l1_best") and label.endswith(share) for label in labels), labels
    assert_png(tmp_path / "it.png")


def test_the_model_figures(tmp_path):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"y": rng.integers(0, 2, 200)})
    frame["prob"] = np.clip(0.3 * frame.y + rng.random(200) * 0.7, 0, 1)
    figures.cv_curves([frame.iloc[:100], frame.iloc[100:]], frame, tmp_path / "cv.png")
    history = pd.DataFrame({"epoch": range(1, 6), "train_loss": np.linspace(0.7, 0.4, 5),
                            "loss": np.linspace(0.7, 0.5, 5), "auroc": np.linspace(0.6, 0.8, 5),
                            "auprc": np.linspace(0.2, 0.4, 5)})
    model_figures.learning_curve(history, tmp_path / "curve.png", "fold 0")
    model_figures.training_loss([0.7, 0.6, 0.5], tmp_path / "loss.png", "final model")
    for name in ("cv.png", "curve.png", "loss.png"):
        assert_png(tmp_path / name)


@pytest.mark.parametrize("several", [False, True], ids=["one run", "three runs"])
def test_compare_models_is_readable_with_one_run_and_with_several(run, runs, several, tmp_path, capsys):
    chosen = runs if several else [run]
    compare = script("compare_models")
    assert compare.main([*map(str, chosen), "--out", str(tmp_path / "models.png")]) == 0
    assert_png(tmp_path / "models.png")
    out = capsys.readouterr().out
    assert out.split("targets common to every run")[0].count("| lstm |") == len(chosen)  # the first table's rows
    if several:  # copies: the same targets, so every one is common, and each run's shares are the first's
        common = compare.common_targets(chosen)
        assert f"On the {len(pd.read_csv(run / 'tables' / 'confidence_targets.csv'))} targets common" in out
        per_run = [part.drop(columns=["run"]).reset_index(drop=True) for _, part in common.groupby("run", sort=False)]
        for other in per_run[1:]:
            pd.testing.assert_frame_equal(other, per_run[0])
        assert_png(tmp_path / "models_bands.png")  # the bands as a figure, beside --out
        bands = compare.bands_figure(common, tmp_path / "bands.png")
        held = [bar.get_height() for bar in bands.axes[0].patches]  # run by run, a bar per band
        assert len(held) == 4 * len(chosen) and sum(held[:4]) == int(common.targets[common.band == "all"].iloc[0])
        assert held[:4] == held[4:8]  # copies: the same targets in the same bands
    fig = compare.figure(pd.DataFrame([compare.row(r, 3) for r in chosen]), tmp_path / "again.png")
    fig.canvas.draw()
    titles = [ax.title.get_window_extent() for ax in fig.axes]
    for i, a in enumerate(titles):  # no title runs into another or off the figure
        assert fig.bbox.x0 <= a.x0 and a.x1 <= fig.bbox.x1
        assert not any(a.overlaps(b) for b in titles[i + 1:])
    auroc = fig.axes[0]
    assert auroc.get_ylim()[0] == 0 and any(list(line.get_ydata()) == [0.5, 0.5] for line in auroc.lines)
    table = pd.DataFrame([compare.row(r, 3) for r in chosen])
    test = table.test_auroc.tolist()
    assert [bar.get_height() for bar in auroc.patches][len(chosen):] == pytest.approx(test)  # from 0: all shown
    # every bar says its value; a run without it (no cv stage here, no third entry error) says "–"
    assert [t.get_text() for t in auroc.texts] == ["–"] * len(chosen) + [f"{v:.2f}" for v in test]
    assert [t.get_text() for t in fig.axes[2].texts][-len(chosen):] == ["–"] * len(chosen)


def test_compare_runs_names_every_feature_once_without_overlap(run, runs, tmp_path, capsys):
    compare = script("compare_runs")
    assert compare.main([str(run), str(runs[1]), "--out", str(tmp_path / "runs.png")]) == 0
    assert "direction 0→1: Spearman rank correlation 1.000" in capsys.readouterr().out
    assert_png(tmp_path / "runs.png")
    tables = compare.compare(compare.open_scores(run), compare.open_scores(runs[1]), "best", "s_j")
    fig = compare.figure(tables, (run.name, runs[1].name), "best", "s_j", tmp_path / "again.png")
    fig.canvas.draw()
    for ax in fig.axes:
        labels = [t for t in ax.get_yticklabels() if t.get_text()]
        assert len(labels) == 19
        boxes = [t.get_window_extent() for t in labels]
        assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


def test_patient_heatmap_lists_and_boxes_the_edits_not_the_cells_they_reach(run, tmp_path, capsys):
    heatmap = script("patient_heatmap")
    attack, data = heatmap.open_run(run)
    target = int(np.flatnonzero(attack.found.sel(kind="best").values)[0])
    out = tmp_path / "patient.png"
    assert heatmap.main([str(run), "--target", str(target), "--top", "1000", "--out", str(out)]) == 0
    assert_png(out)
    edit = attack["edit"].isel(sample=target).sel(kind="best").transpose("time", "feature").values
    hours, features = np.nonzero(edit)
    assert hours.size
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in lines[2:-1]]
    assert sorted((r[0], int(r[1])) for r in rows) == sorted(
        (str(data.feature.values[f]), int(h)) for h, f in zip(hours, features, strict=True))
    edited = heatmap.edits(attack, data, target, "best")
    reached = int((attack.perturbation.isel(sample=target).sel(kind="best").values != 0).sum())
    assert reached >= len(edited)
    fig = heatmap.figure(heatmap.changes(attack, data, target, "best"), edited, data, "t", tmp_path / "again.png")
    boxes = [p for p in fig.axes[0].patches if isinstance(p, Rectangle)]
    row = {str(f): j for j, f in enumerate(data.feature.values)}
    assert sorted((b.get_x() + 0.5, b.get_y() + 0.5) for b in boxes) == sorted(
        (float(h), float(row[str(data.feature.values[f])])) for h, f in zip(hours, features, strict=True))
    assert f"reaching {reached} input cells" in fig.axes[0].get_title()
