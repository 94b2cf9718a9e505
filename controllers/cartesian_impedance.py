"""Cartesian impedance law: (state, model, reference, gains) -> joint torque. Pure, no clock or I/O.

tau = J^T (K e - D (xdot - xdot_ref) + Lambda xddot_ref + f_I) + C(q, dq) dq
      + N^T M (w^2 (q0 - q) - 2 z w dq)

e is the pose error (position, then log-map orientation error), clipped per axis. D is chosen per
axis as 2 * zeta * sqrt(K * Lambda_ii), with Lambda the task-space inertia, so damping_ratio 1 is
critical. f_I is an optional integral force on the position error, computed by the caller.
With ``gains.friction_coulomb_nm`` set, tau also gets f_c tanh(dq_ref / v_s), the joints' Coulomb
friction signed by the joint velocity Jbar xdot_ref the reference asks for (a feedforward: the
measured velocity never enters it).
The posture term is projected through the dynamically consistent nullspace N^T = I - J^T Jbar^T,
Jbar = M^-1 J^T Lambda, so it produces no force at the tool. Gravity is left to the robot.
Near a singularity Lambda's eigenvalues are capped at ``MAX_TASK_INERTIA`` (see there).
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass, field

import numpy as np
from robot_rl.controllers.gains import CartesianGains
from robot_rl.controllers.rotations import orientation_error, quat_log_f, quat_mul_conj_f

from robot_rl.interfaces import RobotModel, RobotState

# Regularization added to J M^-1 J^T before inversion so the inverse always exists.
_LAMBDA_REGULARIZATION = 1e-4
# The largest task-space inertia the law uses (kg; kg m^2 for rotation). Near a singularity (the
# arm stretched toward a target beyond its reach) one eigenvalue of Lambda grows without bound, and
# with it the damping sqrt(K Lambda) and the posture projection's gain: on franky-sim a target at
# the far top corner of the reach box (0.7, 0.15, 0.6) then set the arm thrashing at 13 rad/s,
# 0.3 m outside the box, where 1e-4 regularization alone bounds Lambda only at 1e4. Bounding that
# eigenvalue at 100 (the arm's usual task inertia is 1-10 kg and 0.05-1 kg m^2) left it at rest
# at the reach limit. The bound acts only there: Lambda is used exactly while trace(Lambda), which
# is at least its largest eigenvalue, stays below the bound, as it does away from singularities.
MAX_TASK_INERTIA = 100.0


def bounded_task_inertia(task_inertia: np.ndarray, lambda_inv: np.ndarray) -> np.ndarray:
    """``task_inertia`` (= ``lambda_inv``^-1) with its eigenvalues capped at
    ``MAX_TASK_INERTIA``; the same array when its trace is within the bound."""
    if not np.trace(task_inertia) > MAX_TASK_INERTIA:  # a NaN passes through as it was
        return task_inertia
    w, v = np.linalg.eigh(lambda_inv)
    return (v / np.maximum(w, 1.0 / MAX_TASK_INERTIA)) @ v.T


@dataclass(frozen=True)
class CartesianReference:
    """Desired TCP pose and twist at this tick, base frame."""

    pos_m: np.ndarray  # (3,)
    quat_xyzw: np.ndarray  # (4,) unit
    twist: np.ndarray  # (6,) m/s, rad/s: velocity feedforward
    accel: np.ndarray = field(default_factory=lambda: np.zeros(6))  # (6,) m/s^2, rad/s^2


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
    integral_force_n: np.ndarray | None = None,
) -> np.ndarray:
    """Joint torque (7,), Nm, excluding gravity, for one tick of Cartesian impedance control.
    ``integral_force_n`` (3,) N, base frame: an integral force added to the spring's
    (``robot_rl.controllers.integral``)."""
    J = model.jacobian
    dq = state.dq_rad_s
    clip = gains.error_clip
    error = np.minimum(np.maximum(pose_error(reference, state), -clip), clip)

    M_inv = np.linalg.inv(model.mass_matrix)
    JMinv = J @ M_inv
    lambda_inv = JMinv @ J.T
    lambda_inv.flat[::7] += _LAMBDA_REGULARIZATION
    task_inertia = bounded_task_inertia(np.linalg.inv(lambda_inv), lambda_inv)

    damping = 2.0 * gains.damping_ratio * np.sqrt(gains.stiffness * task_inertia.flat[::7])
    twist_error = J @ dq - reference.twist
    # Acceleration feedforward Lambda a_ref (the force a moving reference needs, e.g. centripetal).
    wrench = gains.stiffness * error - damping * twist_error + task_inertia @ reference.accel
    if integral_force_n is not None:
        wrench[:3] += integral_force_n
    tau_task = J.T @ wrench
    fc = gains.friction_coulomb_nm
    if fc.any():  # Coulomb friction, signed by the reference's joint velocity Jbar v_ref
        dq_ref = JMinv.T @ (task_inertia @ reference.twist)
        tau_task += fc * np.tanh(dq_ref / gains.friction_velocity_rad_s)

    # Posture spring-damper in joint space, scaled by M: a fixed gain in Nm/rad would be stiff and
    # fast on light modes (a joint-1/joint-3 counter-rotation near q2 = 0 weighs ~0.02 kg m^2) and
    # set off a limit cycle against the 1000 Nm/s rate limit. Capped, then projected.
    omega = gains.nullspace_natural_freq_rad_s
    cap = gains.nullspace_torque_cap_nm
    # Only the spring is capped: a capped damper stops damping once the posture is far away (at
    # the workspace's corners), and the arm then swings through its self-motion at joint speeds
    # near their limits.
    tau_spring = model.mass_matrix @ (omega * omega * (posture_q_rad - state.q_rad))
    tau_damper = model.mass_matrix @ ((2.0 * gains.nullspace_damping_ratio * omega) * dq)
    tau_posture = np.minimum(np.maximum(tau_spring, -cap), cap) - tau_damper
    # N^T = I - J^T Jbar^T, with Jbar^T = Lambda J M^-1.
    tau_null = tau_posture - J.T @ (task_inertia @ (JMinv @ tau_posture))

    return tau_task + tau_null + model.coriolis_nm


def friction_task_wrench(
    model: RobotModel, twist_ref: np.ndarray, gains: CartesianGains
) -> np.ndarray:
    """(6,) N, Nm, base frame: the task wrench equivalent to the Coulomb feedforward the law
    adds (``gains.friction_coulomb_nm`` signed by Jbar twist_ref), F = Jbar^T tau_f. For a law
    that takes no joint torque (franky's tracker): its target is moved by F / K instead."""
    fc = gains.friction_coulomb_nm
    if not fc.any():
        return np.zeros(6)
    J = model.jacobian
    JMinv = J @ np.linalg.inv(model.mass_matrix)
    lambda_inv = JMinv @ J.T
    lambda_inv.flat[::7] += _LAMBDA_REGULARIZATION
    task_inertia = bounded_task_inertia(np.linalg.inv(lambda_inv), lambda_inv)
    dq_ref = JMinv.T @ (task_inertia @ twist_ref)
    tau_f = fc * np.tanh(dq_ref / gains.friction_velocity_rad_s)
    return task_inertia @ (JMinv @ tau_f)


try:  # the LAPACK gufunc np.linalg.inv runs, without its ~10 us of Python wrapping per call
    from numpy.linalg import _umath_linalg as _lapack

    _INV = _lapack.inv
except (ImportError, AttributeError):  # pragma: no cover - a numpy without it: the public call
    _INV = None
# Called directly, the gufunc reports a singular matrix as an invalid value (a RuntimeWarning;
# np.linalg.inv turns that flag into LinAlgError). The law then redoes the tick with the plain
# law, which raises LinAlgError as before: the warning would only repeat it.
warnings.filterwarnings(
    "ignore", "invalid value encountered in inv", RuntimeWarning, re.escape(__name__)
)


def _fmax(a: float, b: float) -> float:
    """np.maximum on two floats (a NaN propagates)."""
    return b if (b > a or b != b) else a


def _fmin(a: float, b: float) -> float:
    """np.minimum on two floats (a NaN propagates)."""
    return b if (b < a or b != b) else a


class CartesianImpedanceLaw:
    """``cartesian_impedance_torque`` for the 1 kHz tick: the same law and the same operations,
    with the 6- and 3-vector arithmetic on Python floats, the two inverses through the LAPACK
    gufunc ``np.linalg.inv`` runs (the same result to the bit), and the gains' vectors read once
    per gains object. Torques agree with ``cartesian_impedance_torque`` to float rounding (the
    BLAS sums some products in another order). A non-finite torque is recomputed by
    ``cartesian_impedance_torque``, so a singular matrix still raises ``LinAlgError`` as it
    did, and a NaN input gives the same NaN torque."""

    def __init__(self) -> None:
        self._gains: CartesianGains | None = None
        self._reg = np.eye(6) * _LAMBDA_REGULARIZATION  # 0 off the diagonal: x + 0.0 == x

    def _read_gains(self, gains: CartesianGains) -> None:
        self._gains = gains
        self._k = gains.stiffness.tolist()
        self._two_zeta = (2.0 * gains.damping_ratio).tolist()
        self._clip = gains.error_clip.tolist()
        self._friction = bool(gains.friction_coulomb_nm.any())

    def torque(
        self,
        state: RobotState,
        model: RobotModel,
        reference: CartesianReference,
        gains: CartesianGains,
        posture_q_rad: np.ndarray,
        integral_force_n: np.ndarray | None = None,
    ) -> np.ndarray:
        """Joint torque (7,), Nm, excluding gravity (see ``cartesian_impedance_torque``)."""
        if _INV is None:  # pragma: no cover
            return cartesian_impedance_torque(
                state, model, reference, gains, posture_q_rad, integral_force_n
            )
        if gains is not self._gains:
            self._read_gains(gains)
        J = model.jacobian
        M = model.mass_matrix
        dq = state.dq_rad_s
        # pose error (position, then rotation vector), clipped per axis
        rx, ry, rz = reference.pos_m.tolist()
        px, py, pz = state.ee_pos_m.tolist()
        rot = quat_log_f(quat_mul_conj_f(reference.quat_xyzw.tolist(), state.ee_quat_xyzw.tolist()))
        clip = self._clip
        error = [
            _fmin(_fmax(e, -c), c)
            for e, c in zip((rx - px, ry - py, rz - pz, *rot), clip, strict=True)
        ]

        # (ndarray.dot: the same BLAS call as @, without the matmul ufunc's dispatch)
        JT = J.T
        M_inv = _INV(M, signature="d->d")
        JMinv = J.dot(M_inv)
        lambda_inv = JMinv.dot(JT)
        lambda_inv += self._reg
        task_inertia = _INV(lambda_inv, signature="d->d")
        diag = task_inertia.diagonal().tolist()
        if sum(diag) > MAX_TASK_INERTIA:  # near a singularity (see MAX_TASK_INERTIA)
            task_inertia = bounded_task_inertia(task_inertia, lambda_inv)
            diag = task_inertia.diagonal().tolist()

        k = self._k
        twist = J.dot(dq).tolist()
        ref_twist = reference.twist.tolist()
        feedforward = task_inertia.dot(reference.accel).tolist()
        wrench = []
        for i in range(6):
            x = k[i] * diag[i]
            damping = self._two_zeta[i] * (math.sqrt(x) if x >= 0.0 else math.nan)
            wrench.append(k[i] * error[i] - damping * (twist[i] - ref_twist[i]) + feedforward[i])
        if integral_force_n is not None:
            fx, fy, fz = integral_force_n.tolist()
            wrench[0] += fx
            wrench[1] += fy
            wrench[2] += fz
        tau_task = JT.dot(np.array(wrench))
        if self._friction:  # Coulomb friction, signed by the reference's joint velocity
            dq_ref = JMinv.T.dot(task_inertia.dot(reference.twist))
            tau_task += gains.friction_coulomb_nm * np.tanh(dq_ref / gains.friction_velocity_rad_s)

        omega = gains.nullspace_natural_freq_rad_s
        cap = gains.nullspace_torque_cap_nm
        tau_spring = M.dot(omega * omega * (posture_q_rad - state.q_rad)).tolist()
        tau_damper = M.dot((2.0 * gains.nullspace_damping_ratio * omega) * dq).tolist()
        tau_posture = np.array(
            [_fmin(_fmax(s, -cap), cap) - d for s, d in zip(tau_spring, tau_damper, strict=True)]
        )
        tau_null = tau_posture - JT.dot(task_inertia.dot(JMinv.dot(tau_posture)))
        tau_task += tau_null
        tau_task += model.coriolis_nm
        total = sum(tau_task.tolist())
        if total - total != 0.0:  # not finite (or huge): the plain law, which raises where it did
            return cartesian_impedance_torque(
                state, model, reference, gains, posture_q_rad, integral_force_n
            )
        return tau_task
