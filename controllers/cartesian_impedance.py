"""Cartesian impedance law: (state, model, reference, gains) -> joint torque. Pure, no clock or I/O.

tau = J^T (K e - D (xdot - xdot_ref)) + C(q, dq) dq + N^T tau_posture

e is the pose error (position, then log-map orientation error), clipped per axis. D is chosen per
axis as 2 * zeta * sqrt(K * Lambda_ii), with Lambda the task-space inertia, so damping_ratio 1 is
critical.
The posture term is projected through the dynamically consistent nullspace N^T = I - J^T Jbar^T,
Jbar = M^-1 J^T Lambda, so it produces no force at the tool. Gravity is left to the robot.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from controllers.gains import CartesianGains
from controllers.rotations import orientation_error
from robot_rl.interfaces import RobotModel, RobotState

# Regularization added to J M^-1 J^T before inversion so Lambda stays bounded near singularities.
_LAMBDA_REGULARIZATION = 1e-4


@dataclass(frozen=True)
class CartesianReference:
    """Desired TCP pose and twist at this tick, base frame."""

    pos_m: np.ndarray  # (3,)
    quat_xyzw: np.ndarray  # (4,) unit
    twist: np.ndarray  # (6,) m/s, rad/s: velocity feedforward


def pose_error(reference: CartesianReference, state: RobotState) -> np.ndarray:
    """(6,) unclipped pose error: position (m) then rotation vector (rad), base frame."""
    e = np.empty(6)
    e[:3] = reference.pos_m - state.ee_pos_m
    e[3:] = orientation_error(reference.quat_xyzw, state.ee_quat_xyzw)
    return e


def cartesian_impedance_torque(
    state: RobotState,
    model: RobotModel,
    reference: CartesianReference,
    gains: CartesianGains,
    posture_q_rad: np.ndarray,
) -> np.ndarray:
    """Joint torque (7,), Nm, excluding gravity, for one tick of Cartesian impedance control."""
    J = model.jacobian
    dq = state.dq_rad_s
    clip = gains.error_clip
    error = np.minimum(np.maximum(pose_error(reference, state), -clip), clip)

    M_inv = np.linalg.inv(model.mass_matrix)
    JMinv = J @ M_inv
    lambda_inv = JMinv @ J.T
    lambda_inv.flat[::7] += _LAMBDA_REGULARIZATION
    task_inertia = np.linalg.inv(lambda_inv)

    damping = 2.0 * gains.damping_ratio * np.sqrt(gains.stiffness * task_inertia.flat[::7])
    twist_error = J @ dq - reference.twist
    wrench = gains.stiffness * error - damping * twist_error
    tau_task = J.T @ wrench

    # Posture spring in joint space, damped (unit-inertia critical), capped, then projected.
    k_ns = gains.nullspace_stiffness_nm_per_rad
    d_ns = 2.0 * gains.nullspace_damping_ratio * np.sqrt(k_ns)
    tau_posture = k_ns * (posture_q_rad - state.q_rad) - d_ns * dq
    cap = gains.nullspace_torque_cap_nm
    tau_posture = np.minimum(np.maximum(tau_posture, -cap), cap)
    # N^T = I - J^T Jbar^T, with Jbar^T = Lambda J M^-1.
    tau_null = tau_posture - J.T @ (task_inertia @ (JMinv @ tau_posture))

    return tau_task + tau_null + model.coriolis_nm
