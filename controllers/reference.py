"""Reference pipeline: validated targets at 10-100 Hz -> a smooth 1 kHz reference with velocity.

Stages after validation (``robot_rl.controllers.targets``):
1. clip the target to the workspace box (position) and to bounds on the rotation away from a nominal
   orientation (rotation vector in the nominal frame, so no Euler-angle singularities);
   a position further than ``reject_margin_m`` outside the box is rejected as out of range;
2. interpolate from the current reference to the goal over the observed target period: linearly, or
   with a cubic Hermite segment when the target carries a twist (so streamed trajectories keep their
   velocity), extrapolating for at most one more period if the next target is late;
3. limit the reference's linear and angular speed; the reference twist is its own finite difference;
4. smooth stiffness changes with a first-order filter.
No clock inside: callers pass the time.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np
from robot_rl.controllers.cartesian_impedance import CartesianReference
from robot_rl.controllers.gains import CartesianGains
from robot_rl.controllers.rotations import quat_conj, quat_exp, quat_log, quat_mul
from robot_rl.controllers.targets import CartesianTarget, InvalidTargetError

# Nominal orientation: tool z axis pointing down (rotation of pi about base x).
GRIPPER_DOWN_QUAT_XYZW = (1.0, 0.0, 0.0, 0.0)


@dataclass(frozen=True)
class Workspace:
    """Allowed TCP poses: a position box (m) and per-axis rotation bounds (rad) about a nominal."""

    pos_min_m: tuple[float, float, float] = (0.25, -0.4, 0.005)
    pos_max_m: tuple[float, float, float] = (0.75, 0.4, 0.6)
    nominal_quat_xyzw: tuple[float, float, float, float] = GRIPPER_DOWN_QUAT_XYZW
    rot_bound_rad: tuple[float, float, float] = (0.7, 0.7, math.pi)
    reject_margin_m: float = 0.25

    def clip(self, pos_m: np.ndarray, quat_xyzw: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
        """(clipped position, clipped quaternion, whether anything was clipped)."""
        lo, hi = np.asarray(self.pos_min_m), np.asarray(self.pos_max_m)
        outside = np.maximum(lo - pos_m, pos_m - hi).max()
        if outside > self.reject_margin_m:
            raise InvalidTargetError(
                f"pos_m={pos_m.tolist()} is {outside:.3f} m outside the workspace box "
                f"{list(self.pos_min_m)}..{list(self.pos_max_m)}; targets more than "
                f"{self.reject_margin_m} m outside are rejected (units are metres)"
            )
        pos_c = np.clip(pos_m, lo, hi)
        nominal = np.asarray(self.nominal_quat_xyzw, dtype=float)
        rot = quat_log(quat_mul(quat_conj(nominal), quat_xyzw))  # in the nominal frame
        bound = np.asarray(self.rot_bound_rad)
        rot_c = np.clip(rot, -bound, bound)
        clipped = bool((pos_c != pos_m).any() or (rot_c != rot).any())
        quat_c = quat_mul(nominal, quat_exp(rot_c)) if clipped else quat_xyzw
        return pos_c, quat_c, clipped


@dataclass(frozen=True)
class ReferenceConfig:
    """Speed limits and timing of the reference pipeline."""

    max_linear_speed_m_s: float = 0.5
    max_angular_speed_rad_s: float = 1.5
    max_linear_accel_m_s2: float = 5.0  # bound on the acceleration feedforward
    max_angular_accel_rad_s2: float = 20.0
    nominal_target_period_s: float = 0.1
    min_target_period_s: float = 0.01
    max_target_period_s: float = 0.1
    gain_time_constant_s: float = 0.05
    workspace: Workspace = field(default_factory=Workspace)


def _hermite(
    s: float, p0: np.ndarray, v0: np.ndarray, p1: np.ndarray, v1: np.ndarray, T: float
) -> np.ndarray:
    s2, s3 = s * s, s * s * s
    return (
        (2 * s3 - 3 * s2 + 1) * p0
        + (s3 - 2 * s2 + s) * T * v0
        + (-2 * s3 + 3 * s2) * p1
        + (s3 - s2) * T * v1
    )


class CartesianReferenceGenerator:
    """Turns sparse Cartesian targets into a per-tick reference (pose, twist) and smoothed gains."""

    def __init__(self, config: ReferenceConfig, period_s: float, gains: CartesianGains):
        self.config = config
        self.period_s = period_s
        self.gains = gains
        self._stiffness_goal = gains.stiffness.copy()
        self._gain_alpha = period_s / (config.gain_time_constant_s + period_s)
        self.clipped_count = 0
        self._pos = np.zeros(3)
        self._quat = np.array([0.0, 0.0, 0.0, 1.0])
        self._twist = np.zeros(6)
        self._hold_segment(0.0)
        self._last_goal_time_s: float | None = None
        self._target_period_s = config.nominal_target_period_s

    # -- segment bookkeeping -------------------------------------------------------------
    def _hold_segment(self, now_s: float) -> None:
        self._seg_t0 = now_s
        self._seg_T = 1.0
        self._seg_p0 = self._pos.copy()
        self._seg_p1 = self._pos.copy()
        self._seg_q0 = self._quat.copy()
        self._seg_rot = np.zeros(3)
        self._seg_v0 = np.zeros(6)
        self._seg_v1 = np.zeros(6)
        self._seg_hermite = False

    def reset(self, pos_m: np.ndarray, quat_xyzw: np.ndarray, now_s: float) -> None:
        """Start from a measured pose at rest (loop start, or watchdog hold)."""
        self._pos = np.asarray(pos_m, dtype=float).copy()
        self._quat = np.asarray(quat_xyzw, dtype=float).copy()
        self._twist = np.zeros(6)
        self._hold_segment(now_s)
        self._last_goal_time_s = None

    def set_goal(self, target: CartesianTarget, now_s: float) -> bool:
        """Start a segment toward a validated target. Returns whether the workspace clipped it."""
        pos, quat, clipped = self.config.workspace.clip(target.pos_m, target.quat_xyzw)
        self.clipped_count += int(clipped)
        cfg = self.config
        if self._last_goal_time_s is not None:
            dt = now_s - self._last_goal_time_s
            estimate = min(max(dt, cfg.min_target_period_s), cfg.max_target_period_s)
            self._target_period_s = 0.5 * self._target_period_s + 0.5 * estimate
        self._last_goal_time_s = now_s
        # The segment starts where the reference was on the previous tick, so the reference keeps
        # moving on the tick a target arrives (starting at now_s would stall it for one tick).
        self._seg_t0 = now_s - self.period_s
        self._seg_T = self._target_period_s
        self._seg_p0 = self._pos.copy()
        self._seg_q0 = self._quat.copy()
        self._seg_p1 = pos
        self._seg_rot = quat_log(quat_mul(quat, quat_conj(self._quat)))
        self._seg_hermite = target.twist is not None
        self._seg_v0 = self._twist.copy()
        self._seg_v1 = np.zeros(6) if target.twist is None else target.twist
        if target.stiffness is not None:
            self._stiffness_goal = target.stiffness
        return clipped

    def _segment_pose(self, now_s: float) -> tuple[np.ndarray, np.ndarray]:
        T = self._seg_T
        t = now_s - self._seg_t0
        if self._seg_hermite:
            if t <= T:
                s = t / T
                p = _hermite(s, self._seg_p0, self._seg_v0[:3], self._seg_p1, self._seg_v1[:3], T)
                r = _hermite(s, np.zeros(3), self._seg_v0[3:], self._seg_rot, self._seg_v1[3:], T)
            else:  # late next target: keep the goal's velocity for at most one more period
                extra = min(t - T, T)
                p = self._seg_p1 + self._seg_v1[:3] * extra
                r = self._seg_rot + self._seg_v1[3:] * extra
        else:
            s = min(t / T, 1.0)
            p = self._seg_p0 + s * (self._seg_p1 - self._seg_p0)
            r = s * self._seg_rot
        return p, quat_mul(quat_exp(r), self._seg_q0)

    def step(self, now_s: float) -> CartesianReference:
        """Advance the reference to ``now_s`` (one control period later than the last call)."""
        p_des, q_des = self._segment_pose(now_s)
        cfg = self.config
        dt = self.period_s
        lin_step = p_des - self._pos
        lin_norm = math.sqrt(float(lin_step @ lin_step))
        lin_max = cfg.max_linear_speed_m_s * dt
        if lin_norm > lin_max:
            lin_step *= lin_max / lin_norm
        rot_step = quat_log(quat_mul(q_des, quat_conj(self._quat)))
        rot_norm = math.sqrt(float(rot_step @ rot_step))
        rot_max = cfg.max_angular_speed_rad_s * dt
        if rot_norm > rot_max:
            rot_step *= rot_max / rot_norm
        self._pos = self._pos + lin_step
        self._quat = quat_mul(quat_exp(rot_step), self._quat)
        twist = np.concatenate((lin_step, rot_step)) / dt
        # Acceleration feedforward only along smooth (twist-given) segments; a linear segment's
        # velocity steps, and a speed-limited one is not the planned path.
        limited = lin_norm > lin_max or rot_norm > rot_max
        if self._seg_hermite and not limited:
            accel = (twist - self._twist) / dt
            accel[:3] = np.minimum(
                np.maximum(accel[:3], -cfg.max_linear_accel_m_s2), cfg.max_linear_accel_m_s2
            )
            accel[3:] = np.minimum(
                np.maximum(accel[3:], -cfg.max_angular_accel_rad_s2), cfg.max_angular_accel_rad_s2
            )
        else:
            accel = np.zeros(6)
        self._twist = twist

        if (self.gains.stiffness != self._stiffness_goal).any():
            k = self.gains.stiffness + self._gain_alpha * (
                self._stiffness_goal - self.gains.stiffness
            )
            if np.abs(k - self._stiffness_goal).max() < 1e-6:
                k = self._stiffness_goal.copy()
            self.gains = dataclasses.replace(self.gains, stiffness=k)
        return CartesianReference(self._pos, self._quat, self._twist, accel)

    @property
    def goal_pos_m(self) -> np.ndarray:
        return self._seg_p1


class JointReferenceGenerator:
    """Linear interpolation of joint targets with per-joint speed limits and soft joint limits."""

    def __init__(
        self,
        q_min_rad: np.ndarray,
        q_max_rad: np.ndarray,
        max_speed_rad_s: np.ndarray,
        period_s: float,
    ):
        self.q_min_rad = q_min_rad
        self.q_max_rad = q_max_rad
        self.max_step_rad = max_speed_rad_s * period_s
        self.period_s = period_s
        self.q_rad = np.zeros(len(q_min_rad))
        self.goal_rad = self.q_rad.copy()

    def reset(self, q_rad: np.ndarray) -> None:
        self.q_rad = np.asarray(q_rad, dtype=float).copy()
        self.goal_rad = self.q_rad.copy()

    def set_goal(self, q_rad: np.ndarray) -> None:
        self.goal_rad = np.clip(q_rad, self.q_min_rad, self.q_max_rad)

    def step(self) -> tuple[np.ndarray, np.ndarray]:
        """(q_ref (7,) rad, dq_ref (7,) rad/s) for this tick."""
        step = np.clip(self.goal_rad - self.q_rad, -self.max_step_rad, self.max_step_rad)
        self.q_rad = self.q_rad + step
        return self.q_rad, step / self.period_s
