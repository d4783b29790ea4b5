"""The range and delta checks on the record (pipeline/checks/): on hand-made stays whose answer is known."""

import numpy as np
import pytest

from pipeline.checks.limits import Limits, bounds, caught, changes, derive, false_alarm_rate, flags, neighbours

pytestmark = pytest.mark.thirdparty  # the floors job runs these (tests/test_floors.py)

T, F = 8, 2
NAN = np.nan


def stay(*series: list[float]) -> np.ndarray:
    """One sample, its features' hourly cells (NaN: not recorded)."""
    return np.array(series, dtype=np.float64).T[None]


# sodium-like feature 0: a change of more than 13 in either direction is flagged; range 120…160
LIMITS = Limits(low=np.array([120.0, 0.0]), high=np.array([160.0, 10.0]), delta_low=np.array([-13.0, -5.0]),
                delta_high=np.array([13.0, 5.0]))


def test_neighbours_are_the_previous_and_next_recorded_cells_of_the_series():
    recorded = ~np.isnan(stay([NAN, 140, NAN, NAN, 141, NAN, NAN, 139], [1] * T))
    prev, nxt = neighbours(recorded)
    assert prev[0, :, 0].tolist() == [-1, -1, 1, 1, 1, 4, 4, 4]
    assert nxt[0, :, 0].tolist() == [1, 4, 4, 4, 7, 7, 7, 8]


@pytest.mark.parametrize(("value", "flagged"), [(153.0, False), (153.5, True), (127.0, False), (126.5, True)])
def test_a_value_just_beyond_a_delta_limit_from_the_previous_value_is_flagged(value, flagged):
    """140 the hour before; the next value far away in time but equal to the edited one (so only the
    previous neighbour can flag it)."""
    record = stay([NAN, 140, NAN, value, NAN, NAN, NAN, value], [1] * T)
    assert flags(record, LIMITS)["delta"][0, 3, 0] == flagged
    assert not flags(record, LIMITS)["range"].any()


@pytest.mark.parametrize(("value", "flagged"), [(153.0, False), (153.5, True)])
def test_a_value_just_beyond_a_delta_limit_from_the_next_value_is_flagged(value, flagged):
    record = stay([value, NAN, NAN, 140, NAN, NAN, NAN, NAN], [1] * T)  # its first value: only a next one
    assert flags(record, LIMITS)["delta"][0, 0, 0] == flagged
    assert flags(record, LIMITS)["delta"][0, 3, 0] == flagged  # and the next value, compared with it


def test_the_range_check_and_a_neighbour_outside_the_time_window():
    record = stay([119.0, NAN, NAN, NAN, NAN, NAN, NAN, 140], [1] * T)
    found = flags(record, LIMITS)
    assert found["range"][0, 0, 0] and not found["range"][0, 7, 0]
    assert found["delta"][0, 0, 0]  # 119 → 140: +21
    near = Limits(LIMITS.low, LIMITS.high, LIMITS.delta_low, LIMITS.delta_high, within=6)
    assert not flags(record, near)["delta"].any()  # 7 hours apart
    assert not flags(record, LIMITS)["range"][0, :, 1].any() and not flags(record, LIMITS)["delta"][0, :, 1].any()


def test_nothing_recorded_is_never_flagged():
    record = stay([NAN] * T, [NAN, 1, NAN, NAN, NAN, NAN, NAN, NAN])
    found = flags(record, LIMITS)
    assert not found["range"].any() and not found["delta"].any()


def test_limits_are_quantiles_of_the_values_and_of_consecutive_changes():
    rng = np.random.default_rng(0)
    value = rng.normal(140, 4, (500, T, F))
    value[rng.random(value.shape) < 0.5] = NAN
    limits = derive(value, (0.01, 0.99), (0.05, 0.95))
    recorded = value[..., 0][~np.isnan(value[..., 0])]
    assert limits.low[0] == np.quantile(recorded, 0.01) and limits.high[0] == np.quantile(recorded, 0.99)
    steps = changes(value)[0]
    by_hand = [b - a for s in value[..., 0] for a, b in zip(s[~np.isnan(s)][:-1], s[~np.isnan(s)][1:], strict=True)]
    np.testing.assert_allclose(np.sort(steps), np.sort(by_hand))
    assert limits.delta_low[0] == np.quantile(steps, 0.05) and limits.delta_high[0] == np.quantile(steps, 0.95)
    rates = false_alarm_rate(value, limits)
    assert 0.01 < rates["range"] < 0.03 and rates["any"] >= max(rates["range"], rates["delta"])


def test_a_feature_never_recorded_has_no_limits():
    value = np.full((3, T, F), NAN)
    value[:, 2, 0] = 140.0
    limits = derive(value)
    assert limits.low[1] == -np.inf and limits.high[1] == np.inf
    assert limits.delta_low[0] == -np.inf and limits.delta_high[0] == np.inf  # never twice in a stay


def test_an_edit_is_caught_by_its_own_value_or_by_a_neighbour_it_moved():
    clean = stay([140, NAN, 141, NAN, 142, NAN, NAN, 139], [5] * T)
    inside, beyond, lost = clean.copy(), clean.copy(), clean.copy()
    inside[0, 2, 0] = 150.0  # +10 from 140, −8 to 142
    beyond[0, 2, 0] = 155.0  # +15: its own delta flags it
    lost[0, 4, 0] = NAN  # 141 → 139 across the gap: within the limits
    assert caught(clean, clean, LIMITS)["any"].tolist() == [False]
    assert caught(clean, inside, LIMITS)["any"].tolist() == [False]
    assert caught(clean, beyond, LIMITS)["delta"].tolist() == [True]
    assert caught(clean, beyond, LIMITS)["range"].tolist() == [False]
    assert caught(clean, lost, LIMITS)["any"].tolist() == [False]
    far = clean.copy()
    far[0, 0, 0] = 100.0  # out of range, and a jump to the next value
    assert caught(clean, far, LIMITS)["range"].tolist() == [True]
    gap = stay([140, NAN, 126, NAN, 140, NAN, NAN, 139], [5] * T)  # 126: flagged in the clean record already
    healed = gap.copy()
    healed[0, 2, 0] = NAN  # losing the flagged value raises no new alarm
    assert caught(gap, healed, LIMITS)["any"].tolist() == [False]


def test_bounds_are_the_values_a_cell_can_take_without_an_alarm():
    """Every recorded cell of random stays: its interval's ends pass, a step beyond either end is caught (by
    its own check or its neighbour's), with absolute and percent delta limits and a time window."""
    rng = np.random.default_rng(1)
    value = rng.normal(140, 3, (40, T, F))
    value[rng.random(value.shape) < 0.4] = NAN
    limits = Limits(LIMITS.low, LIMITS.high, LIMITS.delta_low, LIMITS.delta_high, within=4,
                    delta_percent=np.array([8.0, np.inf]))
    lo, hi = bounds(value, limits)
    for s, t, f in zip(*np.nonzero(~np.isnan(value)), strict=True):
        if not lo[s, t, f] <= value[s, t, f] <= hi[s, t, f]:
            continue  # a value the clean record's checks already flag
        for end, beyond in ((lo[s, t, f], lo[s, t, f] - 0.01), (hi[s, t, f], hi[s, t, f] + 0.01)):
            if not np.isfinite(end):
                continue
            edited = value[s:s + 1].copy()
            edited[0, t, f] = end + (1e-9 if end == lo[s, t, f] else -1e-9)
            assert not caught(value[s:s + 1], edited, limits)["any"][0], (s, t, f, end)
            edited[0, t, f] = beyond
            assert caught(value[s:s + 1], edited, limits)["any"][0], (s, t, f, beyond)
