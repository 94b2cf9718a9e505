"""The control benchmark, run once in its quick form through the CLI, checked for invariants.

The bounds are properties the stack must have whatever the machine: the torque rate the safety
stage allows (1000 Nm/s, the Panda's limit), no command the twin had to clamp, the watchdog's
hold_after_s of 100 ms, and sub-millimetre static accuracy on a twin whose gravity model is exact.
Timing figures are only checked for being finite and positive: the suite runs on a shared machine.
"""

from __future__ import annotations

import json
import math

import pytest

from robot_rl import cli
from robot_rl.bench.control import run_control_bench

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
    "circle_error_mm_mean",
    "circle_error_mm_max",
    "circle_lag_ms",
    "max_torque_rate_nm_per_s",
    "watchdog_hold_ms",
    "twin_limit_violations",
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
    "circle_error_mm_mean",
    "circle_error_mm_max",
    "watchdog_hold_ms",
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


def test_timings_are_positive(quick_results):
    for key in TIMING_KEYS:
        assert quick_results[key] > 0, key
    assert quick_results["tick_compute_us_p99"] >= quick_results["tick_compute_us_p50"]


def test_torque_rate_stays_within_the_panda_limit(quick_results):
    assert quick_results["max_torque_rate_nm_per_s"] <= 1000.0


def test_twin_never_had_to_clamp_and_the_loop_never_faulted(quick_results):
    assert quick_results["twin_limit_violations"] == 0
    assert quick_results["loop_faults"] == 0
    assert quick_results["rejected_targets"] == 0


def test_watchdog_holds_after_100_ms(quick_results):
    assert 90.0 <= quick_results["watchdog_hold_ms"] <= 110.0


def test_static_targets_are_reached_and_the_arm_comes_to_rest(quick_results):
    assert quick_results["static_error_mm_max"] < 2.0
    assert quick_results["static_error_deg_max"] < 0.5
    assert quick_results["static_joint_speed_rad_s_max"] < 0.05


def test_circle_is_tracked_within_a_loose_bound(quick_results):
    # Loose on purpose: a guard against breakage, not the 1 mm / 2 mm target (see the full bench).
    assert quick_results["circle_error_mm_max"] < 10.0
    assert quick_results["circle_error_mm_mean"] <= quick_results["circle_error_mm_max"]


@pytest.mark.slow
def test_same_seed_same_accuracy_figures():
    a = run_control_bench(seed=1, quick=True, progress=None)
    b = run_control_bench(seed=1, quick=True, progress=None)
    for key in DETERMINISTIC_KEYS:
        assert a[key] == b[key], key
