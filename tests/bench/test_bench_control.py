"""The control benchmark, run once in its quick form through the CLI, checked for invariants.

The bounds are properties the stack must have whatever the machine: the torque rate the safety
stage allows (1000 Nm/s, the Panda's limit), no command the twin had to clamp, a watchdog that
holds no earlier than its hold_after_s (100 ms) less the server's catch-up allowance, measured in
wall time on a running robot server, and sub-millimetre static accuracy on a twin whose gravity
model is exact. Timing figures are checked for consistency with each other (a compute time can
not exceed the wall time of a tick; every tick of the measured phases is timed), not for speed:
the suite runs on a shared machine.
"""

from __future__ import annotations

import json
import math

import pytest
from robot_rl.sim.twin import TwinConfig

from robot_rl import cli
from robot_rl.bench.control import run_control_bench
from robot_rl.transport.robot_server import CATCH_UP_TICKS

REQUIRED_KEYS = {
    "seed",
    "tick_compute_us_p50",
    "tick_compute_us_p99",
    "io_us_p50",
    "model_us_p50",
    "twin_realtime_factor",
    "static_error_mm",
    "static_error_mm_max",
    "static_error_deg",
    "static_error_deg_max",
    "circle_error_delayed_ref_mm_mean",
    "circle_error_delayed_ref_mm_max",
    "circle_error_ref_mm_mean",
    "circle_error_ref_mm_max",
    "circle_lag_ms",
    "max_torque_rate_nm_per_s",
    "watchdog_hold_ms",
    "watchdog_hold_ms_max",
    "watchdog_hold_ms_config",
    "watchdog_hold_ratio_vs_config",
    "twin_limit_violations",
    "timed_ticks",
}
TIMING_KEYS = {
    "tick_compute_us_p50",
    "tick_compute_us_p99",
    "io_us_p50",
    "model_us_p50",
    "twin_realtime_factor",
}
DETERMINISTIC_KEYS = {
    "static_error_mm",
    "static_error_deg_max",
    "circle_error_delayed_ref_mm_mean",
    "circle_error_delayed_ref_mm_max",
    "circle_error_ref_mm_mean",
    "max_torque_rate_nm_per_s",
}


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "control.json"
    assert cli.main(["bench", "control", "--quick", "--seed", "3", "--json", str(path)]) == 0
    return json.loads(path.read_text())


def test_json_has_every_required_key_and_finite_values(quick_results):
    assert not REQUIRED_KEYS - quick_results.keys()
    for key, value in quick_results.items():
        assert isinstance(value, (int, float)), key
        assert math.isfinite(value), key
    assert quick_results["seed"] == 3


def test_timings_are_consistent_with_the_wall_time_of_a_tick(quick_results):
    for key in TIMING_KEYS:
        assert quick_results[key] > 0, key
    # The circle phase ran at twin_realtime_factor: one 1 ms tick took this long in wall time, and
    # the controller's compute and the physics step are parts of it (a unit slip, ms for us or a
    # timer around the wrong call, breaks this).
    wall_tick_us = 1e3 / quick_results["twin_realtime_factor"]
    assert quick_results["tick_compute_us_p50"] < wall_tick_us
    assert quick_results["physics_step_us_p50"] < wall_tick_us
    # Every tick of the measured phases was timed: QUICK runs 3 static targets x 2.5 s, 1.5 s of
    # approach and 1 warm-up + 1 measured revolution at 0.5 Hz, at 1 kHz.
    assert quick_results["timed_ticks"] == 3 * 2500 + 1500 + 2 * 2000


def test_torque_rate_stays_within_the_panda_limit(quick_results):
    assert quick_results["max_torque_rate_nm_per_s"] <= 1000.0


def test_twin_never_had_to_clamp_and_the_loop_never_faulted(quick_results):
    assert quick_results["twin_limit_violations"] == 0
    assert quick_results["loop_faults"] == 0
    assert quick_results["rejected_targets"] == 0


def test_watchdog_never_holds_before_100_ms_less_the_servers_catch_up(quick_results):
    # Wall time on a running server, from the client's last target to the first HOLD state it
    # got. The target's age counts on the twin's clock, which never runs ahead of the wall clock
    # but catches up on it when the serving loop was behind (at most CATCH_UP_TICKS periods, then
    # it re-anchors): a hold can come that much wall time early, never more (95.3 ms was seen on
    # a fresh machine). No upper bound here: the twin's clock runs slower than the wall clock on
    # a loaded machine (0.2x was seen), so how late the hold comes is the benchmark's figure.
    assert quick_results["watchdog_hold_ms_config"] == 100.0
    floor_ms = 100.0 - CATCH_UP_TICKS * 1e3 * TwinConfig().period_s
    assert floor_ms == 80.0  # 1 kHz
    assert floor_ms <= quick_results["watchdog_hold_ms"] <= quick_results["watchdog_hold_ms_max"]
    assert quick_results["watchdog_hold_ratio_vs_config"] == pytest.approx(
        quick_results["watchdog_hold_ms"] / 100.0
    )


def test_static_targets_are_reached_and_the_arm_comes_to_rest(quick_results):
    assert quick_results["static_error_mm_max"] < 2.0
    assert quick_results["static_error_deg_max"] < 0.5
    assert quick_results["static_joint_speed_rad_s_max"] < 0.05


def test_circle_is_tracked_within_a_loose_bound(quick_results):
    # Loose on purpose: a guard against breakage, not the 1 mm / 2 mm target (see the full bench).
    assert quick_results["circle_error_delayed_ref_mm_max"] < 10.0
    # The interface's one-period latency is real: at 0.5 Hz on a 5 cm radius the ideal point
    # moves 1.57 mm in 10 ms, so the TCP is further from the current point than from the delayed
    # one, and the phase lag is near that period.
    assert (
        quick_results["circle_error_ref_mm_mean"]
        > quick_results["circle_error_delayed_ref_mm_mean"]
    )
    assert 5.0 < quick_results["circle_lag_ms"] < 30.0


@pytest.mark.slow
def test_same_seed_same_accuracy_figures():
    a = run_control_bench(seed=1, quick=True, progress=None)
    b = run_control_bench(seed=1, quick=True, progress=None)
    for key in DETERMINISTIC_KEYS:
        assert a[key] == b[key], key
