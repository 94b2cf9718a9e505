"""Watchdog mode function: ACTIVE below 100 ms, HOLD from 100 ms, DAMP from 500 ms."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from robot_rl.controllers.watchdog import ControlMode, WatchdogConfig, watchdog_mode

DEFAULT = WatchdogConfig()


def test_default_thresholds_are_100_ms_and_500_ms():
    assert DEFAULT.hold_after_s == 0.1
    assert DEFAULT.damp_after_s == 0.5


@pytest.mark.parametrize(
    "age_s,mode",
    [
        (0.0, ControlMode.ACTIVE),
        (0.05, ControlMode.ACTIVE),
        (0.0999, ControlMode.ACTIVE),
        (0.1, ControlMode.HOLD),
        (0.1001, ControlMode.HOLD),
        (0.3, ControlMode.HOLD),
        (0.4999, ControlMode.HOLD),
        (0.5, ControlMode.DAMP),
        (0.5001, ControlMode.DAMP),
        (3600.0, ControlMode.DAMP),
    ],
)
def test_mode_for_command_age(age_s, mode):
    assert watchdog_mode(age_s, DEFAULT) == mode


def test_lockstep_tick_counts_land_on_the_thresholds():
    # The twin's clock is a running sum of 1 ms steps, which drifts off k * 0.001 by a few ulp:
    # the 100th tick must still be HOLD and the 500th DAMP, the ones before still the old mode.
    now = 0.0
    modes = []
    for _ in range(600):
        modes.append(watchdog_mode(now, DEFAULT))
        now += 0.001
    assert modes[99] == ControlMode.ACTIVE
    assert modes[100] == ControlMode.HOLD
    assert modes[499] == ControlMode.HOLD
    assert modes[500] == ControlMode.DAMP
    # the same with the product form used when time is k * period
    assert watchdog_mode(100 * 0.001, DEFAULT) == ControlMode.HOLD
    assert watchdog_mode(500 * 0.001, DEFAULT) == ControlMode.DAMP


def test_custom_thresholds_are_honoured():
    config = WatchdogConfig(hold_after_s=0.02, damp_after_s=0.05)
    assert watchdog_mode(0.019, config) == ControlMode.ACTIVE
    assert watchdog_mode(0.02, config) == ControlMode.HOLD
    assert watchdog_mode(0.049, config) == ControlMode.HOLD
    assert watchdog_mode(0.05, config) == ControlMode.DAMP


@given(st.floats(0.0, 10.0), st.floats(0.0, 10.0))
def test_mode_never_relaxes_as_the_command_ages(a, b):
    younger, older = sorted((a, b))
    assert watchdog_mode(older, DEFAULT) >= watchdog_mode(younger, DEFAULT)
    assert watchdog_mode(older, DEFAULT) != ControlMode.FAULT  # FAULT is the loop's, not ours


def test_nan_age_fails_safe_to_damping():
    assert watchdog_mode(float("nan"), WatchdogConfig()) == ControlMode.DAMP


@pytest.mark.parametrize(("hold", "damp"), [(0.5, 0.1), (0.1, 0.1), (0.0, 0.5), (-0.1, 0.5)])
def test_thresholds_must_be_ordered(hold, damp):
    with pytest.raises(ValueError, match="hold_after_s < damp_after_s"):
        WatchdogConfig(hold_after_s=hold, damp_after_s=damp)
