"""The searches for the flips no check catches (pipeline/attack/undetected.py, docs/methods.md §11): on hand-made
stays and models whose answer is known, the limits a run uses (derived, a laboratory's table, frozen with the
model) and the hostile copies of them a store or a user may hand over."""

import numpy as np
import pytest
import xarray as xr

from pipeline.attack.core import Margins
from pipeline.attack.fewest_edits import Example, Target, fewest_edits
from pipeline.attack.fewest_errors import fewest_errors
from pipeline.attack.one_edit import MIN_MARGIN
from pipeline.attack.undetected import PAD, undetected_many, unflagged_errors
from pipeline.checks import table
from pipeline.checks.limits import Limits, caught, derive
from pipeline.checks.source import limits_for, trained_run, training_records
from pipeline.cli import main
from pipeline.config import ERROR_KINDS, AttackParams, ChecksConfig
from pipeline.errors import InputError
from pipeline.features import NAMES
from pipeline.infra.rundir import RunDir
from pipeline.options import ConfigError
from pipeline.susceptibility.checks_report import limits_of
from tests.support.linear import Linear, OneCell

pytestmark = pytest.mark.thirdparty  # the floors job runs these (tests/test_floors.py)

T, F = 48, len(NAMES)
CELL = (10, 3)  # the one value the model weighs
# every feature recorded every hour at 0.5 and scaled by p5 = 0, p95 = 1: an edit moves only its own cell of x
STATS = {"p5": np.zeros(F), "median": np.full(F, 0.5), "p95": np.ones(F)}
VALUE = np.full((T, F), 0.5)
BOX = (np.full((T, F), -3.0, np.float32), np.full((T, F), 3.0, np.float32))
PARAMS = AttackParams(max_edits=3, edits_beam=4, scan_points=16)


def delta_limits(step: float) -> Limits:
    """No range limit; a change of more than `step` between consecutive recorded values of the cell's feature
    is flagged, any change of the others is not."""
    low, high = np.full(F, -np.inf), np.full(F, np.inf)
    dl, dh = np.full(F, -np.inf), np.full(F, np.inf)
    dl[CELL[1]], dh[CELL[1]] = -step, step
    return Limits(low, high, dl, dh)


def searched(limits: Limits):
    """The cell's weight 2 and the margin −0.8: only raising it by more than 0.4 flips (x from 0.5 to 0.9+).
    Raising it by 0.4 without a delta alarm at step 0.2 needs both neighbours raised by 0.2, and theirs by
    more than 0: five edits, more than the three searched."""
    w = np.full((T, F), 1e-4)
    w[CELL] = 2.0
    margins = Margins(Linear(w, margin0=-0.8), 4096)
    target = Target(VALUE.copy(), 0, STATS, *BOX)
    plain = fewest_edits(margins, target, PARAMS.max_edits, PARAMS.edits_beam, PARAMS.scan_points)
    [(scan, found)] = undetected_many(margins, [target], limits, [[]], PARAMS)
    return plain, scan, found, target


def test_a_flip_that_needs_a_jump_beyond_the_delta_limit_is_flippable_but_not_undetectably():
    (plain_scan, plain), scan, found, target = searched(delta_limits(0.2))
    assert plain is not None and plain.edits == 1 and plain.delta[CELL] == pytest.approx(0.4 + 1e-3 / 2, rel=1e-3)
    assert caught(VALUE[None], target.edited(plain.delta)[None], delta_limits(0.2))["delta"][0]  # a delta alarm
    assert plain_scan.flips[CELL]
    assert found is None and not scan.flips.any()  # no single value, and no three, flip it unnoticed
    assert np.nanmax(scan.best[CELL]) == pytest.approx(0.2 - PAD, abs=1e-6)  # it came as close as the limit lets


def test_a_flip_inside_the_delta_limits_is_found_with_its_smallest_edit():
    _, scan, found, target = searched(delta_limits(0.5))
    assert found is not None and found.edits == 1 and found.method == "scan" and found.margin > MIN_MARGIN
    assert found.delta[CELL] == pytest.approx(0.4 + MIN_MARGIN / 2, rel=1e-3)
    assert scan.flips[CELL] and scan.flips.sum() == 1
    assert not caught(VALUE[None], target.edited(found.delta)[None], delta_limits(0.5))["any"][0]


def test_a_stored_example_no_check_flags_counts_as_it_is():
    w = np.full((T, F), 1e-4)
    w[CELL] = 2.0
    stored = np.zeros((T, F), np.float32)
    stored[CELL] = 0.45
    target = Target(VALUE.copy(), 0, STATS, *BOX)
    [(_, found)] = undetected_many(Margins(Linear(w, margin0=-0.8), 4096), [target], delta_limits(0.5),
                                   [[Example(stored, 0.1, "best")]], AttackParams(max_edits=1, scan_points=16))
    assert found.edits == 1 and found.delta[CELL] < 0.45  # the scan's smaller edit ranks first


def test_the_entry_error_search_leaves_out_the_slips_a_delta_check_flags():
    """BUN recorded at 12 in hours 39–41; the model flips when hour 40 reads above 60 (scaled by 0…100): the
    ×10 slip to 120 does it, a change of 108 from either neighbour."""
    value, count = np.full((T, F), np.nan), np.zeros((T, F), int)
    bun = NAMES.index("bun")
    value[39:42, bun], count[39:42, bun] = 12.0, 1
    stats = {"p5": np.zeros(F), "median": np.full(F, 5.0), "p95": np.full(F, 100.0)}
    margins = Margins(OneCell(40, bun, 10.0, 0.6), 64)
    plain = fewest_errors(margins, value, count, 0, stats, list(ERROR_KINDS), 3, 2)
    assert plain.flipped and plain.errors[0]["erroneous"] == 120.0
    strict = Limits(np.full(F, -np.inf), np.full(F, np.inf), np.full(F, -50.0), np.full(F, 50.0))
    checked = fewest_errors(margins, value, count, 0, stats, list(ERROR_KINDS), 3, 2, unflagged_errors(strict))
    assert not checked.flipped
    loose = Limits(strict.low, strict.high, np.full(F, -200.0), np.full(F, 200.0))
    found = fewest_errors(margins, value, count, 0, stats, list(ERROR_KINDS), 3, 2, unflagged_errors(loose))
    assert found.flipped and found.errors[0]["erroneous"] == 120.0


def test_a_run_with_frozen_statistics_uses_the_trained_runs_limits(trained_run, tmp_path):
    run = tmp_path / "new"
    frozen = trained_run / "dataset.zarr"
    assert main(["synth", "--run-dir", str(run), "--admissions", "150", "--seed", "4"]) == 0
    assert main(["prepare", "--run-dir", str(run), "--seed", "4", f"prepare.stats_from={frozen}"]) == 0
    limits, provenance = limits_for(ChecksConfig(), RunDir(run))
    theirs = derive(training_records(RunDir(trained_run)), (0.001, 0.999), (0.005, 0.995))
    own = derive(xr.open_zarr(run / "dataset.zarr", consolidated=False)["value"].values, (0.001, 0.999),
                 (0.005, 0.995))
    for name in ("low", "high", "delta_low", "delta_high"):
        np.testing.assert_array_equal(getattr(limits, name), getattr(theirs, name))
    assert not np.array_equal(limits.delta_high, own.delta_high)  # not the new cohort's
    assert provenance["run"] == str(trained_run) and provenance["training_records"] == len(
        training_records(RunDir(trained_run)))


def test_frozen_statistics_from_a_store_outside_a_trained_run_is_one_clear_error(tmp_path):
    lone = tmp_path / "elsewhere" / "dataset.zarr"
    lone.mkdir(parents=True)
    with pytest.raises(ConfigError, match="not the dataset.zarr of a run directory with a split.json"):
        trained_run(str(lone))


LAB_TABLE = """
within_hours = 72
[sodium]
low = 120
high = 160
delta = 13
[creatinine]
delta_percent = 60
"""


def test_a_laboratory_table_sets_the_limits_it_names_and_no_others(tmp_path):
    path = tmp_path / "limits.toml"
    path.write_text(LAB_TABLE)
    limits = table.load(path)
    na, cr = NAMES.index("sodium"), NAMES.index("creatinine")
    assert (limits.low[na], limits.high[na], limits.delta_low[na], limits.delta_high[na]) == (120, 160, -13, 13)
    assert limits.percent[cr] == 60 and limits.within == 72
    assert np.isinf(limits.low[cr]) and np.isinf(limits.delta_high[cr]) and np.isinf(limits.percent[na])
    stay = np.full((1, T, F), np.nan)
    stay[0, [0, 10], cr] = [1.0, 1.5]  # +50%: passes; +61% would not
    assert not caught(stay, stay, limits)["any"][0]
    slipped = stay.copy()
    slipped[0, 10, cr] = 1.61
    assert caught(stay, slipped, limits)["delta"][0]


@pytest.mark.parametrize(("text", "message"), [
    ("[natrium]\nlow = 1", "[natrium] is no feature"),
    ("[sodium]\nlow = nan", "low = nan must be a finite number"),
    ("[sodium]\nlow = '120'", "must be a finite number"),
    ("[sodium]\nlow = 160\nhigh = 120", "are not low ≤ high"),
    ("[sodium]\ndelta = 13\ndelta_low = -5", "sets delta and delta_low/delta_high"),
    ("[sodium]\nlimit = 3", "limit is not a key"),
    ("within_hours = -1", "within_hours = -1 must be"),
    ("[sodium\n", "not a TOML file"),
    ("sodium = 3", "sodium must be a table"),
])
def test_a_bad_limits_table_is_one_error_naming_the_file_and_key(tmp_path, text, message):
    path = tmp_path / "limits.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        table.load(path)
    assert str(path) in str(e.value) and message in str(e.value)


def stored_limits() -> xr.Dataset:
    limits = Limits(np.zeros(F), np.ones(F), -np.ones(F), np.ones(F))
    return xr.Dataset({name: xr.Variable(*v) for name, v in table.variables(limits).items()})


@pytest.mark.parametrize(("damage", "message"), [
    (lambda ds: ds.assign(check_low=ds.check_low.where(ds.feature != 2)), "no NaN"),
    (lambda ds: ds.drop_vars("check_high"), "keeps only some"),
    (lambda ds: ds.assign(check_low=ds.check_low.astype(np.int64)), "not floating-point"),
    (lambda ds: ds.assign(check_delta_low=-ds.check_delta_low), "delta_low ≤ 0 ≤ delta_high"),
    (lambda ds: ds.isel(feature=slice(0, 5)), "one per feature"),
    (lambda ds: ds.assign(check_delta_low=ds.check_delta_low.assign_attrs(within_hours="soon")),
     "not a number of hours"),
])
def test_damaged_limits_in_a_store_are_refused(damage, message):
    ds = stored_limits().assign_coords(feature=np.arange(F))
    assert limits_of(ds, "attack.zarr") is not None
    with pytest.raises(InputError) as e:
        limits_of(damage(ds), "attack.zarr")
    assert "attack.zarr" in str(e.value) and message in str(e.value)


def test_a_bad_limits_table_stops_the_chain_before_anything_is_written(tmp_path, capsys):
    bad = tmp_path / "limits.toml"
    bad.write_text("[natrium]\nlow = 1\n")
    run = tmp_path / "run"
    assert main(["run", "--run-dir", str(run), f"checks.limits={bad}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(bad) in err[0] and "[natrium] is no feature" in err[0], err
    assert not run.exists()
