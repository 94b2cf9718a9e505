"""Reference pipeline: workspace clipping, speed limits of the 1 kHz reference, gain smoothing."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from robot_rl.controllers.gains import CartesianGains
from robot_rl.controllers.reference import (
    GRIPPER_DOWN_QUAT_XYZW,
    CartesianReferenceGenerator,
    JointReferenceGenerator,
    ReferenceConfig,
    Workspace,
)
from robot_rl.controllers.rotations import quat_conj, quat_exp, quat_log, quat_mul
from robot_rl.controllers.targets import CartesianTarget, InvalidTargetError

PERIOD_S = 0.001
WS = Workspace()
LO, HI = np.asarray(WS.pos_min_m), np.asarray(WS.pos_max_m)
NOMINAL = np.asarray(GRIPPER_DOWN_QUAT_XYZW, dtype=float)
CENTRE = 0.5 * (LO + HI)


def down_rotated(rotvec_nominal: np.ndarray) -> np.ndarray:
    """The gripper-down orientation turned by a rotation vector expressed in its own frame."""
    return quat_mul(NOMINAL, quat_exp(np.asarray(rotvec_nominal, dtype=float)))


def rotation_from_nominal(quat: np.ndarray) -> np.ndarray:
    return quat_log(quat_mul(quat_conj(NOMINAL), quat))


def rotation_angle(a: np.ndarray, b: np.ndarray) -> float:
    """Angle (rad) of the rotation from b to a; via the log map, which stays precise near 0."""
    return float(np.linalg.norm(quat_log(quat_mul(a, quat_conj(b)))))


def generator(config: ReferenceConfig | None = None, gains: CartesianGains | None = None):
    gen = CartesianReferenceGenerator(
        config or ReferenceConfig(), PERIOD_S, gains or CartesianGains()
    )
    gen.reset(CENTRE, NOMINAL, 0.0)
    return gen


# -- workspace -----------------------------------------------------------------------------------


def test_pose_inside_the_workspace_is_unchanged():
    quat = down_rotated([0.3, -0.2, 1.0])
    pos, q, clipped = WS.clip(CENTRE, quat)
    assert not clipped
    np.testing.assert_array_equal(pos, CENTRE)
    np.testing.assert_array_equal(q, quat)


@pytest.mark.parametrize("axis", range(3), ids=["x", "y", "z"])
@pytest.mark.parametrize("side", [-1, 1], ids=["below", "above"])
def test_position_outside_the_box_is_clipped_onto_its_face(axis, side):
    pos = CENTRE.copy()
    pos[axis] = (LO if side < 0 else HI)[axis] + side * 0.1  # 10 cm out, inside the reject margin
    clipped_pos, _, clipped = WS.clip(pos, NOMINAL)
    assert clipped
    expected = CENTRE.copy()
    expected[axis] = (LO if side < 0 else HI)[axis]
    np.testing.assert_array_equal(clipped_pos, expected)


def test_position_just_inside_the_reject_margin_is_clipped():
    pos = np.array([HI[0] + WS.reject_margin_m - 0.01, 0.0, 0.3])
    clipped_pos, _, clipped = WS.clip(pos, NOMINAL)
    assert clipped
    np.testing.assert_array_equal(clipped_pos, [HI[0], 0.0, 0.3])


@pytest.mark.parametrize(
    "pos",
    [
        [HI[0] + WS.reject_margin_m + 0.01, 0.0, 0.3],
        [0.5, LO[1] - 1.0, 0.3],
        [0.5, 0.0, -1.0],  # under the table
        [5.0, 5.0, 5.0],  # a position given in the wrong unit
    ],
)
def test_position_beyond_the_reject_margin_is_rejected(pos):
    with pytest.raises(InvalidTargetError, match=r"pos_m=.* outside the workspace box"):
        WS.clip(np.asarray(pos), NOMINAL)


@pytest.mark.parametrize("axis", range(2), ids=["about-x", "about-y"])
def test_tilt_beyond_the_bound_is_clipped_to_the_bound(axis):
    rot = np.zeros(3)
    rot[axis] = -1.2  # beyond the 0.7 rad bound
    _, quat, clipped = WS.clip(CENTRE, down_rotated(rot))
    assert clipped
    expected = np.zeros(3)
    expected[axis] = -WS.rot_bound_rad[axis]
    np.testing.assert_allclose(rotation_from_nominal(quat), expected, atol=1e-12)


def test_yaw_is_free_up_to_a_half_turn():
    _, quat, clipped = WS.clip(CENTRE, down_rotated([0.0, 0.0, 3.0]))
    assert not clipped
    np.testing.assert_allclose(rotation_from_nominal(quat), [0.0, 0.0, 3.0], atol=1e-12)


_unit = st.floats(-1.0, 1.0)


@given(
    st.lists(st.floats(-0.24, 0.24), min_size=3, max_size=3),
    st.lists(_unit, min_size=4, max_size=4).filter(lambda v: np.linalg.norm(v) > 0.1),
)
def test_clipped_pose_always_lies_inside_the_workspace(outside, quat_values):
    pos = np.where(np.asarray(outside) >= 0, HI + np.asarray(outside), LO + np.asarray(outside))
    quat = np.asarray(quat_values) / np.linalg.norm(quat_values)
    clipped_pos, clipped_quat, _ = WS.clip(pos, quat)
    assert ((clipped_pos >= LO) & (clipped_pos <= HI)).all()
    assert (
        np.abs(rotation_from_nominal(clipped_quat)) <= np.asarray(WS.rot_bound_rad) + 1e-9
    ).all()
    assert np.linalg.norm(clipped_quat) == pytest.approx(1.0, abs=1e-12)


# -- the 1 kHz reference ------------------------------------------------------------------------


@st.composite
def target_streams(draw: st.DrawFn) -> list[tuple[int, CartesianTarget]]:
    """(ticks until the next target, target) pairs: random jumps, tilts, and twists."""
    stream = []
    for _ in range(draw(st.integers(1, 6))):
        gap = draw(st.integers(1, 150))
        pos = np.array([draw(st.floats(lo - 0.2, hi + 0.2)) for lo, hi in zip(LO, HI, strict=True)])
        rot = np.array([draw(st.floats(-2.0, 2.0)) for _ in range(3)])
        twist = None
        if draw(st.booleans()):
            twist = np.array([draw(st.floats(-3.0, 3.0)) for _ in range(6)])
        stream.append((gap, CartesianTarget(pos, down_rotated(rot), twist)))
    return stream


@settings(max_examples=40)
@given(target_streams())
def test_reference_never_exceeds_the_speed_and_acceleration_limits(stream):
    config = ReferenceConfig()
    gen = generator(config)
    prev_pos, prev_quat = CENTRE.copy(), NOMINAL.copy()
    k = 0
    for gap, target in [*stream, (200, None)]:  # 200 more ticks after the last target
        if target is not None:
            gen.set_goal(target, k * PERIOD_S)
        for _ in range(gap):
            k += 1
            ref = gen.step(k * PERIOD_S)
            lin_step = np.linalg.norm(ref.pos_m - prev_pos)
            ang_step = rotation_angle(ref.quat_xyzw, prev_quat)
            assert lin_step <= config.max_linear_speed_m_s * PERIOD_S * (1 + 1e-9)
            assert ang_step <= config.max_angular_speed_rad_s * PERIOD_S * (1 + 1e-9)
            assert np.linalg.norm(ref.twist[:3]) <= config.max_linear_speed_m_s * (1 + 1e-9)
            assert np.linalg.norm(ref.twist[3:]) <= config.max_angular_speed_rad_s * (1 + 1e-9)
            assert (np.abs(ref.accel[:3]) <= config.max_linear_accel_m_s2).all()
            assert (np.abs(ref.accel[3:]) <= config.max_angular_accel_rad_s2).all()
            # the reference twist is the finite difference of the reference pose
            np.testing.assert_allclose(ref.twist[:3] * PERIOD_S, ref.pos_m - prev_pos, atol=1e-12)
            assert np.linalg.norm(ref.twist[3:]) * PERIOD_S == pytest.approx(ang_step, abs=1e-12)
            assert np.linalg.norm(ref.quat_xyzw) == pytest.approx(1.0, abs=1e-9)
            prev_pos, prev_quat = ref.pos_m.copy(), ref.quat_xyzw.copy()


def test_reference_reaches_a_clipped_goal_and_stays():
    gen = generator()
    goal = CartesianTarget(np.array([HI[0] + 0.1, 0.1, 0.2]), down_rotated([0.0, 1.0, 0.5]))
    assert gen.set_goal(goal, 0.0)
    assert gen.clipped_count == 1
    # 0.43 m at 0.5 m/s and 0.86 rad at 1.5 rad/s: under a second; give it two.
    for k in range(1, 2001):
        ref = gen.step(k * PERIOD_S)
    np.testing.assert_allclose(ref.pos_m, [HI[0], 0.1, 0.2], atol=1e-12)
    np.testing.assert_allclose(
        rotation_from_nominal(ref.quat_xyzw), [0.0, WS.rot_bound_rad[1], 0.5], atol=1e-9
    )
    np.testing.assert_allclose(ref.twist, np.zeros(6), atol=1e-9)


def test_reference_holds_still_without_targets():
    gen = generator()
    for k in range(1, 500):
        ref = gen.step(k * PERIOD_S)
        np.testing.assert_array_equal(ref.pos_m, CENTRE)
        assert rotation_angle(ref.quat_xyzw, NOMINAL) == 0.0
        np.testing.assert_array_equal(ref.twist, np.zeros(6))


def test_far_target_is_rejected_and_the_reference_keeps_its_goal():
    gen = generator()
    with pytest.raises(InvalidTargetError, match="outside the workspace box"):
        gen.set_goal(CartesianTarget(np.array([2.0, 0.0, 0.3]), NOMINAL), 0.0)
    np.testing.assert_array_equal(gen.goal_pos_m, CENTRE)
    np.testing.assert_array_equal(gen.step(PERIOD_S).pos_m, CENTRE)


# -- gain smoothing ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "new_stiffness",
    [
        [5000.0, 5000.0, 5000.0, 300.0, 300.0, 300.0],
        [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        [100.0, 4000.0, 2000.0, 10.0, 290.0, 150.0],
    ],
    ids=["to-max", "to-zero", "mixed"],
)
def test_stiffness_changes_follow_a_first_order_filter(new_stiffness):
    config = ReferenceConfig()
    gen = generator(config)
    goal = np.asarray(new_stiffness)
    gen.set_goal(CartesianTarget(CENTRE, NOMINAL, stiffness=goal), 0.0)
    # Discrete first-order filter: each tick closes alpha = dt / (tau + dt) of the remaining gap.
    alpha = PERIOD_S / (config.gain_time_constant_s + PERIOD_S)
    k_prev = CartesianGains().stiffness
    tau_ticks = round(config.gain_time_constant_s / PERIOD_S)
    for k in range(1, 5 * tau_ticks + 1):
        gen.step(k * PERIOD_S)
        k_now = gen.gains.stiffness
        gap = np.abs(goal - k_prev)
        assert (np.abs(k_now - k_prev) <= alpha * gap + 1e-6).all()  # no jump bigger than alpha
        assert (np.abs(goal - k_now) <= gap).all()  # monotone: never overshoots the new value
        k_prev = k_now
    # After five time constants at most e^-5 (0.7 %) of the step is left.
    step = np.abs(goal - CartesianGains().stiffness)
    assert (np.abs(goal - gen.gains.stiffness) <= 0.01 * step + 1e-9).all()


def test_stiffness_settles_exactly_on_the_goal():
    gen = generator()
    goal = np.array([1000.0, 1000.0, 1000.0, 50.0, 50.0, 50.0])
    gen.set_goal(CartesianTarget(CENTRE, NOMINAL, stiffness=goal), 0.0)
    for k in range(1, 3001):
        gen.step(k * PERIOD_S)
    np.testing.assert_array_equal(gen.gains.stiffness, goal)


def test_target_without_stiffness_keeps_the_gains():
    gen = generator()
    gen.set_goal(CartesianTarget(CENTRE + 0.01, NOMINAL), 0.0)
    for k in range(1, 100):
        gen.step(k * PERIOD_S)
    np.testing.assert_array_equal(gen.gains.stiffness, CartesianGains().stiffness)


# -- joint reference -----------------------------------------------------------------------------

Q_MIN = np.array([-2.8, -1.6, -2.8, -3.0, -2.8, 0.1, -2.8])
Q_MAX = np.array([2.8, 1.6, 2.8, -0.2, 2.8, 3.6, 2.8])
MAX_SPEED = np.array([1.0, 1.0, 1.0, 1.0, 1.5, 1.5, 1.5])


@settings(max_examples=20)
@given(st.lists(st.lists(st.floats(-4.0, 4.0), min_size=7, max_size=7), min_size=1, max_size=4))
def test_joint_reference_respects_speed_and_position_limits(goals):
    gen = JointReferenceGenerator(Q_MIN, Q_MAX, MAX_SPEED, PERIOD_S)
    start = 0.5 * (Q_MIN + Q_MAX)
    gen.reset(start)
    prev = start
    for goal in goals:
        gen.set_goal(np.asarray(goal))
        for _ in range(300):
            q, dq = gen.step()
            assert (np.abs(q - prev) <= MAX_SPEED * PERIOD_S * (1 + 1e-12)).all()
            np.testing.assert_allclose(dq * PERIOD_S, q - prev, atol=1e-15)
            assert ((q >= Q_MIN - 1e-12) & (q <= Q_MAX + 1e-12)).all()
            prev = q


def test_joint_reference_reaches_a_clipped_goal():
    gen = JointReferenceGenerator(Q_MIN, Q_MAX, MAX_SPEED, PERIOD_S)
    gen.reset(np.zeros(7) + np.array([0, 0, 0, -1.0, 0, 1.0, 0]))
    gen.set_goal(np.array([0.5, -0.5, 3.5, 0.0, 0.2, 0.5, -3.5]))
    for _ in range(5000):
        q, dq = gen.step()
    np.testing.assert_allclose(q, [0.5, -0.5, 2.8, -0.2, 0.2, 0.5, -2.8], atol=1e-12)
    np.testing.assert_array_equal(dq, np.zeros(7))
    assert math.isclose(float(np.abs(q).max()), 2.8)


# -- the motion profile --------------------------------------------------------------------------

# A box so large that it never brakes the reference: these tests look at the profile alone.
OPEN = ReferenceConfig(workspace=Workspace(pos_min_m=(-5.0, -5.0, -5.0), pos_max_m=(5.0, 5.0, 5.0)))


def run_profile(gen, ticks: int, start_tick: int = 0, **step_kwargs):
    """(positions (ticks, 3), linear velocities (ticks, 3)) over ``ticks`` more ticks."""
    pos, vel = [], []
    for k in range(start_tick + 1, start_tick + ticks + 1):
        ref = gen.step(k * PERIOD_S, **step_kwargs)
        pos.append(ref.pos_m.copy())
        vel.append(ref.twist[:3].copy())
    return np.array(pos), np.array(vel)


def assert_velocity_changes_within(vel: np.ndarray, v_before: np.ndarray, accel: float) -> None:
    dv = np.diff(np.vstack((v_before, vel)), axis=0)
    assert np.linalg.norm(dv, axis=1).max() <= accel * PERIOD_S * (1 + 1e-9)


def test_far_jump_ramps_up_brakes_and_stops_on_the_goal():
    cfg = OPEN
    gen = generator(cfg)
    goal = CENTRE + np.array([0.2, 0.0, 0.0])
    gen.set_goal(CartesianTarget(goal, NOMINAL), 0.0)
    pos, vel = run_profile(gen, 700)
    assert_velocity_changes_within(vel, np.zeros(3), cfg.profile_accel_m_s2)
    speed = np.linalg.norm(vel, axis=1)
    assert speed.max() <= cfg.max_linear_speed_m_s * (1 + 1e-9)
    assert speed.max() >= 0.99 * cfg.max_linear_speed_m_s  # it does reach full speed
    # straight along x, never past the goal, and at rest on it
    np.testing.assert_allclose(pos[:, 1:], np.tile(CENTRE[1:], (len(pos), 1)), atol=1e-12)
    assert (np.diff(pos[:, 0]) >= -1e-12).all()  # (rounding)
    assert pos[:, 0].max() <= goal[0] + 1e-12
    np.testing.assert_allclose(pos[-1], goal, atol=1e-12)
    assert speed[-1] == 0.0
    # Trapezoid: 50 ms up to 0.5 m/s at 10 m/s^2 (12.5 mm), 175 mm at 0.5 m/s (350 ms), 50 ms
    # down: 450 ms; a tick of discretisation each way and the 100 ms segment pacing it follows
    # do not change that by more than 10 ms.
    arrived = int(np.argmax(np.linalg.norm(pos - goal, axis=1) < 1e-9)) + 1
    assert 440 <= arrived <= 460


def test_small_step_from_rest_completes_within_its_target_period_plus_braking():
    # The env's 2 cm step at 10 Hz: the segment asks for 0.2 m/s over 100 ms; ramping up and
    # braking at 10 m/s^2 (20 ms each at 0.2 m/s) delays arrival by at most the braking time.
    cfg = OPEN
    gen = generator(cfg)
    goal = CENTRE + np.array([0.0, 0.02, 0.0])
    gen.set_goal(CartesianTarget(goal, NOMINAL), 0.0)
    pos, vel = run_profile(gen, 200)
    assert_velocity_changes_within(vel, np.zeros(3), cfg.profile_accel_m_s2)
    assert np.linalg.norm(pos[119] - goal) < 1e-9  # there by 120 ms
    assert np.linalg.norm(pos[99] - goal) < 2e-3  # within 2 mm at the period's end
    assert pos[:, 1].max() <= goal[1] + 1e-12


def test_a_new_goal_behind_a_moving_reference_turns_it_around_without_a_jolt():
    cfg = OPEN
    gen = generator(cfg)
    gen.set_goal(CartesianTarget(CENTRE + np.array([0.3, 0.0, 0.0]), NOMINAL), 0.0)
    _, vel0 = run_profile(gen, 200)
    assert np.linalg.norm(vel0[-1]) == pytest.approx(cfg.max_linear_speed_m_s)  # full speed
    turn_at = gen.step(0.2 + PERIOD_S).pos_m.copy()
    v_turn = gen.step(0.2 + 2 * PERIOD_S).twist[:3].copy()
    back = CENTRE - np.array([0.1, 0.0, 0.0])
    gen.set_goal(CartesianTarget(back, NOMINAL), 0.2 + 2 * PERIOD_S)
    pos, vel = run_profile(gen, 1500, start_tick=202)
    assert_velocity_changes_within(vel, v_turn, cfg.profile_accel_m_s2)
    # It runs on for at most the stopping distance v^2 / (2 a) (12.5 mm at 0.5 m/s), then back.
    v = float(np.linalg.norm(v_turn))
    assert pos[:, 0].max() - turn_at[0] <= v * v / (2 * cfg.profile_accel_m_s2) + 1e-3
    np.testing.assert_allclose(pos[-1], back, atol=1e-12)


def test_the_jacobian_caps_the_speed_at_a_fraction_of_the_joint_limits():
    # A toy arm whose joint i moves task axis i one to one (joint 7 does nothing): joint 1 may
    # turn at 0.4 rad/s, so with joint_speed_fraction 0.5 the reference crosses x at 0.2 m/s.
    cfg = OPEN
    gen = generator(cfg)
    jacobian = np.hstack((np.eye(6), np.zeros((6, 1))))
    limits = np.array([0.4, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0])
    goal = CENTRE + np.array([0.2, 0.0, 0.0])
    gen.set_goal(CartesianTarget(goal, NOMINAL), 0.0)
    pos, vel = run_profile(gen, 1500, jacobian=jacobian, joint_speed_max_rad_s=limits)
    allowed = cfg.joint_speed_fraction * limits[0]
    assert np.abs(vel[:, 0]).max() <= allowed * (1 + 1e-9)
    assert np.abs(vel[:, 0]).max() >= 0.99 * allowed
    assert gen.joint_slowed_ticks > 0
    assert_velocity_changes_within(vel, np.zeros(3), cfg.profile_accel_m_s2)
    np.testing.assert_allclose(pos[-1], goal, atol=1e-12)


def test_braking_at_a_box_corner_keeps_the_direction_of_motion():
    # A diagonal run into the low near corner: braking at the faces scales the whole step, so
    # the reference stays on the straight line from its start to the corner.
    gen = generator()
    gen.set_goal(CartesianTarget(LO.copy(), NOMINAL), 0.0)
    pos, _ = run_profile(gen, 2000)
    direction = (LO - CENTRE) / np.linalg.norm(LO - CENTRE)
    offsets = pos - CENTRE
    off_line = offsets - np.outer(offsets @ direction, direction)
    assert np.linalg.norm(off_line, axis=1).max() < 1e-9
    np.testing.assert_allclose(pos[-1], LO, atol=1e-12)
    assert gen.braked_ticks > 0


@settings(max_examples=6)
@given(st.integers(0, 2**32 - 1))
def test_the_float_generator_follows_the_plain_numpy_one(seed):
    """``CartesianReferenceGenerator`` (Python floats) against ``PlainCartesianReferenceGenerator``
    (numpy, the specification): a random stream of targets (inside and outside the box, with and
    without twist, new stiffness), late targets, brakes to rest and resets, with the Jacobian's
    joint-speed check; the same reference each tick to float rounding and the same counters.

    Rounding: the float form sums its 3-vector norms in another order than the BLAS does, so the
    two differ in the last bits. ``braked_ticks`` counts ticks the box braked, dropped or stopped
    a step (never a step changed by rounding alone, (p + s) - p != s), so both count the same."""
    from robot_rl.controllers.plain import PlainCartesianReferenceGenerator

    rng = np.random.default_rng(seed)
    cfg = ReferenceConfig()
    fast = CartesianReferenceGenerator(cfg, PERIOD_S, CartesianGains())
    plain = PlainCartesianReferenceGenerator(cfg, PERIOD_S, CartesianGains())
    jacobian = rng.normal(0.0, 0.5, (6, 7))
    speed_max = np.full(7, 1.0)
    now = 0.0
    for gen in (fast, plain):
        gen.reset(CENTRE, NOMINAL, now)
    out: dict[str, list[np.ndarray]] = {"fast": [], "plain": []}
    for _ in range(300):
        now += PERIOD_S
        event = rng.random()
        if event < 0.04:
            pos = CENTRE + rng.uniform(-0.3, 0.3, 3)  # some outside the box: clipped
            quat = down_rotated(rng.normal(0.0, 0.4, 3))
            twist = rng.normal(0.0, 0.2, 6) if rng.random() < 0.5 else None
            stiffness = rng.uniform(100.0, 300.0, 6) if rng.random() < 0.2 else None
            target = CartesianTarget(pos, quat, twist, stiffness)
            assert fast.set_goal(target, now) == plain.set_goal(target, now)
        elif event < 0.05:
            fast.brake_to_rest(now)
            plain.brake_to_rest(now)
        elif event < 0.055:
            pose = (CENTRE + rng.uniform(-0.05, 0.05, 3), down_rotated(rng.normal(0.0, 0.2, 3)))
            fast.reset(*pose, now)
            plain.reset(*pose, now)
        for name, gen in (("fast", fast), ("plain", plain)):
            ref = gen.step(now, jacobian, speed_max)
            out[name].append(
                np.concatenate(
                    [ref.pos_m, ref.quat_xyzw, ref.twist, ref.accel, gen.gains.stiffness]
                )
            )
    a, b = np.array(out["fast"]), np.array(out["plain"])
    np.testing.assert_allclose(a[:, :7], b[:, :7], rtol=0, atol=1e-12)  # pose: m, unit quaternion
    np.testing.assert_allclose(a[:, 7:13], b[:, 7:13], rtol=0, atol=1e-9)  # twist
    np.testing.assert_allclose(a[:, 13:19], b[:, 13:19], rtol=0, atol=1e-6)  # accel: (d/dt)^2
    np.testing.assert_array_equal(a[:, 19:], b[:, 19:])  # stiffness
    assert fast.clipped_count == plain.clipped_count
    assert fast.joint_slowed_ticks == plain.joint_slowed_ticks
    assert fast.braked_ticks == plain.braked_ticks
    np.testing.assert_allclose(fast.goal_pos_m, plain.goal_pos_m, rtol=0, atol=1e-12)


# -- acceleration feedforward ---------------------------------------------------------------------


def _circle_on_a_jittered_clock(gen, with_twist: bool, seed: int = 0):
    """Stream a 5 cm, 0.5 Hz horizontal circle around CENTRE as 100 Hz targets, stepping the
    reference on a clock that jitters as a robot-paced loop's does (0.3-1.7 ms between ticks,
    mean 1 ms). Returns (reference accelerations (n, 6), radial unit vectors (n, 3)) after the
    first half revolution."""
    rng = np.random.default_rng(seed)
    r, w = 0.05, 2 * math.pi * 0.5
    centre = CENTRE
    start = centre + np.array([r, 0.0, 0.0])
    gen.reset(start, NOMINAL, 0.0)
    now, next_target, accels, radial = 0.0, 0.0, [], []
    while now < 3.0:
        now += PERIOD_S * rng.uniform(0.3, 1.7)
        if now >= next_target:
            t = next_target
            pos = centre + r * np.array([math.cos(w * t), math.sin(w * t), 0.0])
            twist = None
            if with_twist:
                twist = np.r_[r * w * np.array([-math.sin(w * t), math.cos(w * t), 0.0]), 0, 0, 0]
            gen.set_goal(CartesianTarget(pos, NOMINAL, twist), now)
            next_target += 0.01
        ref = gen.step(now)
        if now > 1.0:
            accels.append(ref.accel.copy())
            d = ref.pos_m - centre
            radial.append(d / np.linalg.norm(d))
    return np.array(accels), np.array(radial)


@pytest.mark.parametrize("plain", [False, True], ids=["float", "plain"])
def test_a_smooth_path_on_a_jittery_clock_feeds_forward_its_own_acceleration(plain):
    """Along twist-given (Hermite) segments the acceleration fed forward is the path's, here the
    circle's centripetal r w^2 (0.49 m/s^2) pointing inward, however the tick's clock jitters; the
    profile's own corrections toward the segment (bang-bang at the acceleration limit on such a
    clock) are not fed forward: they swung the torque by 20-40 Nm a tick on franky-sim."""
    from robot_rl.controllers.plain import PlainCartesianReferenceGenerator

    cls = PlainCartesianReferenceGenerator if plain else CartesianReferenceGenerator
    gen = cls(OPEN, PERIOD_S, CartesianGains())
    accel, radial = _circle_on_a_jittered_clock(gen, with_twist=True)
    centripetal = 0.05 * (2 * math.pi * 0.5) ** 2
    inward = -np.einsum("ij,ij->i", accel[:, :3], radial)
    assert np.abs(inward - centripetal).max() < 0.25 * centripetal
    assert np.abs(accel[:, 2]).max() < 1e-9 and np.abs(accel[:, 3:]).max() < 1e-9
    # no tick-to-tick swing: the path's acceleration turns with the circle, 0.49 m/s^2 * w per s
    assert np.abs(np.diff(accel[:, :3], axis=0)).max() < 0.1


@pytest.mark.parametrize("tau_s", [0.0, 0.02], ids=["twin-unfiltered", "franka-20ms"])
@pytest.mark.parametrize("plain", [False, True], ids=["float", "plain"])
def test_straight_segments_feed_forward_the_references_own_acceleration_and_never_brake(
    plain, tau_s
):
    """Targets without twist are followed along straight segments, and the acceleration fed
    forward is the reference's own change of speed (its ramps and brakes) through the
    first-order filter (``accel_feedforward_time_constant_s``), within the bound.
    Inside the box the box brake never acts: a step changed by float rounding alone,
    (p + s) - p != s, once counted as braked on nearly every tick."""
    from robot_rl.controllers.plain import PlainCartesianReferenceGenerator

    cls = PlainCartesianReferenceGenerator if plain else CartesianReferenceGenerator
    cfg = ReferenceConfig(accel_feedforward_time_constant_s=tau_s)
    gen = cls(cfg, PERIOD_S, CartesianGains())
    gen.reset(CENTRE, NOMINAL, 0.0)
    gen.set_goal(CartesianTarget(CENTRE + np.array([0.05, -0.03, 0.02]), NOMINAL), 0.0)
    twist, accel = [np.zeros(6)], []
    for k in range(1, 400):
        ref = gen.step(k * PERIOD_S)
        twist.append(ref.twist.copy())
        accel.append(ref.accel.copy())
    raw = np.diff(np.array(twist), axis=0) / PERIOD_S  # the reference's own acceleration
    alpha = PERIOD_S / (cfg.accel_feedforward_time_constant_s + PERIOD_S)
    bound = np.array([cfg.max_linear_accel_m_s2] * 3 + [cfg.max_angular_accel_rad_s2] * 3)
    expected, filtered = [], np.zeros(6)
    for a in raw:  # first-order filter, then the bound
        filtered = filtered + alpha * (a - filtered)
        expected.append(np.clip(filtered, -bound, bound))
    np.testing.assert_allclose(np.array(accel), np.array(expected), rtol=0, atol=1e-6)
    # it ramped up and braked: both signs fed forward, and it came to rest with nothing fed
    assert np.array(accel)[:, 0].max() > 0.5 and np.array(accel)[:, 0].min() < -0.5
    assert np.abs(np.array(accel)[-1]).max() < 1e-3
    assert gen.braked_ticks == 0


@pytest.mark.parametrize("plain", [False, True], ids=["float", "plain"])
def test_a_brake_to_rest_feeds_its_deceleration_forward_until_rest_and_nothing_after(plain):
    """The watchdog's hold (``brake_to_rest``): the constant deceleration to rest is fed forward
    while the reference slows; once it is at rest the feedforward eases to nothing through the
    reference's filter (``accel_feedforward_time_constant_s``, the Franka backend's 20 ms),
    never a step, never a push on."""
    from robot_rl.controllers.plain import PlainCartesianReferenceGenerator
    from robot_rl.hardware.franka_backend import FRANKA_ACCEL_FEEDFORWARD_TIME_CONSTANT_S

    cls = PlainCartesianReferenceGenerator if plain else CartesianReferenceGenerator
    cfg = replace(OPEN, accel_feedforward_time_constant_s=FRANKA_ACCEL_FEEDFORWARD_TIME_CONSTANT_S)
    gen = cls(cfg, PERIOD_S, CartesianGains())
    gen.reset(CENTRE, NOMINAL, 0.0)
    v = np.array([0.1, 0.0, 0.0, 0.0, 0.0, 0.0])
    k = 0
    for k in range(1, 100):  # a straight run up to 0.1 m/s along x, twist-given
        t = k * PERIOD_S
        if k % 10 == 1:
            gen.set_goal(CartesianTarget(CENTRE + v[:3] * (t + 0.01), NOMINAL, v), t)
        gen.step(t)
    gen.brake_to_rest(k * PERIOD_S)
    accel, speed = [], []
    for j in range(k + 1, k + 200):
        ref = gen.step(j * PERIOD_S)
        accel.append(ref.accel[0])
        speed.append(ref.twist[0])
    accel, speed = np.array(accel), np.array(speed)
    braking = speed > 1e-6
    assert braking[:5].all() and not braking[-50:].any()  # it slowed and came to rest
    assert (accel[braking][1:-1] < -0.1).all()  # the deceleration was fed forward
    at_rest = accel[~braking]
    assert (np.diff(np.abs(at_rest)) <= 1e-12).all() and (at_rest <= 0.0).all()  # it eases off
    assert abs(at_rest[10]) < 0.7 * abs(accel).max()  # from the tick it rests (20 ms filter)
    assert abs(at_rest[-1]) < 0.01 * abs(accel).max()
