"""The PyBullet twin behaves like the real arm's torque interface: gravity compensated, torques
clamped and rate-limited (and counted), no hidden motors, deterministic, faults as configured."""

from __future__ import annotations

import numpy as np
import pybullet
import pytest
from robot_rl.sim.faults import FaultConfig, FaultyChannel
from robot_rl.sim.twin import READY_Q_RAD, PandaTwin, TwinConfig

from robot_rl.interfaces import PANDA_LIMITS, LockstepRobot

READY_Q = np.asarray(READY_Q_RAD)
PERIOD_S = 0.001


def gravity_torque(twin: PandaTwin) -> np.ndarray:
    """Gravity torque (7,) at the twin's current configuration, straight from PyBullet."""
    states = pybullet.getJointStates(twin.robot_id, twin.all_idx, physicsClientId=twin.cid)
    q = [s[0] for s in states]
    zeros = [0.0] * len(q)
    g = pybullet.calculateInverseDynamics(twin.robot_id, q, zeros, zeros, physicsClientId=twin.cid)
    return np.asarray(g[:7])


def applied_torque(twin: PandaTwin) -> np.ndarray:
    """The torque the twin applies on top of gravity compensation (measured minus gravity)."""
    return twin.read_state().tau_measured_nm - gravity_torque(twin)


def run(twin: PandaTwin, torques: np.ndarray) -> np.ndarray:
    """Command each torque for one step; the states after every step as rows."""
    rows = []
    for tau in torques:
        twin.command_torque(tau)
        twin.step()
        s = twin.read_state()
        rows.append(
            np.concatenate((s.q_rad, s.dq_rad_s, s.ee_pos_m, s.ee_quat_xyzw, s.tau_measured_nm))
        )
    return np.array(rows)


def random_torques(seed: int, steps: int, scale_nm: float = 2.0) -> np.ndarray:
    """A smooth-ish random torque sequence, within the limits and the 1 Nm per tick rate."""
    rng = np.random.default_rng(seed)
    walk = np.cumsum(rng.uniform(-0.2, 0.2, size=(steps, 7)), axis=0)
    return np.clip(walk, -scale_nm, scale_nm)


def test_twin_is_a_lockstep_robot(twin):
    assert isinstance(twin, LockstepRobot)
    assert twin.control_period_s == PERIOD_S
    assert twin.limits is PANDA_LIMITS


def test_reset_puts_the_arm_at_rest_with_counters_cleared(twin):
    run(twin, np.full((20, 7), 1.0))
    twin.reset(READY_Q, 0.04)
    s = twin.read_state()
    np.testing.assert_allclose(s.q_rad, READY_Q, atol=1e-12)
    np.testing.assert_array_equal(s.dq_rad_s, np.zeros(7))
    assert s.gripper_width_m == pytest.approx(0.04, abs=1e-12)
    assert s.stamp_s == 0.0
    assert twin.limit_violations == 0
    assert twin.max_command_rate_nm_per_s == 0.0
    np.testing.assert_allclose(applied_torque(twin), np.zeros(7), atol=1e-9)


def test_gravity_is_held_without_drift(twin):
    # Zero commanded torque for 2 s: the twin's own gravity compensation keeps the arm still.
    rows = run(twin, np.zeros((2000, 7)))
    assert np.abs(rows[:, :7] - READY_Q).max() < 1e-6
    assert np.abs(rows[:, 7:14]).max() < 1e-5
    assert twin.read_state().stamp_s == pytest.approx(2.0, abs=1e-9)


def test_state_and_model_are_well_formed(twin):
    s = twin.read_state()
    for name, value, shape in (
        ("q_rad", s.q_rad, (7,)),
        ("dq_rad_s", s.dq_rad_s, (7,)),
        ("tau_measured_nm", s.tau_measured_nm, (7,)),
        ("ee_pos_m", s.ee_pos_m, (3,)),
        ("ee_quat_xyzw", s.ee_quat_xyzw, (4,)),
        ("ee_twist", s.ee_twist, (6,)),
    ):
        assert value.shape == shape, name
        assert np.isfinite(value).all(), name
    # PyBullet reports link frames normalized to about float32 precision, far inside 1e-6.
    assert np.linalg.norm(s.ee_quat_xyzw) == pytest.approx(1.0, abs=1e-6)
    m = twin.model()
    assert m.jacobian.shape == (6, 7)
    assert m.mass_matrix.shape == (7, 7)
    np.testing.assert_allclose(m.mass_matrix, m.mass_matrix.T, atol=1e-9)
    assert np.linalg.eigvalsh(m.mass_matrix).min() > 0.0
    np.testing.assert_allclose(m.coriolis_nm, np.zeros(7), atol=1e-9)  # at rest


def test_huge_torque_is_clamped_to_the_limits_and_counted(twin):
    tau = np.array([1000.0, -1000.0, 1000.0, -1000.0, 1000.0, -1000.0, 1000.0])
    for step in range(1, 121):
        twin.command_torque(tau)
        twin.step()
        applied = applied_torque(twin)
        assert (np.abs(applied) <= PANDA_LIMITS.joint_torque_max_nm + 1e-6).all()
        # the twin's own rate limit: at most 1 Nm per 1 ms step from zero
        assert (np.abs(applied) <= step * 1.0 + 1e-6).all()
        # every one of these commands needed the twin's clamp, and each is counted
        assert twin.limit_violations == step
    # after 120 steps the clamp, not the rate limit, is what holds it
    np.testing.assert_allclose(np.abs(applied), PANDA_LIMITS.joint_torque_max_nm, atol=1e-6)


def test_torque_step_is_counted_as_a_rate_violation(twin):
    twin.command_torque(np.zeros(7))
    twin.step()
    twin.command_torque(np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 5.0]))  # 5 Nm in 1 ms
    twin.step()
    assert twin.limit_violations == 1
    assert twin.max_command_rate_nm_per_s == pytest.approx(5000.0)
    assert applied_torque(twin)[6] == pytest.approx(1.0, abs=1e-6)


def test_commands_within_limits_are_not_counted(twin):
    run(twin, random_torques(seed=7, steps=300))
    assert twin.limit_violations == 0
    assert twin.max_command_rate_nm_per_s <= PANDA_LIMITS.torque_rate_max_nm_per_s


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nonfinite_command_is_counted_and_not_applied(twin, bad):
    tau = np.zeros(7)
    tau[3] = bad
    twin.command_torque(tau)
    twin.step()
    assert twin.limit_violations == 1
    applied = applied_torque(twin)
    assert np.isfinite(applied).all()
    np.testing.assert_allclose(applied, np.zeros(7), atol=1e-9)


@pytest.mark.parametrize(
    "tau", [np.zeros(6), np.zeros(8), np.zeros((7, 1)), np.zeros((1, 7)), 0.0, []]
)
def test_bad_command_shape_is_a_value_error(twin, tau):
    with pytest.raises(ValueError, match=r"tau_nm has shape .*; expected \(7,\)"):
        twin.command_torque(tau)


def test_velocity_motors_are_off_so_a_small_torque_accelerates_the_arm(twin):
    # 1 Nm on joint 1 from rest: Newton says dq(t) = M^-1 tau t while the pose barely changes.
    # PyBullet's default velocity motors would hold the joints still against such a torque.
    tau = np.zeros(7)
    tau[0] = 1.0
    expected_accel = np.linalg.solve(twin.model().mass_matrix, tau)
    run(twin, np.tile(tau, (50, 1)))
    dq = twin.read_state().dq_rad_s
    expected = expected_accel * 0.05
    np.testing.assert_allclose(dq, expected, atol=0.05 * np.abs(expected).max())


def test_gripper_moves_at_its_commanded_speed_without_blocking(twin):
    speed = 0.05
    twin.gripper_move(0.02, speed)  # close 6 cm at 5 cm/s: 1.2 s
    assert twin.read_state().stamp_s == 0.0  # the call itself does not advance time
    widths = [twin.read_state().gripper_width_m]
    for _ in range(1500):
        twin.command_torque(np.zeros(7))
        twin.step()
        widths.append(twin.read_state().gripper_width_m)
    rate = np.abs(np.diff(widths)) / PERIOD_S
    # the fingers follow a setpoint ramped at the commanded speed; 10 % for the tracking loop
    assert rate.max() <= 1.1 * speed
    assert widths[600] == pytest.approx(0.08 - speed * 0.6, abs=2e-3)  # halfway at 0.6 s
    assert widths[-1] == pytest.approx(0.02, abs=1e-3)


# -- determinism ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "faults",
    [FaultConfig(), FaultConfig(latency_s=0.002, jitter_s=0.003, drop_probability=0.2)],
    ids=["clean", "faulty"],
)
def test_same_seed_and_torques_give_the_same_trajectory(faults):
    config = TwinConfig(seed=11, faults=faults)
    torques = random_torques(seed=3, steps=400, scale_nm=3.0)
    a, b = PandaTwin(config), PandaTwin(config)
    try:
        np.testing.assert_array_equal(run(a, torques), run(b, torques))
    finally:
        a.close()
        b.close()


def test_reset_replays_the_same_trajectory(twin):
    torques = random_torques(seed=4, steps=300, scale_nm=3.0)
    first = run(twin, torques)
    twin.reset(READY_Q)
    np.testing.assert_array_equal(run(twin, torques), first)


# -- fault injection -----------------------------------------------------------------------------


@pytest.mark.parametrize("latency_ms", [3, 10])
def test_command_takes_effect_only_after_the_latency(latency_ms):
    twin = PandaTwin(TwinConfig(faults=FaultConfig(latency_s=latency_ms * 1e-3)))
    try:
        tau = np.zeros(7)
        tau[6] = 0.5
        twin.command_torque(tau)  # sent at t = 0
        first_applied_s = None
        for _ in range(latency_ms + 5):
            twin.step()
            if first_applied_s is None and applied_torque(twin)[6] > 0.25:
                first_applied_s = twin.read_state().stamp_s
        assert first_applied_s is not None
        # applied on the step that starts at the latency, so seen at latency + one period
        assert latency_ms * 1e-3 < first_applied_s <= latency_ms * 1e-3 + PERIOD_S + 1e-9
    finally:
        twin.close()


def test_dropped_commands_never_reach_the_arm():
    twin = PandaTwin(TwinConfig(faults=FaultConfig(drop_probability=1.0)))
    try:
        rows = run(twin, np.tile(np.full(7, 0.5), (50, 1)))
        # nothing arrived: the arm keeps its last torque (none) and stays where it was
        np.testing.assert_allclose(applied_torque(twin), np.zeros(7), atol=1e-9)
        assert np.abs(rows[:, :7] - READY_Q).max() < 1e-9
        assert twin.read_state().command_age_s == pytest.approx(0.05, abs=1e-9)
    finally:
        twin.close()


def test_channel_counts_drops_at_the_configured_rate():
    channel = FaultyChannel(FaultConfig(drop_probability=0.3), np.random.default_rng(0))
    n = 4000
    for k in range(n):
        channel.send(np.full(7, float(k)), k * PERIOD_S)
    # binomial(4000, 0.3): mean 1200, standard deviation 29; allow five of them
    assert abs(channel.dropped - 0.3 * n) < 5 * np.sqrt(n * 0.3 * 0.7)


def test_channel_with_certain_drop_delivers_nothing():
    channel = FaultyChannel(FaultConfig(drop_probability=1.0), np.random.default_rng(0))
    for k in range(10):
        channel.send(np.ones(7), k * PERIOD_S)
    assert channel.dropped == 10
    assert channel.receive(1.0) == (None, None)


def test_channel_delays_by_latency_plus_jitter_without_reordering():
    latency, jitter = 0.002, 0.005
    channel = FaultyChannel(
        FaultConfig(latency_s=latency, jitter_s=jitter), np.random.default_rng(1)
    )
    sent = {}
    delivered = []
    for k in range(2000):
        now = k * PERIOD_S
        tau = np.full(7, float(k))
        sent[k] = now
        channel.send(tau, now)
        got, due = channel.receive(now)
        if got is not None:
            delivered.append((int(got[0]), due, now))
    assert delivered
    indices = [i for i, _, _ in delivered]
    assert indices == sorted(indices)  # no overtaking: never an older command after a newer one
    for i, due, now in delivered:
        assert due <= now + 1e-12
        # never early; late only by the jitter, or by waiting behind an earlier, later-due command
        assert due >= sent[i] + latency - 1e-12
        assert due <= sent[i] + latency + jitter + 1e-12


@pytest.mark.parametrize(
    "fields,match",
    [
        (dict(latency_s=-0.001), r"latency_s=-0.001.*must be >= 0"),
        (dict(jitter_s=-1.0), r"jitter_s=-1.0; both must be >= 0"),
        (dict(drop_probability=1.5), r"drop_probability=1.5; allowed 0..1"),
        (dict(drop_probability=-0.1), r"drop_probability=-0.1; allowed 0..1"),
    ],
)
def test_bad_fault_config_is_a_value_error(fields, match):
    with pytest.raises(ValueError, match=match):
        FaultConfig(**fields)


def test_default_fault_config_is_inactive():
    assert not FaultConfig().active
    assert FaultConfig(latency_s=0.001).active
    assert FaultConfig(drop_probability=0.01).active
