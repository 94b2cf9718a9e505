"""Telemetry ring: bounded, oldest-to-newest, and loud about bad capacity or field names."""

from __future__ import annotations

import numpy as np
import pytest
from robot_rl.controllers.telemetry import TelemetryRing


def record(ring: TelemetryRing, tick: int) -> None:
    ring.record(
        stamp_s=tick * 0.001,
        compute_us=10.0,
        io_us=5.0,
        period_us=1000.0,
        missed_deadline=tick % 7 == 0,
        mode=tick % 4,
        target_age_s=0.0,
        safety_flags=tick % 16,
        tau_nm=np.full(7, float(tick)),
    )


def test_ring_keeps_the_newest_ticks_in_order():
    ring = TelemetryRing(capacity=5)
    for tick in range(12):
        record(ring, tick)
    assert ring.count == 12
    np.testing.assert_allclose(ring.column("stamp_s"), [0.007, 0.008, 0.009, 0.010, 0.011])
    tau = ring.column("tau_nm")
    assert tau.shape == (5, 7)
    np.testing.assert_array_equal(tau[:, 0], [7, 8, 9, 10, 11])
    np.testing.assert_array_equal(ring.column("mode"), [3, 0, 1, 2, 3])


def test_partly_filled_ring_gives_only_what_was_recorded():
    ring = TelemetryRing(capacity=100)
    for tick in range(3):
        record(ring, tick)
    np.testing.assert_array_equal(ring.column("tau_nm")[:, 0], [0, 1, 2])
    np.testing.assert_array_equal(ring.column("missed_deadline"), [True, False, False])


def test_clear_empties_the_ring():
    ring = TelemetryRing(capacity=4)
    for tick in range(6):
        record(ring, tick)
    ring.clear()
    assert ring.count == 0
    assert ring.column("stamp_s").size == 0


def test_columns_are_copies():
    ring = TelemetryRing(capacity=4)
    record(ring, 1)
    ring.column("tau_nm")[0, 0] = 99.0
    assert ring.column("tau_nm")[0, 0] == 1.0


@pytest.mark.parametrize("capacity", [0, -1])
def test_non_positive_capacity_is_a_value_error(capacity):
    with pytest.raises(ValueError, match=rf"capacity={capacity}; must be a positive number"):
        TelemetryRing(capacity)


def test_unknown_field_is_a_key_error_listing_the_known_ones():
    ring = TelemetryRing(capacity=4)
    with pytest.raises(KeyError, match=r"unknown telemetry field 'torque'.*'tau_nm'"):
        ring.column("torque")
