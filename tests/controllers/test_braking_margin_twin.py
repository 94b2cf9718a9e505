"""The torque safety's braking margin on the twin: a law that pushes one joint as hard as the arm
allows (a thrash, a sign error, a runaway integral) cannot carry that joint past its speed limit.

Before the margin, the velocity guard cut such a torque only once the joint was fast, and the
1000 Nm/s rate limit then took up to 87 ms to remove it: full torque took joints 1-3 to 1.2x their
limit, and the wrist joints to the twin's own clamp at 1.0x. Measured with the margin (0.9 target):
at most 0.91x, for a constant, a positive-feedback and a sign-flipping push.
"""

from __future__ import annotations

import numpy as np
import pytest
from robot_rl.controllers.torque_safety import FLAG_BRAKING_MARGIN, TorqueSafety
from robot_rl.sim.twin import PandaTwin, TwinConfig

from robot_rl.interfaces import PANDA_LIMITS

READY_Q = np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785])
SECONDS = 1.0


def constant(k: int, dq: np.ndarray, joint: int) -> float:
    return 1.0


def feedback(k: int, dq: np.ndarray, joint: int) -> float:
    return 1.0 if dq[joint] >= 0.0 else -1.0  # always along the motion


def flip_every_60_ms(k: int, dq: np.ndarray, joint: int) -> float:
    return 1.0 if (k // 60) % 2 == 0 else -1.0


def peak_speed_fraction(law, joint: int) -> tuple[float, int]:
    """Peak |dq_joint| / limit over SECONDS of the law's full torque on ``joint`` through the
    torque safety (with the twin's mass matrix, as the control loop passes it), and how many
    ticks the margin acted."""
    twin = PandaTwin(TwinConfig())
    try:
        twin.reset(READY_Q)
        safety = TorqueSafety(PANDA_LIMITS, twin.control_period_s)
        peak, margin_ticks = 0.0, 0
        for k in range(int(SECONDS / twin.control_period_s)):
            state = twin.read_state()
            tau = np.zeros(7)
            tau[joint] = PANDA_LIMITS.joint_torque_max_nm[joint] * law(k, state.dq_rad_s, joint)
            out, flags = safety.process(tau, state.q_rad, state.dq_rad_s, twin.model().mass_matrix)
            margin_ticks += bool(flags & FLAG_BRAKING_MARGIN)
            twin.command_torque(out)
            twin.step()
            dq = twin.read_state().dq_rad_s[joint]
            peak = max(peak, abs(dq) / PANDA_LIMITS.joint_vel_max_rad_s[joint])
        return peak, margin_ticks
    finally:
        twin.close()


@pytest.mark.parametrize("joint", range(7))
@pytest.mark.parametrize("law", [constant, feedback, flip_every_60_ms])
def test_a_full_torque_push_stays_near_the_braking_target(law, joint):
    peak, margin_ticks = peak_speed_fraction(law, joint)
    assert margin_ticks > 0  # the margin, not something else, bounded it
    assert peak <= 0.93  # the target is 0.9; the hold starts at 0.95


def test_the_control_loop_sizes_the_margin_with_the_robots_own_mass_matrix(monkeypatch):
    """The loop hands the safety the model's mass matrix (without it the conservative floor
    would cap joint 1 near 10 Nm at rest), and a 5 cm step on the twin never needs the margin."""
    from robot_rl.controllers.loop import ControlLoop, LoopConfig
    from robot_rl.controllers.targets import CartesianTarget

    twin = PandaTwin(TwinConfig())
    try:
        twin.reset(READY_Q)
        loop = ControlLoop(twin, LoopConfig())
        seen = []
        process = loop.safety.process

        def spy(tau, q, dq, mass_matrix=None):
            seen.append(mass_matrix)
            return process(tau, q, dq, mass_matrix)

        monkeypatch.setattr(loop.safety, "process", spy)
        loop.tick()
        start = twin.read_state()
        target = CartesianTarget(start.ee_pos_m + np.array([0.05, 0.0, 0.0]), start.ee_quat_xyzw)
        margin_ticks = 0
        for k in range(1500):
            if k % 50 == 0:
                loop.set_cartesian_target(target)
            margin_ticks += bool(loop.tick().safety_flags & FLAG_BRAKING_MARGIN)
        assert all(m is not None and m.shape == (7, 7) for m in seen)
        np.testing.assert_allclose(seen[-1], twin.model().mass_matrix, rtol=1e-3)  # at rest
        assert margin_ticks == 0
        np.testing.assert_allclose(twin.read_state().ee_pos_m, target.pos_m, atol=2e-3)
    finally:
        twin.close()


def test_the_coupled_margin_never_refuses_the_holds_damping():
    """Joints at the hold speed, the coupled test failing for any torque: the output still moves
    toward the hold's pure damping (braking every fast joint), not to zero. Toward zero, the
    joints coasted on past the hold (seen on the twin with every joint pushed at once)."""
    twin = PandaTwin(TwinConfig())
    try:
        twin.reset(READY_Q)
        mass = twin.model().mass_matrix
    finally:
        twin.close()
    limits = PANDA_LIMITS.joint_vel_max_rad_s
    dq = np.array([-0.06, 0.39, -0.08, 0.92, 0.97, 0.57, 0.69]) * limits
    safety = TorqueSafety(PANDA_LIMITS, 0.001)
    margin_ticks = 0
    for _ in range(20):  # the hold (joint 5 over 0.95) asks for damping; 1 Nm a tick toward it
        out, flags = safety.process(np.zeros(7), READY_Q, dq, mass)
        margin_ticks += bool(flags & FLAG_BRAKING_MARGIN)
    assert margin_ticks > 0  # the coupled test refused the damping itself, at first
    fast = np.abs(dq) > 0.85 * limits  # joints 4 and 5
    assert (np.sign(out[fast]) == -np.sign(dq[fast])).all()  # braking them
    assert (np.abs(out[fast]) >= 5.0).all()  # and not a token torque: 20 ticks of the ramp


def test_scripted_reach_episodes_never_touch_the_margin(monkeypatch):
    """Ordinary motion is left alone: the reach task's scripted expert, through the twin env's
    control loop, on three seeds. (A cap per joint on its own, tried before, acted on 18 % of
    these ticks: joints 1 and 3 are nearly parallel and their torques cancel.)"""
    from robot_rl.envs.config import EnvConfig
    from robot_rl.envs.twin_env import make_env
    from robot_rl.runtime.record import record_expert_episode

    ticks = margin = 0
    process = TorqueSafety.process

    def counting(self, tau, q, dq, mass_matrix=None):
        nonlocal ticks, margin
        out, flags = process(self, tau, q, dq, mass_matrix)
        ticks += 1
        margin += bool(flags & FLAG_BRAKING_MARGIN)
        return out, flags

    monkeypatch.setattr(TorqueSafety, "process", counting)
    env = make_env(EnvConfig(task="reach", obs="state"))
    try:
        for seed in range(3):
            env.reset(seed=seed)
            _, success = record_expert_episode(env, seed=seed)
            assert success
    finally:
        env.close()
    assert ticks > 1000  # the loop ran through the counting safety
    assert margin == 0


@pytest.mark.parametrize("direction", [1.0, -1.0])
@pytest.mark.parametrize("joint", range(7))
def test_a_full_torque_push_stops_the_joint_before_its_position_limit(joint, direction):
    """Pushed at full torque toward a position limit, a joint reaches it at 0.6-0.86x its speed
    limit without the position test (the repulsion spring cannot stop it at speed); with it, the
    joint comes to rest short of the limit (measured 0.021-0.045 rad short)."""
    twin = PandaTwin(TwinConfig())
    try:
        twin.reset(READY_Q)
        safety = TorqueSafety(PANDA_LIMITS, twin.control_period_s)
        lo, hi = PANDA_LIMITS.joint_pos_min_rad[joint], PANDA_LIMITS.joint_pos_max_rad[joint]
        closest, peak = np.inf, 0.0
        for _ in range(2500):
            state = twin.read_state()
            tau = np.zeros(7)
            tau[joint] = direction * PANDA_LIMITS.joint_torque_max_nm[joint]
            out, _ = safety.process(tau, state.q_rad, state.dq_rad_s, twin.model().mass_matrix)
            twin.command_torque(out)
            twin.step()
            q, dq = twin.read_state().q_rad[joint], twin.read_state().dq_rad_s[joint]
            closest = min(closest, q - lo, hi - q)
            peak = max(peak, abs(dq) / PANDA_LIMITS.joint_vel_max_rad_s[joint])
    finally:
        twin.close()
    assert closest < 0.1  # it got to the limit's neighbourhood: the test exercised the stop
    assert closest > 0.01  # and stopped short of it
    assert peak <= 0.93
