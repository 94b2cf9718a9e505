"""The control loop on the twin, lockstep at 1 kHz: tracking, limits on every tick, watchdog,
bad targets, gripper, determinism and joint-space control.

Sim time is the budget here (the twin runs a few times faster than real time), so each test runs
only as many simulated seconds as its claim needs; nothing here looks at the wall clock.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np
import pytest
from robot_rl.controllers.loop import ControlLoop, LoopConfig
from robot_rl.controllers.reference import Workspace
from robot_rl.controllers.rotations import quat_exp, quat_mul
from robot_rl.controllers.targets import CartesianTarget, InvalidTargetError, JointTarget
from robot_rl.controllers.watchdog import ControlMode, WatchdogConfig
from robot_rl.sim.twin import READY_Q_RAD, PandaTwin, TwinConfig

from robot_rl.interfaces import PANDA_LIMITS, RobotModel

PERIOD_S = 0.001
READY_Q = np.asarray(READY_Q_RAD)
WS = Workspace()
BOX_LO, BOX_HI = np.asarray(WS.pos_min_m), np.asarray(WS.pos_max_m)
STREAM_EVERY = 20  # ticks between targets: a 50 Hz policy

Target = CartesianTarget | JointTarget


@dataclasses.dataclass
class Trace:
    """Per-tick record of a run: mode, TCP position (m), joint speed (rad/s), gripper width (m)."""

    mode: np.ndarray
    tcp_m: np.ndarray
    dq_rad_s: np.ndarray
    gripper_m: np.ndarray


def drive(
    loop: ControlLoop,
    seconds: float,
    target: Target | Callable[[int], Target | None] | None = None,
    every: int = STREAM_EVERY,
) -> Trace:
    """Tick for ``seconds``; send ``target`` (or ``target(tick)`` unless None) every ``every``."""
    modes, tcp, dq, grip = [], [], [], []
    for k in range(round(seconds / PERIOD_S)):
        if target is not None and k % every == 0:
            t = target(k) if callable(target) else target
            if isinstance(t, JointTarget):
                loop.set_joint_target(t)
            elif t is not None:
                loop.set_cartesian_target(t)
        status = loop.tick()
        state = loop.robot.read_state()
        modes.append(int(status.mode))
        tcp.append(state.ee_pos_m.copy())
        dq.append(state.dq_rad_s.copy())
        grip.append(state.gripper_width_m)
    return Trace(np.array(modes), np.array(tcp), np.array(dq), np.array(grip))


@pytest.fixture
def loop(twin):
    """A fresh loop on the module's twin (at the ready pose, at rest), after one tick."""
    control = ControlLoop(twin, LoopConfig())
    control.tick()
    return control


def ready_pose(twin: PandaTwin) -> tuple[np.ndarray, np.ndarray]:
    s = twin.read_state()
    return s.ee_pos_m.copy(), s.ee_quat_xyzw.copy()


def assert_limits_held(loop: ControlLoop, twin: PandaTwin) -> None:
    """Every torque the loop sent was within the torque and torque-rate limits of the arm."""
    tau = loop.telemetry.column("tau_nm")
    assert np.isfinite(tau).all()
    assert (np.abs(tau) <= PANDA_LIMITS.joint_torque_max_nm).all()
    rate = np.abs(np.diff(np.vstack((np.zeros(7), tau)), axis=0)) / PERIOD_S
    assert rate.max() <= PANDA_LIMITS.torque_rate_max_nm_per_s
    # ... and the twin agrees: it never had to clamp or rate-limit anything itself.
    assert twin.limit_violations == 0
    assert twin.max_command_rate_nm_per_s <= PANDA_LIMITS.torque_rate_max_nm_per_s


# -- tracking ------------------------------------------------------------------------------------

STEP_M = 0.05


@dataclasses.dataclass(frozen=True)
class StepRun:
    """One 2 s run of a 5 cm step in x from the ready pose, shared by the step tests."""

    tcp_m: np.ndarray  # (2000, 3)
    goal_m: np.ndarray  # (3,)
    lambda_xx_kg: float  # task-space inertia along x at the ready pose
    stiffness_x_n_per_m: float
    max_speed_m_s: float
    tau_nm: np.ndarray  # every torque the loop sent
    twin_limit_violations: int
    twin_max_rate_nm_per_s: float


@pytest.fixture(scope="module")
def step_run(module_twin) -> StepRun:
    module_twin.reset(READY_Q)
    loop = ControlLoop(module_twin, LoopConfig())
    model = module_twin.model()
    m_inv = np.linalg.inv(model.mass_matrix)
    lambda_xx = np.linalg.inv(model.jacobian @ m_inv @ model.jacobian.T)[0, 0]
    p0, q0 = ready_pose(module_twin)
    goal = p0 + np.array([STEP_M, 0.0, 0.0])
    trace = drive(loop, 2.0, CartesianTarget(goal, q0))
    return StepRun(
        trace.tcp_m,
        goal,
        float(lambda_xx),
        float(loop.config.cartesian_gains.stiffness[0]),
        loop.config.reference.max_linear_speed_m_s,
        loop.telemetry.column("tau_nm"),
        module_twin.limit_violations,
        module_twin.max_command_rate_nm_per_s,
    )


def test_step_of_5_cm_converges_to_1_mm_within_2_s(step_run):
    error = np.linalg.norm(step_run.tcp_m - step_run.goal_m, axis=1)
    assert error[-1] < 1e-3
    assert error[1000:].max() < 1e-3  # settled for the whole second half, not just passing by
    tau = step_run.tau_nm
    assert (np.abs(tau) <= PANDA_LIMITS.joint_torque_max_nm).all()
    assert np.abs(np.diff(tau, axis=0)).max() / PERIOD_S <= PANDA_LIMITS.torque_rate_max_nm_per_s
    assert step_run.twin_limit_violations == 0
    assert step_run.twin_max_rate_nm_per_s <= PANDA_LIMITS.torque_rate_max_nm_per_s


def test_step_overshoot_is_bounded_by_the_stopping_distance(step_run):
    # The reference runs to the goal at the 0.5 m/s speed limit and stops there at once. A
    # critically damped axis of natural frequency w that is moving with its reference at v when
    # the reference stops overshoots by v / (e w) (error e(t) = -v t exp(-w t)), with
    # w = sqrt(K / Lambda_xx). 10 % margin for coupling with the other axes and for discretization.
    omega = math.sqrt(step_run.stiffness_x_n_per_m / step_run.lambda_xx_kg)
    bound = 1.1 * step_run.max_speed_m_s / (math.e * omega)
    overshoot = step_run.tcp_m[:, 0].max() - step_run.goal_m[0]
    assert overshoot <= bound
    # the other axes stay put while x moves (a few mm of coupling at most)
    assert np.abs(step_run.tcp_m[:, 1:] - step_run.tcp_m[0, 1:]).max() < 5e-3


def test_step_overshoot_is_under_10_percent(step_run):
    # The figure: critical damping should overshoot little. The stopping-distance bound
    # above is the physics; this is the product requirement, 5 mm on a 5 cm step.
    assert step_run.tcp_m[:, 0].max() - step_run.goal_m[0] < 0.1 * STEP_M


@pytest.mark.parametrize("seed", [0, 1])
def test_aggressive_targets_never_break_the_limits(loop, twin, seed):
    rng = np.random.default_rng(seed)
    nominal = np.asarray(WS.nominal_quat_xyzw, dtype=float)
    next_target = 0
    for k in range(2500):
        if k == next_target:
            # random jumps anywhere in, or up to 20 cm outside, the box; tilts past the bounds;
            # stiffness anywhere in its range; at 10 to 100 Hz
            pos = rng.uniform(BOX_LO - 0.2, BOX_HI + 0.2)
            quat = quat_mul(nominal, quat_exp(rng.uniform(-1.5, 1.5, 3)))
            stiffness = None
            if rng.random() < 0.5:
                stiffness = np.concatenate((rng.uniform(0, 5000, 3), rng.uniform(0, 300, 3)))
            loop.set_cartesian_target(CartesianTarget(pos, quat, stiffness=stiffness))
            next_target = k + int(rng.integers(10, 100))
        loop.tick()
        tcp = twin.read_state().ee_pos_m
        # the reference stays in the box; the arm may overrun it by its stopping distance
        # (v / (e w) at 0.5 m/s, about 1.4 cm at the softest axis), so 2 cm of slack
        assert ((tcp >= BOX_LO - 0.02) & (tcp <= BOX_HI + 0.02)).all()
    assert loop.cartesian.clipped_count > 0  # the clipping path was exercised
    assert loop.faults == 0
    assert loop.telemetry.count == 2500 + 1  # the fixture's first tick included
    np.testing.assert_allclose(np.diff(loop.telemetry.column("stamp_s")), PERIOD_S, atol=1e-9)
    assert_limits_held(loop, twin)


def test_target_outside_the_box_is_clipped_onto_it(loop, twin):
    p0, q0 = ready_pose(twin)
    target = np.array([p0[0], p0[1], BOX_HI[2] + 0.05])  # 5 cm above the box
    trace = drive(loop, 1.5, CartesianTarget(target, q0))
    np.testing.assert_allclose(trace.tcp_m[-1], [p0[0], p0[1], BOX_HI[2]], atol=1e-3)
    assert trace.tcp_m[:, 2].max() <= BOX_HI[2] + 0.02
    assert loop.cartesian.clipped_count >= 1
    assert_limits_held(loop, twin)


def test_target_far_outside_the_workspace_is_rejected_in_the_caller(loop, twin):
    p0, q0 = ready_pose(twin)
    far = CartesianTarget(np.array([1.5, 0.0, 0.4]), q0)  # 0.75 m beyond the box
    with pytest.raises(InvalidTargetError, match="outside the workspace"):
        loop.set_cartesian_target(far)
    drive(loop, 0.05)  # the loop runs on, holding where it is
    assert loop.rejected_targets == 1
    np.testing.assert_allclose(twin.read_state().ee_pos_m, p0, atol=1e-3)


# -- watchdog ------------------------------------------------------------------------------------


def test_watchdog_holds_after_100_ms_then_damps_after_500_ms(loop, twin):
    p0, q0 = ready_pose(twin)
    # A stream moving the TCP at 5 cm/s: targets on ticks 0, 20, ..., 580, then nothing. Tick i
    # of the silent run below is tick 600 + i, i.e. 20 + i ticks after the last target.
    drive(loop, 0.6, lambda k: CartesianTarget(p0 + np.array([0.0, 0.05 * k * PERIOD_S, 0.0]), q0))
    trace = drive(loop, 2.0)
    ticks_since_target = np.arange(len(trace.mode)) + STREAM_EVERY
    first_hold = ticks_since_target[np.argmax(trace.mode == ControlMode.HOLD)]
    first_damp = ticks_since_target[np.argmax(trace.mode == ControlMode.DAMP)]
    assert abs(first_hold - 100) <= 1
    assert abs(first_damp - 500) <= 1
    # modes only escalate, never back to ACTIVE without a target
    assert (np.diff(trace.mode) >= 0).all()
    hold = trace.mode == ControlMode.HOLD
    # holding: the pose the arm had on entering HOLD, to a millimetre (it was only creeping
    # after the 5 cm/s stream had stopped 100 ms before)
    entry = trace.tcp_m[np.argmax(hold)]
    assert np.linalg.norm(trace.tcp_m[hold] - entry, axis=1).max() < 1e-3
    damp = np.flatnonzero(trace.mode == ControlMode.DAMP)
    # at rest within 1 s of damping, and stays at rest
    assert np.abs(trace.dq_rad_s[damp[0] + 1000 :]).max() < 1e-3
    assert_limits_held(loop, twin)


def test_keep_alive_refreshes_a_tracking_arm_but_never_wakes_a_holding_one(loop, twin):
    p0, q0 = ready_pose(twin)
    loop.set_cartesian_target(CartesianTarget(p0 + np.array([0.0, 0.01, 0.0]), q0))
    for _ in range(4):  # a target, then heartbeats every 80 ms: tracking for 400 ms
        loop.run_for(0.08)
        loop.keep_alive()
    assert loop.tick().mode == ControlMode.ACTIVE
    loop.run_for(0.15)  # silence: hold
    assert loop.status.mode == ControlMode.HOLD
    loop.keep_alive()
    loop.run_for(0.01)
    assert loop.status.mode == ControlMode.HOLD, "a heartbeat must not resume tracking"


def test_damping_brings_a_moving_arm_to_rest(twin):
    # Damp 60 ms after the last target, so that damping starts while the arm is still moving.
    config = LoopConfig(watchdog=WatchdogConfig(hold_after_s=0.05, damp_after_s=0.06))
    loop = ControlLoop(twin, config)
    p0, q0 = ready_pose(twin)
    goal = p0 + np.array([0.1, 0.1, -0.1])
    drive(loop, 0.2, CartesianTarget(goal, q0), every=10)  # last target on tick 190 of 200
    rest = drive(loop, 1.5)  # tick i here is 10 + i ticks after the last target
    damp = np.flatnonzero(rest.mode == ControlMode.DAMP)
    assert abs(damp[0] - 50) <= 1
    assert np.abs(rest.dq_rad_s[damp[0]]).max() > 0.05  # it really was moving
    assert np.abs(rest.dq_rad_s[damp[0] + 1000 :]).max() < 1e-3
    assert_limits_held(loop, twin)


def test_new_target_after_damping_resumes_from_where_the_arm_is(loop, twin):
    drive(loop, 0.6)  # no targets: hold, then damp
    assert loop.status.mode == ControlMode.DAMP
    here, q0 = ready_pose(twin)
    goal = here + np.array([0.0, -0.03, -0.02])
    trace = drive(loop, 1.0, CartesianTarget(goal, q0))
    assert (trace.mode == ControlMode.ACTIVE).all()
    np.testing.assert_allclose(trace.tcp_m[-1], goal, atol=1e-3)
    assert_limits_held(loop, twin)


# -- bad targets while running ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        dict(pos_m=np.array([math.nan, 0.0, 0.3])),
        dict(quat_xyzw=np.array([0.0, 0.0, math.inf, 1.0])),
        dict(stiffness=np.full(6, 1e6)),
    ],
    ids=["nan-position", "inf-quaternion", "stiffness-out-of-range"],
)
def test_bad_target_while_running_raises_and_the_loop_keeps_the_previous_one(loop, twin, bad):
    p0, q0 = ready_pose(twin)
    good = CartesianTarget(p0 + np.array([0.03, 0.02, -0.02]), q0)
    drive(loop, 0.3, good)
    with pytest.raises(InvalidTargetError):
        loop.set_cartesian_target(dataclasses.replace(good, **bad))
    assert loop.rejected_targets == 1
    np.testing.assert_array_equal(loop.cartesian.goal_pos_m, good.pos_m)
    # the loop runs on toward the last good target without it being sent again (the last one
    # went out 20 ms ago, so 60 ms more stays under the 100 ms watchdog)
    trace = drive(loop, 0.06)
    assert (trace.mode == ControlMode.ACTIVE).all()
    trace = drive(loop, 1.2, good)
    assert loop.status.rejected_targets == 1
    np.testing.assert_allclose(trace.tcp_m[-1], good.pos_m, atol=1e-3)
    np.testing.assert_array_equal(
        loop.cartesian.gains.stiffness, loop.config.cartesian_gains.stiffness
    )
    assert_limits_held(loop, twin)


def test_bad_joint_target_raises_and_is_counted(loop):
    with pytest.raises(InvalidTargetError, match="q_rad"):
        loop.set_joint_target(JointTarget(np.full(7, math.nan)))
    assert loop.rejected_targets == 1
    assert loop.tick().law == "cartesian"


def test_controller_failure_damps_and_is_counted(loop, twin, monkeypatch):
    good_model = twin.model()
    broken = RobotModel(good_model.jacobian, np.zeros((7, 7)), good_model.coriolis_nm)
    monkeypatch.setattr(twin, "model", lambda: broken)  # singular mass matrix: inversion fails
    p0, q0 = ready_pose(twin)
    loop.set_cartesian_target(CartesianTarget(p0, q0))
    for _ in range(5):
        status = loop.tick()
        assert status.mode == ControlMode.FAULT
        assert np.isfinite(status.tau_nm).all()
    assert loop.faults == 5
    assert_limits_held(loop, twin)


# -- gripper -------------------------------------------------------------------------------------


def test_gripper_move_returns_at_once_and_the_loop_keeps_ticking(loop, twin):
    p0, q0 = ready_pose(twin)
    stamp = twin.read_state().stamp_s
    speed = 0.05
    loop.gripper_move(0.02, speed)  # 6 cm at 5 cm/s: 1.2 s of sim time
    assert twin.read_state().stamp_s == stamp  # no time passed inside the call
    trace = drive(loop, 1.6, CartesianTarget(p0, q0))
    stamps = loop.telemetry.column("stamp_s")[-len(trace.mode) :]
    np.testing.assert_allclose(np.diff(stamps), PERIOD_S, atol=1e-9)  # 1 ms per tick throughout
    # the width follows the commanded speed (10 % for the fingers' tracking loop) ...
    assert (np.abs(np.diff(trace.gripper_m)) / PERIOD_S <= 1.1 * speed).all()
    assert trace.gripper_m[599] == pytest.approx(0.08 - 0.6 * speed, abs=2e-3)
    # ... and arrives once distance / speed has passed
    assert np.abs(trace.gripper_m[1300:] - 0.02).max() < 1e-3
    # meanwhile the arm kept tracking its target
    assert np.linalg.norm(trace.tcp_m - p0, axis=1).max() < 1e-3


@pytest.mark.parametrize(
    "width,speed,match",
    [
        (-0.01, 0.1, r"width_m=-0.01; allowed 0..0.08 m"),
        (0.09, 0.1, r"width_m=0.09"),
        (math.nan, 0.1, r"width_m=nan"),
        (0.04, 0.0, r"speed_m_s=0.0; allowed \(0, 0.2\] m/s"),
        (0.04, 0.5, r"speed_m_s=0.5"),
        (0.04, math.inf, r"speed_m_s=inf"),
    ],
)
def test_bad_gripper_command_is_rejected(loop, width, speed, match):
    with pytest.raises(InvalidTargetError, match=match):
        loop.gripper_move(width, speed)
    with pytest.raises(InvalidTargetError, match=match):
        loop.gripper_grasp(width, 20.0, speed)


@pytest.mark.parametrize("force", [-1.0, 141.0, math.nan])
def test_bad_grasp_force_is_rejected(loop, force):
    with pytest.raises(InvalidTargetError, match=r"grasp force_n=.*; allowed 0..140 N"):
        loop.gripper_grasp(0.0, force, 0.1)


# -- determinism ---------------------------------------------------------------------------------


def test_same_seed_same_targets_same_trajectory():
    def one_run() -> tuple[np.ndarray, np.ndarray]:
        twin = PandaTwin(TwinConfig(seed=5))
        try:
            loop = ControlLoop(twin, LoopConfig())
            rng = np.random.default_rng(9)
            p0, q0 = ready_pose(twin)

            def jumpy(_: int) -> CartesianTarget:
                return CartesianTarget(p0 + rng.uniform(-0.1, 0.1, 3), q0)

            trace = drive(loop, 1.0, jumpy, every=37)
            return loop.telemetry.column("tau_nm"), np.hstack((trace.tcp_m, trace.dq_rad_s))
        finally:
            twin.close()

    tau_a, states_a = one_run()
    tau_b, states_b = one_run()
    np.testing.assert_array_equal(tau_a, tau_b)
    np.testing.assert_array_equal(states_a, states_b)


# -- joint-space control -----------------------------------------------------------------------


def test_joint_target_is_reached(loop, twin):
    goal = READY_Q + np.array([0.3, 0.3, -0.2, 0.2, 0.3, -0.2, 0.5])  # TCP (0.33, 0.09, 0.48)
    trace = drive(loop, 2.0, JointTarget(goal))
    assert loop.status.law == "joint"
    # gravity is compensated exactly and there is no friction: the spring leaves no error
    np.testing.assert_allclose(twin.read_state().q_rad, goal, atol=1e-3)
    assert np.abs(trace.dq_rad_s[-1]).max() < 1e-2
    assert_limits_held(loop, twin)


def test_joint_target_past_a_limit_is_rejected_naming_the_joint(twin):
    start = READY_Q.copy()
    start[6] = 2.5  # joint 7 a few tenths of a radian from its 2.8973 rad limit
    twin.reset(start)
    loop = ControlLoop(twin, LoopConfig())
    loop.tick()
    for past in (3.5, PANDA_LIMITS.joint_pos_max_rad[6] - 0.05):  # past the limit, in the margin
        goal = start.copy()
        goal[6] = past
        with pytest.raises(InvalidTargetError, match=r"q_rad\[6\] \(joint 7\).*2\.7973 rad"):
            loop.set_joint_target(JointTarget(goal))
    assert loop.rejected_targets == 2
    drive(loop, 0.3)  # the arm holds where it was
    np.testing.assert_allclose(twin.read_state().q_rad, start, atol=1e-3)
    assert loop.status.law == "cartesian"


def test_switch_from_cartesian_to_joint_target_does_not_jump(loop, twin):
    p0, q0 = ready_pose(twin)
    drive(loop, 1.0, CartesianTarget(p0 + np.array([0.1, 0.1, -0.05]), q0))
    here = twin.read_state().q_rad.copy()
    trace = drive(loop, 0.3, JointTarget(here))  # "stay where you are", in joint space
    assert np.abs(trace.dq_rad_s).max() < 0.05
    np.testing.assert_allclose(twin.read_state().q_rad, here, atol=5e-3)


def test_switch_from_joint_to_cartesian_target_does_not_jump(loop, twin):
    goal = READY_Q + np.array([0.2, 0.2, -0.1, 0.1, 0.0, -0.1, 0.0])  # TCP (0.33, 0.03, 0.46)
    drive(loop, 1.0, JointTarget(goal))
    p, q = ready_pose(twin)
    trace = drive(loop, 0.3, CartesianTarget(p, q))  # "stay where you are", in task space
    assert loop.status.law == "cartesian"
    assert np.linalg.norm(trace.tcp_m - p, axis=1).max() < 1e-3


# -- lifecycle -----------------------------------------------------------------------------------


def test_restart_after_a_scene_reset_holds_the_new_pose(loop, twin):
    p0, q0 = ready_pose(twin)
    drive(loop, 0.3, CartesianTarget(p0 + np.array([0.02, 0.0, 0.0]), q0))
    q_new = READY_Q + np.array([0.2, 0.0, 0.0, 0.1, 0.0, 0.0, 0.0])
    twin.reset(q_new)
    loop.restart()
    start = twin.read_state().ee_pos_m.copy()
    trace = drive(loop, 0.3)
    assert np.linalg.norm(trace.tcp_m - start, axis=1).max() < 1e-3


class _WallClockOnlyRobot:
    """Satisfies Robot but has no step(): something a lockstep loop cannot drive."""

    limits = PANDA_LIMITS

    def read_state(self):  # pragma: no cover - never called
        raise NotImplementedError

    def command_torque(self, tau_nm):  # pragma: no cover
        raise NotImplementedError

    def gripper_move(self, width_m, speed_m_s):  # pragma: no cover
        raise NotImplementedError

    def gripper_grasp(self, width_m, force_n, speed_m_s=0.1):  # pragma: no cover
        raise NotImplementedError

    def model(self):  # pragma: no cover
        raise NotImplementedError


def test_lockstep_loop_needs_a_steppable_robot():
    with pytest.raises(TypeError, match="lockstep clock needs a robot with step"):
        ControlLoop(_WallClockOnlyRobot(), LoopConfig())


def test_background_thread_is_only_for_the_wall_clock(loop):
    with pytest.raises(RuntimeError, match="start\\(\\) runs on the wall clock"):
        loop.start()


# -- the workspace bounds the TCP, whatever a client sends (issue: hardening item 2) -----------
# Tolerance: the TCP may stray this far outside the box while braking at a face (the reference
# itself never leaves it); measured under 1.5 mm for these attacks, so 3 mm of slack.
BOX_SLACK_M = 0.003
DOWN = np.asarray(WS.nominal_quat_xyzw, dtype=float)


def assert_in_box_and_under_speed_limits(trace: Trace) -> None:
    outside = np.maximum(BOX_LO - trace.tcp_m, trace.tcp_m - BOX_HI).max()
    assert outside <= BOX_SLACK_M, f"TCP {outside * 1e3:.1f} mm outside the box"
    speed = np.abs(trace.dq_rad_s) / PANDA_LIMITS.joint_vel_max_rad_s
    assert speed.max() < 1.0, f"a joint reached {speed.max():.2f} of its speed limit"


@pytest.mark.parametrize("speed_m_s", [-1000.0, -5.0, -1e308, math.inf])
def test_absurd_twist_feedforward_is_rejected_naming_the_twist(loop, twin, speed_m_s):
    edge = np.array([BOX_LO[0], 0.0, 0.3])
    twist = np.array([speed_m_s, 0.0, 0.0, 0.0, 0.0, 0.0])
    with pytest.raises(InvalidTargetError, match="twist"):
        loop.set_cartesian_target(CartesianTarget(edge, DOWN, twist))
    assert loop.rejected_targets == 1
    p0 = twin.read_state().ee_pos_m.copy()
    drive(loop, 0.05)
    np.testing.assert_allclose(twin.read_state().ee_pos_m, p0, atol=1e-3)


@pytest.mark.parametrize("axis,side", [(0, +1), (2, +1), (2, -1)], ids=["x-far", "top", "floor"])
def test_twist_pushing_out_at_a_box_face_keeps_the_tcp_inside(loop, twin, axis, side):
    edge = 0.5 * (BOX_LO + BOX_HI)
    edge[axis] = BOX_HI[axis] if side > 0 else BOX_LO[axis]
    twist = np.zeros(6)
    twist[axis] = side * 0.9  # over the 0.5 m/s limit (scaled down), under the reject bound
    trace = drive(loop, 1.5, CartesianTarget(edge, DOWN, twist))
    assert loop.scaled_twists > 0
    assert_in_box_and_under_speed_limits(trace)
    np.testing.assert_allclose(trace.tcp_m[-1], edge, atol=3e-3)  # it got there, and stopped
    assert_limits_held(loop, twin)


def test_aiming_at_an_unreachable_corner_keeps_the_tcp_in_the_box(loop, twin):
    # The attack: with the old box this corner was unreachable gripper-down (1.9 m/s TCP,
    # joints over their speed limits, 14 cm outside the box). Now it is clipped onto a box
    # corner the arm reaches.
    trace = drive(loop, 2.5, CartesianTarget(np.array([0.75, 0.4, 0.55]), DOWN))
    assert_in_box_and_under_speed_limits(trace)
    np.testing.assert_allclose(trace.tcp_m[-1], BOX_HI, atol=3e-3)
    assert_limits_held(loop, twin)


def test_joint_target_whose_tcp_is_outside_the_box_is_rejected(loop, twin):
    far = READY_Q + np.array([1.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])  # turned aside: TCP (0.02, 0.31)
    with pytest.raises(InvalidTargetError, match="outside the workspace box"):
        loop.set_joint_target(JointTarget(far))
    assert loop.rejected_targets == 1
    p0 = twin.read_state().ee_pos_m.copy()
    drive(loop, 0.3)
    np.testing.assert_allclose(twin.read_state().ee_pos_m, p0, atol=1e-3)
    assert loop.status.law == "cartesian"


def test_joint_reference_stops_where_its_tcp_would_leave_the_box(twin):
    # A kinematics under which the straight joint path from the ready posture to a goal one
    # radian away on joint 1 bulges 0.2 m above the box's top face, though both ends lie in it.
    top = BOX_HI[2]

    def bulging_fk(q_rad: np.ndarray) -> np.ndarray:
        s = float(np.clip((q_rad[0] - READY_Q[0]) / 1.0, 0.0, 1.0))
        return np.array([0.45, 0.0, top - 0.1 + 0.3 * 4 * s * (1 - s)])

    loop = ControlLoop(twin, LoopConfig(forward_kinematics=bulging_fk))
    loop.tick()
    goal = READY_Q.copy()
    goal[0] += 1.0
    drive(loop, 1.5, JointTarget(goal))
    assert loop.joint_box_stops > 0
    reached = float(bulging_fk(loop.joint.q_rad)[2])
    assert top < reached <= top + loop.config.joint_box_tolerance_m
    # it stopped on the way: joint 1 is where the path crosses the face, not at the goal
    crossing = 0.5 * (1 - math.sqrt(1 - 4 * 0.1 / (4 * 0.3)))
    assert twin.read_state().q_rad[0] - READY_Q[0] == pytest.approx(crossing, abs=0.01)
    assert_limits_held(loop, twin)


# -- far target jumps: the reference's motion profile keeps the joints under their speed limits --
# The reference ramps up and brakes at 10 m/s^2 and slows down wherever its twist would need a
# joint faster than 0.5 of its limit, so the arm stays under every joint's speed limit and the
# TCP within BOX_SLACK_M of the box. Measured over the 96 jumps below: at most 0.98 of a joint's
# limit (a wrist self-motion the torque safety's velocity guard catches, not the reference's
# speed: a 0.4 fraction gives the same peak) and 2.2 mm out; the diagonal run 0.74 and 1.6 mm.
# Before the profile: 1.19 of a joint's limit, and the diagonal run into the low near corner
# strayed 13.5 mm out across its direction of motion.
JUMP_REPEAT_EVERY = 50  # a 20 Hz client repeating its goal (the watchdog holds after 100 ms)


def far_jumps(seed: int, count: int) -> list[tuple[CartesianTarget, float]]:
    """(target, seconds to stay on it): every other one a box corner (the kinds that failed), the
    rest anywhere in the box; tilted up to 0.4 rad and turned up to 0.8 rad about the tool axis."""
    rng = np.random.default_rng(seed)
    jumps = []
    for i in range(count):
        if i % 2 == 0:
            pos = np.where(rng.random(3) < 0.5, BOX_LO, BOX_HI)
        else:
            pos = rng.uniform(BOX_LO, BOX_HI)
        quat = quat_mul(DOWN, quat_exp(rng.uniform(-1.0, 1.0, 3) * [0.4, 0.4, 0.8]))
        jumps.append((CartesianTarget(pos, quat), float(rng.uniform(0.3, 1.0))))
    return jumps


def run_far_jumps(loop: ControlLoop, jumps: list[tuple[CartesianTarget, float]]) -> Trace:
    traces = [drive(loop, seconds, target, every=JUMP_REPEAT_EVERY) for target, seconds in jumps]
    return Trace(*(np.concatenate([getattr(t, f.name) for t in traces])
                   for f in dataclasses.fields(Trace)))  # fmt: skip


def test_far_target_jumps_keep_joint_speeds_and_the_tcp_within_limits(loop, twin):
    trace = run_far_jumps(loop, far_jumps(seed=0, count=6))
    assert (trace.mode == int(ControlMode.ACTIVE)).all()  # no hold, no damping: it tracked
    assert_in_box_and_under_speed_limits(trace)
    assert loop.faults == 0
    assert_limits_held(loop, twin)


@pytest.mark.integration
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_many_far_target_jumps_keep_joint_speeds_and_the_tcp_within_limits(loop, twin, seed):
    trace = run_far_jumps(loop, far_jumps(seed=seed, count=30))
    assert_in_box_and_under_speed_limits(trace)
    assert loop.faults == 0
    assert_limits_held(loop, twin)


def test_full_speed_diagonal_into_the_low_near_corner_stays_in_the_box(loop, twin):
    corner = BOX_LO.copy()  # (0.3, -0.25, 0.015): the arm folds, several joints run fast
    trace = drive(loop, 2.5, CartesianTarget(corner, DOWN), every=JUMP_REPEAT_EVERY)
    assert_in_box_and_under_speed_limits(trace)
    np.testing.assert_allclose(trace.tcp_m[-1], corner, atol=1e-3)
    assert loop.cartesian.joint_slowed_ticks > 0  # the joint-speed cap did the work
    assert_limits_held(loop, twin)
