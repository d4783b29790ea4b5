"""Where a MEDS lab sits in time (`prepare.lab_time`, pipeline/data/meds_draws.py). The real demo with its labs
written as the MIMIC-IV ETL writes them now (the result at storetime, here an hour after the draw; the draw
a value-less event): at result time the record moves by an hour; at draw time it is the CSV tables' record
bit for bit, with the ambiguous pairings counted; the pairing rule case by case."""

import dataclasses

import numpy as np
import pytest

from pipeline.config import PrepareConfig
from pipeline.data.meds_draws import pair_draws
from pipeline.data.meds_export import write_meds
from pipeline.data.prepare import build_dataset
from pipeline.susceptibility.report import data_section
from tests.support.meds_tables import assert_one_line_nothing_written, prepare_meds, results_at_storetime

pytestmark = pytest.mark.thirdparty  # the meds package's DataSchema: the floors job runs these (tests/test_floors.py)

RECORD = ("x", "mask", "value", "count", "y", "hadm_id", "p5", "median", "p95")


@pytest.fixture(scope="module")
def demo(demo_dir, tmp_path_factory):
    where = tmp_path_factory.mktemp("lab-time")
    meds = write_meds(demo_dir, where / "meds", shard_subjects=40)
    return meds, results_at_storetime(meds, where / "stored", delay_minutes=60)


CFG = PrepareConfig(source="meds", require_chartevents_data=False)


def test_labs_at_draw_time_are_the_csv_record_and_at_result_time_an_hour_later(demo, tmp_path):
    charted, stored = demo
    before = build_dataset(charted, CFG, work_dir=tmp_path)  # labs at charttime, as the CSV tables
    at_draw = build_dataset(stored, dataclasses.replace(CFG, lab_time="draw"), work_dir=tmp_path)
    for name in RECORD:
        np.testing.assert_array_equal(at_draw[name].values, before[name].values, err_msg=name)
    counts = at_draw.attrs["event_counts"]["LABEVENTS"]["draw_time"]
    results = at_draw.attrs["event_counts"]["LABEVENTS"]["with_key"]
    assert counts["paired"] + counts["ambiguous"] == results and counts["no_draw"] == counts["unused_draws"] == 0
    # a second draw of an item within the hour before the first's result: paired by order, counted
    assert counts["ambiguous"] > 100, counts
    said = data_section(at_draw)  # the report's data section says where the labs sit and how they were paired
    assert f"- lab time: each lab result at its specimen's draw (results paired: {counts['paired']} paired, " \
           f"{counts['ambiguous']} ambiguous, 0 no draw, 0 unused draws)" in said
    at_result = build_dataset(stored, CFG, work_dir=tmp_path)
    assert at_result.attrs["event_counts"]["LABEVENTS"]["draw_time"] == {}
    assert any(line.startswith("- lab time: each lab at the time the dataset gives it") for line in
               data_section(at_result))
    same = np.isin(at_result.hadm_id.values, before.hadm_id.values)
    moved = at_result["count"].values[same] != before.sel(sample=np.isin(before.hadm_id, at_result.hadm_id))[
        "count"].values
    assert moved.sum() > 1000  # an hour later, labs fall in the next bin (and leave the window at hour 47)


def test_lab_time_draw_needs_a_map_with_draw_codes(demo, tmp_path, capsys):
    run = tmp_path / "run"
    assert prepare_meds(demo[1], run, "prepare.lab_time=draw", "prepare.feature_map=eicu") == 2
    assert_one_line_nothing_written(capsys, run, 'lab_time = "draw": the feature map eicu names no draw codes')
    bad = tmp_path / "map.toml"
    shipped = (__import__("pipeline.data.meds", fromlist=["MAPS"]).MAPS / "mimic-iv.toml").read_text()
    bad.write_text(shipped.replace("(?P<itemid>[0-9]+)(?://|$)'", "[0-9]+'", 1))
    assert prepare_meds(demo[1], run, "prepare.lab_time=draw", f"prepare.feature_map={bad}") == 2
    assert_one_line_nothing_written(capsys, run, "has no group (?P<itemid>…) naming the lab item")


def hours(*h):
    return np.datetime64("2100-01-01T00:00") + np.array([int(60 * x) for x in h]).astype("timedelta64[m]")


@pytest.mark.parametrize(("kinds", "times", "expected", "counts"), [
    ("DR", (0, 1), ["NaT", 0], (1, 0, 0, 0)),  # one draw, its result: certain
    ("DDRR", (0, 0.5, 1, 1.5), ["NaT", "NaT", 0, 0.5], (1, 1, 0, 0)),  # the second draw before the first result
    ("RDR", (0, 1, 2), ["NaT", "NaT", 1], (1, 0, 1, 0)),  # a result before any draw stays where it is
    ("DDR", (0, 1, 2), ["NaT", "NaT", 0], (0, 1, 0, 1)),  # a draw whose result was dropped: order decides
    ("RD", (0, 0), [0, "NaT"], (1, 0, 0, 0)),  # a draw and its result at the same time
])
def test_the_pairing_rule(kinds, times, expected, counts):
    order = np.arange(len(kinds))[::-1]  # the rule must not depend on the order the events come in
    is_draw = np.array([k == "D" for k in kinds])[order]
    drawn, found = pair_draws(np.ones(len(kinds), np.int64)[order], np.full(len(kinds), 50971)[order],
                              hours(*times)[order], is_draw)
    want = np.array([np.datetime64("NaT") if e == "NaT" else hours(e)[0] for e in expected])
    np.testing.assert_array_equal(drawn[np.argsort(order)], want.astype(drawn.dtype))
    assert tuple(found.values()) == counts


def test_draws_pair_within_their_admission_and_item():
    is_draw = np.array([True, False, False, True, False])
    drawn, found = pair_draws(np.array([1, 2, 1, 1, 1]), np.array([7, 7, 8, 7, 7]), hours(0, 1, 1, 2, 3), is_draw)
    assert np.isnat(drawn[[0, 1, 2, 3]]).all() and drawn[4] == hours(0)[0]  # FIFO: the earlier waiting draw
    assert found == {"paired": 0, "ambiguous": 1, "no_draw": 2, "unused_draws": 1}
