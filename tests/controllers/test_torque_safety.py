"""Torque safety: whatever goes in, what comes out is finite, within the torque limits, and within
the 1000 Nm/s rate limit of the previous output, on every call."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from robot_rl.controllers.gains import DampingGains
from robot_rl.controllers.torque_safety import (
    FLAG_BRAKING_MARGIN,
    FLAG_CLAMPED,
    FLAG_NONFINITE,
    FLAG_RATE_LIMITED,
    FLAG_REPULSION,
    FLAG_VELOCITY,
    FLAG_VELOCITY_HOLD,
    SafetyConfig,
    TorqueSafety,
)

from robot_rl.interfaces import PANDA_LIMITS

PERIOD_S = 0.001
TAU_MAX = PANDA_LIMITS.joint_torque_max_nm
# The arm's limit: 1000 Nm/s, i.e. 1 Nm per 1 ms tick.
MAX_STEP_NM = PANDA_LIMITS.torque_rate_max_nm_per_s * PERIOD_S
Q_MID = 0.5 * (PANDA_LIMITS.joint_pos_min_rad + PANDA_LIMITS.joint_pos_max_rad)
AT_REST = np.zeros(7)


# The braking margin (stage 6) scales with the arm's inertia. The tests of the other stages give
# an inertia so large that the margin never binds (the clamp and the rate limit act first); the
# margin has its own tests at the end, with the shipped floor and the twin's mass matrix.
UNBOUND = SafetyConfig(inertia_floor_kg_m2=(1e4,) * 7)


def safety(config: SafetyConfig = UNBOUND) -> TorqueSafety:
    return TorqueSafety(PANDA_LIMITS, PERIOD_S, config)


# Torques: anything a broken controller might produce, from tiny to absurd, NaN and inf included.
torque_values = st.one_of(
    st.floats(-200.0, 200.0),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -1e308, 0.0]),
)
torques = st.lists(torque_values, min_size=7, max_size=7).map(np.array)


@st.composite
def arm_states(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    """(q, dq): positions up to 0.3 rad past the limits, speeds up to 1.5x the limits."""
    q = np.array(
        [
            draw(st.floats(lo - 0.3, hi + 0.3))
            for lo, hi in zip(
                PANDA_LIMITS.joint_pos_min_rad, PANDA_LIMITS.joint_pos_max_rad, strict=True
            )
        ]
    )
    dq = np.array([draw(st.floats(-1.5 * v, 1.5 * v)) for v in PANDA_LIMITS.joint_vel_max_rad_s])
    return q, dq


# For an infinite speed nan_to_num gives 1.8e308 and the damping torque overflows to inf; numpy
# warns about that. Expected for such input: what these tests check is the output guard after it.
OVERFLOW_OK = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")


def assert_safe(out: np.ndarray, previous: np.ndarray) -> None:
    assert out.shape == (7,)
    assert np.isfinite(out).all()
    assert (np.abs(out) <= TAU_MAX).all()
    assert (np.abs(out - previous) / PERIOD_S <= PANDA_LIMITS.torque_rate_max_nm_per_s).all()


@st.composite
def mass_matrices(draw: st.DrawFn) -> np.ndarray | None:
    """None, a mass matrix (symmetric positive definite, inertias 0.003-3 kg m^2), or not one."""
    kind = draw(st.sampled_from(["none", "spd", "spd", "singular", "nan", "negative"]))
    if kind == "none":
        return None
    if kind == "singular":
        return np.zeros((7, 7))
    if kind == "nan":
        return np.full((7, 7), math.nan)
    if kind == "negative":
        return -np.eye(7)
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(7, 7)) * 0.3
    return a @ a.T + np.diag(rng.uniform(0.003, 3.0, 7))


# A singular or NaN mass matrix makes the inverse warn; the safety replaces it with the floor.
@pytest.mark.filterwarnings("ignore:invalid value encountered in inv:RuntimeWarning")
@settings(max_examples=150)
@given(
    st.sampled_from([UNBOUND, SafetyConfig()]),
    st.lists(st.tuples(arm_states(), torques, mass_matrices()), min_size=1, max_size=40),
)
def test_output_is_always_within_torque_and_rate_limits(config, calls):
    s = safety(config)
    previous = np.zeros(7)
    for (q, dq), tau, mass in calls:
        out, flags = s.process(tau, q, dq, mass)
        assert_safe(out, previous)
        if not np.isfinite(tau).all():
            assert flags & FLAG_NONFINITE
        previous = out


@settings(max_examples=50)
@given(torques, st.integers(1, 300))
def test_a_held_torque_is_reached_at_the_rate_limit_then_clamped(tau, ticks):
    s = safety()
    previous = np.zeros(7)
    for _ in range(ticks):
        out, _ = s.process(tau, Q_MID, AT_REST)
        assert_safe(out, previous)
        previous = out
    if np.isfinite(tau).all():
        # After n ticks each joint has moved min(n * 1 Nm, |clamped goal|) toward the clamped goal.
        goal = np.clip(tau, -TAU_MAX, TAU_MAX)
        reachable = np.minimum(np.abs(goal), ticks * MAX_STEP_NM)
        np.testing.assert_allclose(out, np.sign(goal) * reachable, atol=ticks * MAX_STEP_NM * 1e-6)


def test_huge_torque_is_clamped_to_the_limits_and_flagged():
    s = safety()
    flags = 0
    for _ in range(100):  # 87 Nm at 1 Nm per tick
        out, flags = s.process(np.full(7, 1e6), Q_MID, AT_REST)
    np.testing.assert_allclose(out, TAU_MAX, rtol=1e-4)
    assert flags & FLAG_CLAMPED
    assert (out <= TAU_MAX).all()


def test_torque_step_is_rate_limited_and_flagged():
    s = safety()
    out, flags = s.process(np.full(7, 5.0), Q_MID, AT_REST)
    assert flags & FLAG_RATE_LIMITED
    assert (out > 0).all()
    assert (out <= MAX_STEP_NM).all()


def test_small_torque_passes_unchanged():
    s = safety()
    tau = np.array([0.5, -0.5, 0.25, -0.25, 0.1, -0.1, 0.05])
    out, flags = s.process(tau, Q_MID, AT_REST)
    np.testing.assert_array_equal(out, tau)
    assert flags == 0


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nonfinite_torque_becomes_pure_damping(bad):
    dq = np.array([0.5, -0.4, 0.3, -0.2, 0.6, -0.5, 0.4])  # well inside the velocity guard
    damping = -DampingGains().damping_nm_s_per_rad * dq
    s = safety()
    s.reset(damping)  # the arm already carries the damping torque, so no rate limit applies
    tau = np.zeros(7)
    tau[2] = bad
    out, flags = s.process(tau, Q_MID, dq)
    assert flags & FLAG_NONFINITE
    np.testing.assert_allclose(out, damping, rtol=1e-12)
    assert (out * dq < 0).all()  # opposes motion


@OVERFLOW_OK
@settings(max_examples=50)
@given(
    arm_states(),
    st.sampled_from([math.nan, math.inf, -math.inf]),
    st.booleans(),
    st.integers(0, 6),
    st.sampled_from([math.nan, 1.0, 1e6]),
)
def test_nonfinite_state_never_gives_a_nonfinite_torque(state, bad, in_velocity, joint, tau_value):
    q, dq = (a.copy() for a in state)
    (dq if in_velocity else q)[joint] = bad
    out, _ = safety().process(np.full(7, tau_value), q, dq)
    assert_safe(out, np.zeros(7))


@OVERFLOW_OK
def test_infinite_velocity_with_nan_torque_brakes_within_the_rate_limit():
    s = safety()
    previous = np.full(7, 2.0)
    s.reset(previous)
    dq = np.zeros(7)
    dq[0] = math.inf
    out, flags = s.process(np.full(7, math.nan), Q_MID, dq)
    assert flags & FLAG_NONFINITE
    assert_safe(out, previous)
    assert out[0] < previous[0]  # braking against the (absurd) positive speed


# -- joint-limit repulsion -----------------------------------------------------------------------


@pytest.mark.parametrize("joint", range(7))
@pytest.mark.parametrize("side", ["min", "max"])
def test_repulsion_pushes_a_joint_away_from_its_limit(joint, side):
    config = SafetyConfig()
    q = Q_MID.copy()
    inside = config.joint_margin_rad / 2  # inside the margin, not past the hard limit
    if side == "min":
        q[joint] = PANDA_LIMITS.joint_pos_min_rad[joint] + inside
    else:
        q[joint] = PANDA_LIMITS.joint_pos_max_rad[joint] - inside
    s = safety()
    for _ in range(10):  # let the rate limit pass the push through
        out, flags = s.process(np.zeros(7), q, AT_REST)
    assert flags & FLAG_REPULSION
    away = 1.0 if side == "min" else -1.0
    # spring: k * (margin / 2) toward the inside of the range; nothing on the other joints
    expected = config.repulsion_stiffness_nm_per_rad * inside
    assert out[joint] * away == pytest.approx(expected, rel=1e-9)
    assert np.delete(out, joint) == pytest.approx(np.zeros(6))


def test_repulsion_damps_motion_toward_the_limit_only():
    config = SafetyConfig()
    q = Q_MID.copy()
    q[0] = PANDA_LIMITS.joint_pos_max_rad[0] - config.joint_margin_rad / 2
    toward = np.zeros(7)
    toward[0] = 0.5
    push_toward = TorqueSafety(PANDA_LIMITS, PERIOD_S)
    push_away = TorqueSafety(PANDA_LIMITS, PERIOD_S)
    for _ in range(30):
        out_toward, _ = push_toward.process(np.zeros(7), q, toward)
        out_away, _ = push_away.process(np.zeros(7), q, -toward)
    # moving into the limit is braked harder than moving out of it
    assert out_toward[0] < out_away[0] < 0.0


@pytest.mark.parametrize("joint", range(7))
def test_velocity_guard_brakes_a_joint_near_its_speed_limit(joint):
    config = SafetyConfig()
    dq = np.zeros(7)
    dq[joint] = 0.9 * PANDA_LIMITS.joint_vel_max_rad_s[joint]  # past the 85 % guard
    s = safety()
    for _ in range(10):
        out, flags = s.process(np.zeros(7), Q_MID, dq)
    assert flags & FLAG_VELOCITY and not flags & FLAG_VELOCITY_HOLD
    assert out[joint] < 0.0
    excess = dq[joint] - config.velocity_guard_fraction * PANDA_LIMITS.joint_vel_max_rad_s[joint]
    assert out[joint] == pytest.approx(-config.velocity_guard_damping_nm_s_per_rad * excess)


@pytest.mark.parametrize("joint", range(7))
def test_velocity_guard_cuts_torque_that_would_speed_a_fast_joint_up(joint):
    dq = np.zeros(7)
    dq[joint] = -0.9 * PANDA_LIMITS.joint_vel_max_rad_s[joint]
    tau = np.full(7, -5.0)  # pushes every joint the negative way: joint ``joint`` is already fast
    s = safety()
    for _ in range(20):
        out, _ = s.process(tau, Q_MID, dq)
    assert out[joint] > 0.0  # not -5 Nm: the push is cut and the excess is braked
    np.testing.assert_allclose(np.delete(out, joint), -5.0)  # slow joints keep their torque


def test_velocity_guard_holds_the_whole_arm_near_the_speed_limit():
    config = SafetyConfig()
    dq = np.full(7, 0.3)
    dq[3] = 0.97 * PANDA_LIMITS.joint_vel_max_rad_s[3]  # past the 95 % hold
    s = safety()
    for _ in range(100):  # long enough for the rate limit to let the torque settle
        out, flags = s.process(np.full(7, 8.0), Q_MID, dq)
    assert flags & FLAG_VELOCITY_HOLD
    excess = dq[3] - config.velocity_guard_fraction * PANDA_LIMITS.joint_vel_max_rad_s[3]
    expected = -config.damping.damping_nm_s_per_rad * dq
    expected[3] -= config.velocity_guard_damping_nm_s_per_rad * excess
    np.testing.assert_allclose(out, expected)  # pure damping: the 8 Nm command is gone


def test_velocity_guard_fractions_are_checked():
    with pytest.raises(ValueError, match="need 0 < guard < hold <= 1"):
        SafetyConfig(velocity_guard_fraction=0.96, velocity_hold_fraction=0.95)
    with pytest.raises(ValueError, match=r"braking_target_fraction=0\.97; allowed"):
        SafetyConfig(braking_target_fraction=0.97)
    with pytest.raises(ValueError, match=r"inertia_floor_kg_m2=.*allowed: 7 numbers > 0"):
        SafetyConfig(inertia_floor_kg_m2=(0.1,) * 6)
    with pytest.raises(ValueError, match=r"inertia_floor_kg_m2=.*allowed: 7 numbers > 0"):
        SafetyConfig(inertia_floor_kg_m2=(0.1,) * 6 + (math.nan,))


# -- braking margin (stage 6), on a 1-DoF model: a joint of inertia m, nothing coupled --
def _ramp_peak(tau: float, v: float, m: float) -> float:
    """Peak speed in tau's direction when ``tau`` is sent for one tick and then ramped to zero at
    1 Nm per tick, integrated tick by tick (no formula of the code under test)."""
    sign = 1.0 if tau >= 0 else -1.0
    speed, peak, t = sign * v, sign * v, abs(tau)
    while t > 0.0:
        speed += t * PERIOD_S / m
        peak = max(peak, speed)
        t -= MAX_STEP_NM
    return peak


@settings(max_examples=300)
@given(
    st.integers(0, 6),
    st.floats(-1.0, 1.0),  # speed as a fraction of the joint's limit
    st.floats(-200.0, 200.0),
    st.floats(0.003, 3.0),  # the joint's inertia, kg m^2
)
def test_a_torque_that_passes_can_be_ramped_away_before_the_joint_passes_the_target(
    joint, speed_fraction, wanted, inertia
):
    """Whatever the law asks, on every tick, the torque that comes out, ramped away from the
    next tick on, leaves the joint under the braking target in the torque's direction (or no
    faster than it already was). The state is held while the torque builds up (90 ticks at
    1 Nm per tick reach any torque the margin allows here)."""
    config = SafetyConfig()
    s = safety(config)
    target = config.braking_target_fraction * PANDA_LIMITS.joint_vel_max_rad_s[joint]
    dq = np.zeros(7)
    dq[joint] = speed_fraction * PANDA_LIMITS.joint_vel_max_rad_s[joint]
    tau = np.zeros(7)
    tau[joint] = wanted
    mass = np.eye(7)
    mass[joint, joint] = inertia
    for _ in range(90):
        out, _ = s.process(tau, Q_MID, dq, mass)
        peak = _ramp_peak(out[joint], dq[joint], inertia)
        assert peak <= max(target, abs(dq[joint])) * (1 + 1e-9) + 1e-12


def test_the_margin_leaves_small_torques_alone_and_caps_a_push_on_a_light_fast_joint():
    s = safety(SafetyConfig())
    mass = np.diag([1.0, 1.0, 0.5, 0.5, 0.05, 0.05, 0.007])
    small = np.array([0.5, -0.5, 0.25, -0.25, 0.1, -0.1, 0.05])
    out, flags = s.process(small, Q_MID, np.full(7, 0.5), mass)
    np.testing.assert_array_equal(out, small)
    assert not flags & FLAG_BRAKING_MARGIN
    s.reset(np.array([0.0, 0, 0, 0, 0, 0, 2.0]))  # joint 7 already carries 2 Nm
    dq = np.zeros(7)
    dq[6] = 0.8 * PANDA_LIMITS.joint_vel_max_rad_s[6]  # under the guard, near the target
    out, flags = s.process(np.array([0.0, 0, 0, 0, 0, 0, 2.0]), Q_MID, dq, mass)
    assert flags & FLAG_BRAKING_MARGIN
    assert 0.0 <= out[6] < 2.0


def test_reset_forgets_the_rate_history():
    s = safety()
    for _ in range(50):
        s.process(np.full(7, 10.0), Q_MID, AT_REST)
    s.reset()
    out, _ = s.process(np.zeros(7), Q_MID, AT_REST)
    np.testing.assert_array_equal(out, np.zeros(7))


# States with NaN, inf and huge values in q and dq, besides ordinary ones.
state_values = st.one_of(
    st.floats(-4.0, 4.0),
    st.sampled_from([math.nan, math.inf, -math.inf, 1e308, 0.0, -0.0]),
)
wild_states = st.tuples(
    st.lists(state_values, min_size=7, max_size=7).map(np.array),
    st.lists(state_values, min_size=7, max_size=7).map(np.array),
)


@OVERFLOW_OK
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@settings(max_examples=60)
@given(
    st.sampled_from([UNBOUND, SafetyConfig()]),
    st.lists(
        st.tuples(st.one_of(arm_states(), wild_states), torques, mass_matrices()),
        min_size=1,
        max_size=20,
    ),
)
def test_process_matches_its_plain_numpy_form_to_the_bit(config, calls):
    """``process`` (per joint, on floats) and ``process_reference`` (numpy): the same torque and
    the same flags on every call, for any input, with the same rate-limit history."""
    fast, plain = safety(config), safety(config)
    for (q, dq), tau, mass in calls:
        out, flags = fast.process(tau, q, dq, mass)
        ref, ref_flags = plain.process_reference(tau, q, dq, mass)
        assert flags == ref_flags
        np.testing.assert_array_equal(out, ref)
