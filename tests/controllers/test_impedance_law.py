"""Invariants of the pure impedance laws, evaluated on the twin's rigid-body model.

The twin only supplies realistic (state, model) pairs at a few configurations; the laws are
called directly, no physics is stepped. Where a test needs the task-space wrench, it turns the
posture spring off so that tau = J^T wrench + Coriolis holds exactly and the wrench can be read
back by least squares (J^T has full column rank away from singularities).
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
import pytest
from robot_rl.controllers.cartesian_impedance import CartesianReference, cartesian_impedance_torque
from robot_rl.controllers.gains import CartesianGains, DampingGains, JointGains
from robot_rl.controllers.joint_impedance import damping_torque, joint_impedance_torque
from robot_rl.controllers.rotations import quat_exp, quat_mul
from robot_rl.sim.twin import READY_Q_RAD

from robot_rl.interfaces import RobotModel, RobotState

READY_Q = np.asarray(READY_Q_RAD)
# The ready pose and two well-conditioned poses away from it (rad offsets per joint).
CONFIGURATIONS = {
    "ready": READY_Q,
    "reach-left": READY_Q + np.array([0.4, 0.3, -0.2, 0.4, 0.3, -0.3, 0.2]),
    "twisted": READY_Q + np.array([-0.5, -0.2, 0.6, -0.3, -0.6, 0.4, -0.8]),
}
# Joints 1-5 in line and joint 6 near 0: the wrist over the base axis, near a singularity (the
# largest eigenvalue of the task inertia is about 3000 here, 12-14 at CONFIGURATIONS).
NEAR_SINGULAR_Q = np.array([0.0, 0.0, 0.0, -0.5, 0.0, 0.3, 0.785])
# An arbitrary Coriolis vector, so that a test can tell "passed through" from "happens to be 0".
FAKE_CORIOLIS_NM = np.array([0.3, -0.2, 0.1, 0.4, -0.05, 0.02, -0.01])
NO_POSTURE = dataclasses.replace(CartesianGains(), nullspace_natural_freq_rad_s=0.0)


def at(
    twin, q_rad: np.ndarray, dq_rad_s: np.ndarray | None = None
) -> tuple[RobotState, RobotModel]:
    """(state, model) of the twin teleported to q at rest, with dq substituted in the state."""
    twin.reset(q_rad)
    state = twin.read_state()
    if dq_rad_s is not None:
        state = dataclasses.replace(state, dq_rad_s=np.asarray(dq_rad_s, dtype=float))
    return state, twin.model()


def with_coriolis(model: RobotModel, coriolis_nm: np.ndarray) -> RobotModel:
    return dataclasses.replace(model, coriolis_nm=np.asarray(coriolis_nm, dtype=float))


def reference_at(state: RobotState, twist: np.ndarray | None = None) -> CartesianReference:
    """A reference that sits exactly on the measured TCP pose."""
    return CartesianReference(
        state.ee_pos_m.copy(), state.ee_quat_xyzw.copy(), np.zeros(6) if twist is None else twist
    )


def posture_torque_at_rest(
    gains: CartesianGains, model: RobotModel, q: np.ndarray, posture: np.ndarray
) -> np.ndarray:
    """The documented posture term before projection, at rest: clip(M w^2 (q0 - q), +-cap)."""
    w = gains.nullspace_natural_freq_rad_s
    cap = gains.nullspace_torque_cap_nm
    return np.clip(model.mass_matrix @ (w * w * (posture - q)), -cap, cap)


def wrench_of(model: RobotModel, tau_nm: np.ndarray) -> np.ndarray:
    """Wrench (6,) with J^T wrench = tau - Coriolis (exact when the posture term is 0)."""
    wrench, *_ = np.linalg.lstsq(model.jacobian.T, tau_nm - model.coriolis_nm, rcond=None)
    np.testing.assert_allclose(model.jacobian.T @ wrench, tau_nm - model.coriolis_nm, atol=1e-9)
    return wrench


configurations = pytest.mark.parametrize("q", CONFIGURATIONS.values(), ids=CONFIGURATIONS.keys())


# -- Cartesian impedance -----------------------------------------------------------------------


@configurations
def test_zero_error_at_rest_at_posture_gives_only_coriolis(module_twin, q):
    state, model = at(module_twin, q)
    model = with_coriolis(model, FAKE_CORIOLIS_NM)
    tau = cartesian_impedance_torque(state, model, reference_at(state), CartesianGains(), q)
    np.testing.assert_allclose(tau, FAKE_CORIOLIS_NM, atol=1e-12)


@configurations
def test_zero_error_away_from_posture_gives_only_nullspace_torque(module_twin, q):
    state, model = at(module_twin, q)
    model = with_coriolis(model, np.zeros(7))
    # Put the posture 0.3 rad along the self-motion direction n (J n = 0, |n| = 1): the
    # posture spring then asks for exactly the motion the task leaves free.
    self_motion = np.linalg.svd(model.jacobian)[2][-1]
    gains = CartesianGains()
    posture = q + 0.3 * self_motion
    tau = cartesian_impedance_torque(state, model, reference_at(state), gains, posture)
    # The spring is M w^2 (q0 - q); below the per-joint cap here, so n . tau_posture is
    # 0.3 w^2 n^T M n. N n = n (n^T J^T = 0), so the projection passes that part unchanged.
    w = gains.nullspace_natural_freq_rad_s
    unclipped = model.mass_matrix @ (w * w * 0.3 * self_motion)
    assert np.abs(unclipped).max() < gains.nullspace_torque_cap_nm  # precondition
    expected = 0.3 * w * w * self_motion @ model.mass_matrix @ self_motion
    assert expected > 0.0
    assert tau @ self_motion == pytest.approx(expected, rel=1e-6)
    # ... and it makes no TCP acceleration. J M^-1 N^T = eps * Lambda J M^-1 with the 1e-4
    # regularization of Lambda^-1 and a task inertia of order 10 kg, so a residual of 1e-3 of
    # what an unprojected torque of the same size could do is the ceiling.
    jm_inv = model.jacobian @ np.linalg.inv(model.mass_matrix)
    unprojected_scale = np.linalg.norm(jm_inv, 2) * np.linalg.norm(tau)
    assert np.linalg.norm(jm_inv @ tau) <= 1e-3 * unprojected_scale


@configurations
def test_nullspace_torque_makes_no_task_space_force(module_twin, q):
    state, model = at(module_twin, q)
    model = with_coriolis(model, np.zeros(7))
    # An arbitrary posture, mostly not along the self-motion.
    posture = q + np.array([0.3, -0.3, 0.3, -0.3, 0.3, -0.3, 0.3])
    tau = cartesian_impedance_torque(state, model, reference_at(state), CartesianGains(), posture)
    # The force at the tool is Jbar^T tau = Lambda J M^-1 tau. With Lambda^-1 regularized by
    # eps = 1e-4 (cartesian_impedance.py) the projection leaves exactly eps * Lambda_reg times
    # the force the unprojected posture torque would make, so |force| <= eps * lambda_max(Lambda)
    # * |unprojected force| (Lambda and Lambda_reg commute).
    m_inv = np.linalg.inv(model.mass_matrix)
    task_inertia = np.linalg.inv(model.jacobian @ m_inv @ model.jacobian.T)
    force = task_inertia @ model.jacobian @ m_inv @ tau
    posture_torque = posture_torque_at_rest(CartesianGains(), model, q, posture)
    unprojected = task_inertia @ model.jacobian @ m_inv @ posture_torque
    eps_lambda = 1e-4 * np.linalg.eigvalsh(task_inertia)[-1]
    assert eps_lambda < 1e-2  # the bound below means something: the arm is far from singular
    assert np.linalg.norm(force) <= 1.01 * eps_lambda * np.linalg.norm(unprojected)


def test_task_inertia_is_capped_near_a_singularity_and_exact_elsewhere(module_twin):
    from robot_rl.controllers.cartesian_impedance import MAX_TASK_INERTIA, bounded_task_inertia

    def task_inertia_at(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        _, model = at(module_twin, q)
        jm_inv = model.jacobian @ np.linalg.inv(model.mass_matrix)
        lambda_inv = jm_inv @ model.jacobian.T + 1e-4 * np.eye(6)
        return np.linalg.inv(lambda_inv), lambda_inv

    for q in CONFIGURATIONS.values():  # away from singularities the law uses Lambda as it is
        task_inertia, lambda_inv = task_inertia_at(q)
        assert bounded_task_inertia(task_inertia, lambda_inv) is task_inertia
    task_inertia, lambda_inv = task_inertia_at(NEAR_SINGULAR_Q)
    w, v = np.linalg.eigh(task_inertia)
    assert w[-1] > 10 * MAX_TASK_INERTIA  # precondition: this pose is near a singularity
    capped = bounded_task_inertia(task_inertia, lambda_inv)
    np.testing.assert_allclose(capped, capped.T, atol=1e-9)
    assert np.linalg.eigvalsh(capped).max() <= MAX_TASK_INERTIA * (1 + 1e-9)
    for i in range(6):  # each eigen-direction keeps its inertia, or has the cap
        expected = min(w[i], MAX_TASK_INERTIA)
        assert v[:, i] @ capped @ v[:, i] == pytest.approx(expected, rel=1e-6)
    # A NaN (a broken model) passes through unchanged, for the law's non-finite handling.
    nan = np.full((6, 6), math.nan)
    assert bounded_task_inertia(nan, nan) is nan


@configurations
def test_error_clip_bounds_the_wrench_at_stiffness_times_clip(module_twin, q):
    state, model = at(module_twin, q)
    model = with_coriolis(model, np.zeros(7))
    gains = NO_POSTURE
    # Far beyond the clip on every axis: 1 m away, rotated 2.5 rad about a skew axis.
    offset = np.array([1.0, -1.0, 1.0])
    axis = np.array([1.0, -2.0, 0.5]) / math.sqrt(5.25)
    far = CartesianReference(
        state.ee_pos_m + offset, quat_mul(quat_exp(2.5 * axis), state.ee_quat_xyzw), np.zeros(6)
    )
    wrench = wrench_of(model, cartesian_impedance_torque(state, model, far, gains, q))
    bound = gains.stiffness * gains.error_clip
    assert (np.abs(wrench) <= bound * (1 + 1e-9)).all()
    # The position error is far past the clip on every axis, so the spring saturates there.
    np.testing.assert_allclose(wrench[:3], bound[:3] * np.sign(offset), rtol=1e-6)


@configurations
def test_small_error_gives_a_linear_spring_wrench(module_twin, q):
    state, model = at(module_twin, q)
    model = with_coriolis(model, np.zeros(7))
    gains = NO_POSTURE
    e_pos = np.array([0.004, -0.002, 0.003])  # inside the 1 cm clip
    e_rot = np.array([0.0, 0.0, 0.05])  # inside the 0.1 rad clip, about base z only
    ref = CartesianReference(
        state.ee_pos_m + e_pos, quat_mul(quat_exp(e_rot), state.ee_quat_xyzw), np.zeros(6)
    )
    wrench = wrench_of(model, cartesian_impedance_torque(state, model, ref, gains, q))
    np.testing.assert_allclose(wrench, gains.stiffness * np.concatenate((e_pos, e_rot)), atol=1e-6)


@configurations
@pytest.mark.parametrize("axis", range(6), ids=["x", "y", "z", "rx", "ry", "rz"])
def test_torque_drives_the_tcp_toward_the_reference(module_twin, q, axis):
    state, model = at(module_twin, q)
    model = with_coriolis(model, np.zeros(7))
    error = np.zeros(6)
    error[axis] = 0.005 if axis < 3 else 0.05
    ref = CartesianReference(
        state.ee_pos_m + error[:3], quat_mul(quat_exp(error[3:]), state.ee_quat_xyzw), np.zeros(6)
    )
    tau = cartesian_impedance_torque(state, model, ref, CartesianGains(), q)
    # From rest the TCP accelerates with J M^-1 tau; it must head toward the reference, i.e. the
    # spring opposes the displacement (current - desired).
    accel = model.jacobian @ np.linalg.solve(model.mass_matrix, tau)
    assert accel @ error > 0.0


@configurations
def test_damping_opposes_tcp_velocity_on_every_axis(module_twin, q):
    dq = np.array([0.2, -0.1, 0.15, 0.1, -0.2, 0.3, -0.25])
    state, model = at(module_twin, q, dq)
    model = with_coriolis(model, np.zeros(7))
    twist = model.jacobian @ dq
    wrench = wrench_of(
        model, cartesian_impedance_torque(state, model, reference_at(state), NO_POSTURE, q)
    )
    assert (wrench * twist < 0).all()


@configurations
def test_twist_feedforward_cancels_damping(module_twin, q):
    dq = np.array([0.2, -0.1, 0.15, 0.1, -0.2, 0.3, -0.25])
    state, model = at(module_twin, q, dq)
    model = with_coriolis(model, np.zeros(7))
    ref = reference_at(state, twist=model.jacobian @ dq)  # the reference moves with the TCP
    tau = cartesian_impedance_torque(state, model, ref, NO_POSTURE, q)
    np.testing.assert_allclose(tau, np.zeros(7), atol=1e-9)


@configurations
def test_acceleration_feedforward_accelerates_the_tcp_with_the_reference(module_twin, q):
    state, model = at(module_twin, q)
    model = with_coriolis(model, np.zeros(7))
    accel_ref = np.array([0.5, -0.3, 0.2, 1.0, -2.0, 0.5])  # m/s^2, rad/s^2
    ref = dataclasses.replace(reference_at(state), accel=accel_ref)
    tau = cartesian_impedance_torque(state, model, ref, NO_POSTURE, q)
    # From rest, on the reference, the TCP must accelerate as the reference does: J M^-1 tau
    # = a_ref, up to the 1e-4 regularization of Lambda^-1 times a task inertia of order 10 kg.
    accel = model.jacobian @ np.linalg.solve(model.mass_matrix, tau)
    np.testing.assert_allclose(accel, accel_ref, atol=2e-3 * np.abs(accel_ref).max())


# -- joint impedance -----------------------------------------------------------------------------


@configurations
def test_joint_law_zero_error_at_rest_gives_only_coriolis(module_twin, q):
    state, model = at(module_twin, q)
    model = with_coriolis(model, FAKE_CORIOLIS_NM)
    tau = joint_impedance_torque(state, model, q, np.zeros(7), JointGains())
    np.testing.assert_allclose(tau, FAKE_CORIOLIS_NM, atol=1e-12)


@configurations
def test_joint_law_spring_pushes_each_joint_toward_its_reference(module_twin, q):
    state, model = at(module_twin, q)
    model = with_coriolis(model, np.zeros(7))
    error = np.array([0.01, -0.02, 0.03, -0.01, 0.02, -0.03, 0.05])
    gains = JointGains()
    tau = joint_impedance_torque(state, model, q + error, np.zeros(7), gains)
    np.testing.assert_allclose(tau, gains.stiffness_nm_per_rad * error, rtol=1e-12)


@configurations
def test_joint_law_damping_is_critical_against_each_joints_inertia(module_twin, q):
    dq = np.array([0.2, -0.1, 0.15, 0.1, -0.2, 0.3, -0.25])
    state, model = at(module_twin, q, dq)
    model = with_coriolis(model, np.zeros(7))
    gains = JointGains()
    tau = joint_impedance_torque(state, model, q, np.zeros(7), gains)
    assert (tau * dq < 0).all()
    # damping ratio 1: D_i = 2 sqrt(K_i M_ii)
    critical = 2.0 * np.sqrt(gains.stiffness_nm_per_rad * np.diag(model.mass_matrix))
    np.testing.assert_allclose(tau, -critical * dq, rtol=1e-12)
    # velocity feedforward: a reference that moves with the joints leaves nothing to damp
    tau_ff = joint_impedance_torque(state, model, q, dq, gains)
    np.testing.assert_allclose(tau_ff, np.zeros(7), atol=1e-12)


def test_damping_torque_opposes_velocity_and_vanishes_at_rest():
    gains = DampingGains()
    dq = np.array([0.5, -0.5, 1.0, -1.0, 2.0, -2.0, 0.1])
    tau = damping_torque(dq, gains)
    assert (tau * dq < 0).all()
    np.testing.assert_array_equal(damping_torque(np.zeros(7), gains), np.zeros(7))


# -- Coulomb friction feedforward ------------------------------------------------------------------
FRICTION = dataclasses.replace(
    NO_POSTURE, friction_coulomb_nm=np.array([0.2, 0.35, 0.25, 0.5, 0.3, 0.1, 0.2])
)


@configurations
def test_friction_feedforward_follows_the_reference_velocity_not_the_measured_one(twin, q):
    state, model = at(twin, q, dq_rad_s=np.full(7, -0.3))  # measured: moving the other way
    twist = np.array([0.1, -0.05, 0.02, 0.0, 0.0, 0.0])
    ref = reference_at(state, twist)
    # the same law, with and without friction: the difference is the feedforward
    tau_f = cartesian_impedance_torque(state, model, ref, FRICTION, q) - cartesian_impedance_torque(
        state, model, ref, NO_POSTURE, q
    )
    fc = FRICTION.friction_coulomb_nm
    assert np.all(np.abs(tau_f) <= fc + 1e-12)  # bounded by the configured Coulomb torques
    # signed like the joint velocity the reference asks for (Jbar v), wherever that is brisk
    m_inv = np.linalg.inv(model.mass_matrix)
    jbar = m_inv @ model.jacobian.T @ np.linalg.inv(model.jacobian @ m_inv @ model.jacobian.T)
    dq_ref = jbar @ twist
    brisk = np.abs(dq_ref) > 3 * FRICTION.friction_velocity_rad_s
    assert brisk.any()
    np.testing.assert_array_equal(np.sign(tau_f[brisk]), np.sign(dq_ref[brisk]))
    # at rest the reference asks for nothing: no feedforward, whatever the arm does
    still = reference_at(state)
    np.testing.assert_allclose(
        cartesian_impedance_torque(state, model, still, FRICTION, q),
        cartesian_impedance_torque(state, model, still, NO_POSTURE, q),
        atol=1e-12,
    )


@configurations
def test_the_trackers_friction_wrench_maps_back_to_the_torque_feedforward_at_the_tool(twin, q):
    from robot_rl.controllers.cartesian_impedance import friction_task_wrench

    state, model = at(twin, q)
    twist = np.array([0.0, 0.12, -0.03, 0.0, 0.1, 0.0])
    ref = reference_at(state, twist)
    tau_f = cartesian_impedance_torque(state, model, ref, FRICTION, q) - cartesian_impedance_torque(
        state, model, ref, NO_POSTURE, q
    )
    wrench = friction_task_wrench(model, twist, FRICTION)
    # F = Jbar^T tau_f: the part of tau_f that acts at the tool (J^T F is its task projection);
    # the law regularizes Lambda^-1 by 1e-4, hence the 1 % tolerance
    m_inv = np.linalg.inv(model.mass_matrix)
    lam = np.linalg.inv(model.jacobian @ m_inv @ model.jacobian.T)
    np.testing.assert_allclose(wrench, lam @ model.jacobian @ m_inv @ tau_f, rtol=1e-2, atol=1e-3)
    np.testing.assert_array_equal(friction_task_wrench(model, twist, NO_POSTURE), np.zeros(6))


@pytest.mark.parametrize("friction", [False, True], ids=["no-friction", "friction"])
def test_the_lean_law_gives_the_plain_laws_torque(twin, friction):
    """``CartesianImpedanceLaw`` (the loop's) against ``cartesian_impedance_torque``: the same
    torque to 1e-12 relative at poses, errors (some past the clip), twists, accelerations and
    integral forces drawn at random; the same NaN torque for a NaN state; and a singular mass
    matrix still raises LinAlgError."""
    from robot_rl.controllers.cartesian_impedance import CartesianImpedanceLaw

    rng = np.random.default_rng(7)
    gains = dataclasses.replace(
        CartesianGains(), friction_coulomb_nm=np.full(7, 0.5 if friction else 0.0)
    )
    law = CartesianImpedanceLaw()
    for q in [*CONFIGURATIONS.values(), NEAR_SINGULAR_Q]:
        state, model = at(twin, q, rng.normal(0.0, 0.5, 7))
        model = with_coriolis(model, FAKE_CORIOLIS_NM)
        for _ in range(20):
            ref = CartesianReference(
                state.ee_pos_m + rng.normal(0.0, 0.01, 3),
                quat_mul(quat_exp(rng.normal(0.0, 0.1, 3)), state.ee_quat_xyzw),
                rng.normal(0.0, 0.2, 6),
                rng.normal(0.0, 2.0, 6),
            )
            integral = rng.normal(0.0, 3.0, 3)
            plain = cartesian_impedance_torque(state, model, ref, gains, READY_Q, integral)
            lean = law.torque(state, model, ref, gains, READY_Q, integral)
            np.testing.assert_allclose(lean, plain, rtol=1e-12, atol=1e-12 * np.abs(plain).max())
    nan_state = dataclasses.replace(state, dq_rad_s=np.r_[math.nan, state.dq_rad_s[1:]])
    plain = cartesian_impedance_torque(nan_state, model, ref, gains, READY_Q)
    np.testing.assert_array_equal(law.torque(nan_state, model, ref, gains, READY_Q), plain)
    singular = dataclasses.replace(model, mass_matrix=np.zeros((7, 7)))
    with pytest.raises(np.linalg.LinAlgError), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the gufunc's, before the plain law's
        law.torque(state, singular, ref, gains, READY_Q)
