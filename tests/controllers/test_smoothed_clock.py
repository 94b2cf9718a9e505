"""``SmoothedClock``: a wall-clock loop's time without its tick-to-tick jitter."""

from __future__ import annotations

import numpy as np
import pytest
from robot_rl.controllers.loop import SmoothedClock

PERIOD_S = 0.001


class _Wall:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _read(clock: SmoothedClock, wall: _Wall, intervals_s: np.ndarray) -> np.ndarray:
    out = []
    for dt in intervals_s:
        wall.now += dt
        out.append(clock())
    return np.array(out)


def test_it_follows_a_jittery_wall_clock_at_its_rate_with_a_fraction_of_its_jitter():
    # ticks 0.3-1.7 ms apart (mean 1 ms), as a robot-paced loop's
    rng = np.random.default_rng(0)
    wall = _Wall()
    clock = SmoothedClock(PERIOD_S, gain=0.1, source=wall)
    intervals = PERIOD_S * rng.uniform(0.3, 1.7, 5000)
    times = _read(clock, wall, intervals)
    steps = np.diff(times)[100:]
    assert np.all(steps >= 0.0)  # never goes back
    # its steps jitter far less than the wall's (0.4 ms standard deviation): about
    # sqrt(gain / (2 - gain)) = 0.23 of it for independent intervals
    assert steps.std() < 0.3 * intervals[101:].std()
    assert abs(steps.mean() - intervals[101:].mean()) < 0.02 * PERIOD_S  # the wall's rate
    assert abs(times[-1] - wall.now) < 5 * PERIOD_S  # and stays close to it


def test_a_slow_loop_lags_the_wall_by_the_predicted_amount():
    # a loop at 0.86x (franky-sim): the lag settles at (1 - gain) (D - period) / gain
    wall = _Wall()
    clock = SmoothedClock(PERIOD_S, gain=0.1, source=wall)
    times = _read(clock, wall, np.full(2000, PERIOD_S / 0.86))
    lag = wall.now - times[-1]
    assert lag == pytest.approx(0.9 * (PERIOD_S / 0.86 - PERIOD_S) / 0.1, rel=0.01)


def test_a_stall_or_a_reset_jumps_to_the_wall_clock_and_bunched_ticks_never_go_back():
    wall = _Wall()
    clock = SmoothedClock(PERIOD_S, gain=0.1, reanchor_s=0.02, source=wall)
    assert clock() == wall.now  # the first read
    _read(clock, wall, np.full(50, PERIOD_S))
    wall.now += 0.05  # a 50 ms stall
    assert clock() == wall.now
    times = _read(clock, wall, np.full(40, 0.0001))  # ticks bunched after it, 0.1 ms apart
    assert np.all(np.diff(times) >= 0.0)
    assert times[-1] - wall.now < 9 * PERIOD_S  # it slowed down to let the wall catch up
    clock.reset()
    wall.now += 0.001
    assert clock() == wall.now


@pytest.mark.parametrize("gain", [0.0, -0.1, 1.5])
def test_a_gain_outside_0_1_is_refused(gain):
    with pytest.raises(ValueError, match="gain"):
        SmoothedClock(PERIOD_S, gain=gain)
