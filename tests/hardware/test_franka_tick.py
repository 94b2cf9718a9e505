"""The torque mode's per-tick path (``FrankaBackend._torque_step``: state and model read, target
intake, watchdog, reference, impedance law, integral, torque safety) against the same backend
switched to the plain-numpy stages (``controllers.plain``, the loop as it was before the 1 kHz
path was made lean), tick by tick over one synthetic franky sequence that passes through every
limit: a clipped target, joint-limit repulsion, the velocity guard's clamp and hold, the braking
margin, the torque clamp, the rate limit, a NaN state, a NaN mass matrix, the watchdog's hold and
damp, a software stop. No simulator: franky is the offline fake of ``robot_rl.bench.franka``."""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np
import pytest
from robot_rl.controllers.loop import LoopConfig
from robot_rl.controllers.plain import plain_loop
from robot_rl.controllers.targets import CartesianTarget
from robot_rl.controllers.torque_safety import (
    FLAG_BRAKING_MARGIN,
    FLAG_CLAMPED,
    FLAG_NONFINITE,
    FLAG_RATE_LIMITED,
    FLAG_REPULSION,
    FLAG_VELOCITY,
    FLAG_VELOCITY_HOLD,
)
from robot_rl.controllers.watchdog import ControlMode, WatchdogConfig
from robot_rl.hardware.franka import FR3_LIMITS
from robot_rl.hardware.franka_sim import SIM_HOME_Q_RAD, sim_loop_config

from robot_rl.bench.franka import (
    OfflineSample,
    offline_torque_backend,
    run_offline_ticks,
    synthetic_samples,
)

TICKS = 520
PERIOD_S = 0.001
TARGET_EVERY = 20  # ticks: a 50 Hz target stream
WATCHDOG = WatchdogConfig(hold_after_s=0.05, damp_after_s=0.1)  # shorter: fewer ticks
V_MAX = FR3_LIMITS.joint_vel_max_rad_s
# Ticks whose franky sample is altered so that one stage acts on them.
REPULSION_TICKS = range(100, 106)  # joint 7 past its soft limit (3.0159 - 0.1 rad)
# joint 1 at 90 % of its speed limit: the guard clamps (85 %), and the braking margin (its target
# 90 %) lets no torque speed it up
GUARD_TICKS = range(130, 134)
HOLD_TICKS = range(160, 163)  # joint 5 at 97 %: pure damping (95 %)
CLAMP_TICKS = range(180, 196)  # Coriolis 40 Nm on joint 6: over its 12 Nm limit
NAN_STATE_TICK = 210  # dq[2] NaN
NAN_MASS_TICK = 220  # the mass matrix NaN
OUTSIDE_TARGET_TICK = 250  # x = 0.85 m, 10 cm past the box's face: clipped to it
LAST_TARGET_TICK = 300  # then none: hold from 350, damp from 400
RESUME_TICK, STOP_TICK, CLEAR_TICK = 420, 470, 490


@functools.cache
def _clean_samples() -> tuple[OfflineSample, ...]:
    return tuple(synthetic_samples(TICKS + 60, SIM_HOME_Q_RAD, seed=3, amplitude_rad=0.1))


def _samples() -> list[OfflineSample]:
    out = list(_clean_samples())

    def alter(k: int, **fields: np.ndarray) -> None:
        out[k] = dataclasses.replace(out[k], **fields)

    for k in REPULSION_TICKS:
        alter(k, q=np.r_[out[k].q[:6], 2.96])
    for k in GUARD_TICKS:
        alter(k, dq=np.r_[0.9 * V_MAX[0], out[k].dq[1:]])
    for k in HOLD_TICKS:
        dq = out[k].dq.copy()
        dq[4] = -0.97 * V_MAX[4]
        alter(k, dq=dq)
    for k in CLAMP_TICKS:
        alter(k, coriolis=out[k].coriolis + np.r_[np.zeros(5), 40.0, 0.0])
    dq = out[NAN_STATE_TICK].dq.copy()
    dq[2] = math.nan
    alter(NAN_STATE_TICK, dq=dq)
    alter(NAN_MASS_TICK, mass=np.full((7, 7), math.nan))
    return out


def _targets() -> dict[int, CartesianTarget]:
    """50 Hz: the (unaltered) pose 50 ticks ahead with its twist; one target outside the box; a
    gap; held targets again, none while the arm is stopped."""
    samples = _clean_samples()
    out = {}
    for k in range(0, LAST_TARGET_TICK + 1, TARGET_EVERY):
        s = samples[k + 50]
        out[k] = CartesianTarget(s.ee_pos_m, s.ee_quat_xyzw, s.jacobian @ s.dq)
    s = samples[OUTSIDE_TARGET_TICK]
    out[OUTSIDE_TARGET_TICK] = CartesianTarget(np.r_[0.85, s.ee_pos_m[1:]], s.ee_quat_xyzw)
    for k in range(RESUME_TICK, TICKS, TARGET_EVERY):
        if not STOP_TICK <= k <= CLEAR_TICK:
            out[k] = CartesianTarget(samples[k].ee_pos_m, samples[k].ee_quat_xyzw)
    return out


def _run(plain: bool) -> tuple[np.ndarray, list[int], list[int], object]:
    samples = _samples()
    backend = offline_torque_backend(samples, loop_config=LoopConfig(
        reference=sim_loop_config().reference, watchdog=WATCHDOG))  # fmt: skip
    if plain:
        plain_loop(backend.loop)
    motion = backend.robot._robot.motion
    motion.keep = True
    targets = _targets()
    flags, modes = [], []
    loop = backend.loop
    for k in range(TICKS):
        if k == STOP_TICK:
            backend.software_stop(True)
        if k == CLEAR_TICK:
            backend.software_stop(False)
        run_offline_ticks([backend], 1, [{0: targets[k]} if k in targets else {}], PERIOD_S)
        flags.append(loop.status.safety_flags)
        modes.append(int(loop.status.mode))
    return np.array(motion.torques), flags, modes, backend


@pytest.fixture(scope="module")
def runs() -> dict[str, tuple[np.ndarray, list[int], list[int], object]]:
    return {"plain": _run(plain=True), "lean": _run(plain=False)}


def test_the_lean_tick_sends_the_plain_ticks_torques_to_1e_9(runs) -> None:
    plain, lean = runs["plain"][0], runs["lean"][0]
    assert plain.shape == lean.shape == (TICKS, 7)
    assert np.isfinite(plain).all()  # the NaN ticks were turned into damping by both
    scale = np.maximum(np.abs(plain).max(axis=1), 1.0)  # Nm, per tick (1 Nm floor)
    worst = float((np.abs(lean - plain).max(axis=1) / scale).max())
    assert worst <= 1e-9, f"the lean tick's torque differs by {worst:.2e} of the plain one's"


def test_both_paths_flag_and_switch_modes_on_the_same_ticks(runs) -> None:
    assert runs["lean"][1] == runs["plain"][1]
    assert runs["lean"][2] == runs["plain"][2]


def test_the_sequence_passes_through_every_limit(runs) -> None:
    """Guards the test itself: each stage acted on the ticks meant for it."""
    _, flags, modes, backend = runs["lean"]
    for k in REPULSION_TICKS:
        assert flags[k] & FLAG_REPULSION
    assert all(flags[k] & FLAG_VELOCITY and not flags[k] & FLAG_VELOCITY_HOLD for k in GUARD_TICKS)
    assert all(flags[k] & FLAG_VELOCITY_HOLD for k in HOLD_TICKS)
    assert any(flags[k] & FLAG_CLAMPED for k in CLAMP_TICKS)
    assert all(flags[k] & FLAG_BRAKING_MARGIN for k in GUARD_TICKS)
    assert flags[0] & FLAG_RATE_LIMITED and any(flags[k] & FLAG_RATE_LIMITED for k in CLAMP_TICKS)
    assert flags[NAN_STATE_TICK] & FLAG_NONFINITE
    # a NaN mass matrix: the law fails (LinAlgError) or gives NaN; either way the arm is damped
    assert modes[NAN_MASS_TICK] == int(ControlMode.FAULT) or flags[NAN_MASS_TICK] & FLAG_NONFINITE
    assert backend.loop.cartesian.clipped_count >= 1
    assert modes[LAST_TARGET_TICK + 40] == int(ControlMode.ACTIVE)
    assert modes[LAST_TARGET_TICK + 60] == int(ControlMode.HOLD)
    assert modes[LAST_TARGET_TICK + 110] == int(ControlMode.DAMP)
    assert modes[RESUME_TICK + 10] == int(ControlMode.ACTIVE)
    assert modes[STOP_TICK + 10] == int(ControlMode.DAMP)


def test_the_offline_bench_figures_are_there_and_finite() -> None:
    """``robot-rl bench franka``'s offline fields exist (their values are the bench's to report)."""
    from robot_rl.bench.franka import offline_tick_figures

    out = offline_tick_figures(ticks=80)
    for scenario in ("moving", "held"):
        for key in (
            f"torque_tick_compute_us_p50_offline_{scenario}",
            f"torque_tick_compute_us_p99_offline_{scenario}",
            f"torque_tick_compute_us_p50_offline_plain_{scenario}",
            f"torque_tick_plain_over_lean_ratio_p50_offline_{scenario}",
            f"torque_tick_compute_p99_vs_period_ratio_offline_{scenario}",
        ):
            assert math.isfinite(out[key]) and out[key] > 0.0, key
    assert (
        out["torque_tick_compute_us_p50_offline"]
        == out["torque_tick_compute_us_p50_offline_moving"]
    )
