"""Plain-numpy forms of the 1 kHz Cartesian path's stages: the specification the fast ones are
checked against (tests) and timed against (``robot-rl bench franka``'s offline tick figures).

The fast stages (``reference.CartesianReferenceGenerator``, ``CartesianImpedanceLaw``,
``TorqueSafety.process``) do the same operations on Python floats and LAPACK gufuncs; these do
them on numpy arrays, as the loop did before (commit 3961635). ``plain_loop`` switches a
``ControlLoop`` to them. Nothing here runs in a controller.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from robot_rl.controllers.cartesian_impedance import (
    CartesianReference,
    cartesian_impedance_torque,
)
from robot_rl.controllers.gains import CartesianGains
from robot_rl.controllers.loop import ControlLoop
from robot_rl.controllers.reference import ReferenceConfig, _joint_speed_ratio, _stop_speed
from robot_rl.controllers.rotations import quat_conj, quat_exp, quat_log, quat_mul
from robot_rl.controllers.targets import CartesianTarget

from robot_rl.interfaces import RobotModel, RobotState


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


class PlainCartesianReferenceGenerator:
    """``reference.CartesianReferenceGenerator`` on numpy arrays (see the module docstring)."""

    def __init__(self, config: ReferenceConfig, period_s: float, gains: CartesianGains):
        self.config = config
        self.period_s = period_s
        self.gains = gains
        self._stiffness_goal = gains.stiffness.copy()
        self._gain_alpha = period_s / (config.gain_time_constant_s + period_s)
        self.clipped_count = 0
        self.braked_ticks = 0  # ticks on which the box braked or stopped the reference
        self.joint_slowed_ticks = 0  # ticks on which the joint speeds capped the reference speed
        self._box_lo = np.asarray(config.workspace.pos_min_m, dtype=float)
        self._box_hi = np.asarray(config.workspace.pos_max_m, dtype=float)
        self._pos = np.zeros(3)
        self._quat = np.array([0.0, 0.0, 0.0, 1.0])
        self._twist = np.zeros(6)
        self._ff = np.zeros(6)
        self._hold_segment(0.0)
        self._last_goal_time_s: float | None = None
        self._last_target_twist: np.ndarray | None = None
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
        self._seg_accel = np.zeros(6)
        self._seg_accel_until_s = 0.0
        self._seg_hermite = False

    def reset(self, pos_m: np.ndarray, quat_xyzw: np.ndarray, now_s: float) -> None:
        """Start from a measured pose at rest (loop start, or watchdog hold)."""
        self._pos = np.asarray(pos_m, dtype=float).copy()
        self._quat = np.asarray(quat_xyzw, dtype=float).copy()
        self._twist = np.zeros(6)
        self._ff = np.zeros(6)
        self._hold_segment(now_s)
        self._last_goal_time_s = None
        self._last_target_twist = None

    def brake_to_rest(self, now_s: float) -> None:
        """Slow from the current speed to rest along a smooth (Hermite) segment, then hold: the
        watchdog's hold, without the jolt of stopping a moving reference in one tick."""
        cfg, v = self.config, self._twist.copy()
        lin_speed, rot_speed = float(np.linalg.norm(v[:3])), float(np.linalg.norm(v[3:]))
        self._hold_segment(now_s)
        duration = max(lin_speed / cfg.box_brake_m_s2, rot_speed / cfg.max_angular_accel_rad_s2,
                       self.period_s)  # fmt: skip
        self._seg_t0 = now_s - self.period_s
        self._seg_T = duration
        self._seg_hermite = True
        self._seg_v0 = v
        self._seg_v1 = np.zeros(6)
        self._seg_p1 = self._pos + 0.5 * duration * v[:3]  # constant deceleration to rest
        self._seg_rot = 0.5 * duration * v[3:]
        self._seg_accel = -v / duration
        self._seg_accel_until_s = duration
        self._last_goal_time_s = None
        self._last_target_twist = None

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
        self._seg_v1 = np.zeros(6) if target.twist is None else target.twist.copy()
        # A goal on a face of the box cannot move on through it: drop that part of its twist.
        lo, hi = self._box_lo, self._box_hi
        outward = ((pos >= hi) & (self._seg_v1[:3] > 0)) | ((pos <= lo) & (self._seg_v1[:3] < 0))
        self._seg_v1[:3][outward] = 0.0
        prev = self._last_target_twist
        has_twist = target.twist is not None
        ok = has_twist and prev is not None
        self._seg_accel = (self._seg_v1 - prev) / self._target_period_s if ok else np.zeros(6)
        self._last_target_twist = self._seg_v1.copy() if has_twist else None
        self._seg_accel_until_s = (2.0 if self._seg_v1.any() else 1.0) * self._seg_T
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

    def step(
        self,
        now_s: float,
        jacobian: np.ndarray | None = None,
        joint_speed_max_rad_s: np.ndarray | None = None,
    ) -> CartesianReference:
        """Advance the reference to ``now_s`` (one control period later than the last call).

        The segment gives where the reference should be (``p_des``) and how fast that point moves;
        the reference follows it with a bounded acceleration (``profile_accel_m_s2``,
        ``profile_angular_accel_rad_s2``): its velocity is the segment's plus a closing speed
        that can still brake to the segment point, capped so that it can also brake to rest on
        the segment's goal (when the goal is to be reached at rest), then speed-limited, and
        changed by at most the acceleration limit per tick. So a far jump ramps up to speed and
        brakes onto its goal, and a new target re-plans from the current velocity without a jolt.

        ``jacobian`` (6, 7) at the measured pose (linear rows first, base frame) and
        ``joint_speed_max_rad_s`` (7,): when both are given, the speed caps are lowered so that
        the (least-norm) joint speeds of the reference twist stay under ``joint_speed_fraction``
        of the limits; the acceleration bound still holds while it slows down.
        """
        cfg, dt = self.config, self.period_s
        p_des, q_des = self._segment_pose(now_s)
        p_prev, q_prev = self._segment_pose(now_s - dt)
        rest_lin, rest_rot = self._goal_at_rest()
        goal_p, goal_q = self._segment_goal()
        # The reference sits where the segment was a tick ago when it follows it exactly, so its
        # error is measured against that point; the segment's velocity carries it on to p_des.
        lin_args = ((p_des - p_prev) / dt, p_prev - self._pos,
                    goal_p - self._pos if rest_lin else None, self._twist[:3],
                    cfg.profile_accel_m_s2)  # fmt: skip
        rot_args = (quat_log(quat_mul(q_des, quat_conj(q_prev))) / dt,
                    quat_log(quat_mul(q_prev, quat_conj(self._quat))),
                    quat_log(quat_mul(goal_q, quat_conj(self._quat))) if rest_rot else None,
                    self._twist[3:], cfg.profile_angular_accel_rad_s2)  # fmt: skip
        v_lin = self._profile(*lin_args, cfg.max_linear_speed_m_s)
        v_rot = self._profile(*rot_args, cfg.max_angular_speed_rad_s)
        # (at rest there is nothing to check: a least-squares solve less on a holding tick)
        if (
            jacobian is not None
            and joint_speed_max_rad_s is not None
            and (v_lin.any() or v_rot.any())
        ):
            ratio = _joint_speed_ratio(
                jacobian, np.concatenate((v_lin, v_rot)),
                cfg.joint_speed_fraction * np.asarray(joint_speed_max_rad_s, dtype=float),
            )  # fmt: skip
            if ratio > 1.0:
                self.joint_slowed_ticks += 1
                # the same profile under speed caps scaled down to this ratio's allowance
                v_lin = self._profile(*lin_args, float(np.linalg.norm(v_lin)) / ratio)
                v_rot = self._profile(*rot_args, float(np.linalg.norm(v_rot)) / ratio)
        lin_step, braked = self._keep_in_box(v_lin * dt)
        rot_step = v_rot * dt
        self._pos = self._pos + lin_step
        self._quat = quat_mul(quat_exp(rot_step), self._quat)
        twist = np.concatenate((lin_step, rot_step)) / dt
        # Acceleration feedforward: along a smooth (twist-given) segment, the target stream's,
        # also while a late next target is awaited; else the reference's own change of speed.
        if self._seg_hermite and not braked and now_s - self._seg_t0 <= self._seg_accel_until_s:
            accel = self._seg_accel.copy()
        else:
            f = self.period_s / (cfg.accel_feedforward_time_constant_s + self.period_s)
            accel = self._ff + f * ((twist - self._twist) / dt - self._ff)
        self._ff = accel.copy()
        accel[:3] = np.minimum(
            np.maximum(accel[:3], -cfg.max_linear_accel_m_s2), cfg.max_linear_accel_m_s2
        )
        accel[3:] = np.minimum(
            np.maximum(accel[3:], -cfg.max_angular_accel_rad_s2), cfg.max_angular_accel_rad_s2
        )
        self._twist = twist

        if (self.gains.stiffness != self._stiffness_goal).any():
            k = self.gains.stiffness + self._gain_alpha * (
                self._stiffness_goal - self.gains.stiffness
            )
            if np.abs(k - self._stiffness_goal).max() < 1e-6:
                k = self._stiffness_goal.copy()
            self.gains = dataclasses.replace(self.gains, stiffness=k)
        return CartesianReference(self._pos, self._quat, self._twist, accel)

    def _goal_at_rest(self) -> tuple[bool, bool]:
        """Whether the segment ends at rest (linear part, rotational part)."""
        if not self._seg_hermite:
            return True, True
        return not self._seg_v1[:3].any(), not self._seg_v1[3:].any()

    def _segment_goal(self) -> tuple[np.ndarray, np.ndarray]:
        return self._seg_p1, quat_mul(quat_exp(self._seg_rot), self._seg_q0)

    def _profile(
        self,
        v_seg: np.ndarray,
        error: np.ndarray,
        to_goal: np.ndarray | None,
        v_now: np.ndarray,
        accel: float,
        speed: float,
    ) -> np.ndarray:
        """This tick's velocity (3,): the segment's velocity ``v_seg`` plus a closing speed along
        ``error`` (segment point - reference), its component toward ``to_goal`` (goal -
        reference; None when the segment does not end at rest) capped to what can still stop
        there, its norm capped at ``speed``, and at most ``accel * period`` away from ``v_now``."""
        dt = self.period_s
        dist = math.sqrt(float(error @ error))
        v = v_seg.copy()
        if dist > 0.0:
            v += error * (_stop_speed(dist, accel, dt) / dist)
        if to_goal is not None:
            d_goal = math.sqrt(float(to_goal @ to_goal))
            if d_goal > 0.0:
                n = to_goal / d_goal
                over = float(v @ n) - _stop_speed(d_goal, accel, dt)
                if over > 0.0:
                    v -= over * n
        norm = math.sqrt(float(v @ v))
        if norm > speed:
            v *= speed / norm
        dv = v - v_now
        dv_norm = math.sqrt(float(dv @ dv))
        if dv_norm > accel * dt:
            v = v_now + dv * (accel * dt / dv_norm)
        return v

    def _keep_in_box(self, lin_step: np.ndarray) -> tuple[np.ndarray, bool]:
        """This tick's position step, braked so the reference reaches a box face at rest and
        never moves further out of the box; (step, whether it was changed). Braking scales the
        whole step, so the reference keeps its direction (a diagonal move to a corner stays a
        straight line); a component into a face the reference already touches is dropped."""
        lo, hi = self._box_lo, self._box_hi
        pos = self._pos
        # Room to each face along the direction of motion (0 when at or beyond it); the speed
        # toward a face is capped at sqrt(2 a room), so braking at a completes at the face.
        room = np.maximum(np.where(lin_step > 0, hi - pos, pos - lo), 0.0)
        cap = np.sqrt(2.0 * self.config.box_brake_m_s2 * room) * self.period_s
        step = np.where(cap > 0.0, lin_step, 0.0)
        ratio = np.abs(step) / np.where(cap > 0.0, cap, 1.0)
        worst = float(ratio.max())
        # braked (scaled), a component dropped, or stopped at a face; never rounding alone
        changed = worst > 1.0 or bool((step != lin_step).any())
        if worst > 1.0:
            step = step / worst
        free = pos + step
        # Never past a face, unless already beyond it (then never further out).
        new = np.maximum(np.minimum(free, np.maximum(hi, pos)), np.minimum(lo, pos))
        changed = changed or bool((new != free).any())
        step = new - pos
        self.braked_ticks += int(changed)
        return step, changed

    @property
    def goal_pos_m(self) -> np.ndarray:
        return self._seg_p1


class PlainCartesianLaw:
    """``cartesian_impedance_torque`` behind the ``CartesianImpedanceLaw`` interface."""

    def torque(
        self,
        state: RobotState,
        model: RobotModel,
        reference: CartesianReference,
        gains: CartesianGains,
        posture_q_rad: np.ndarray,
        integral_force_n: np.ndarray | None = None,
    ) -> np.ndarray:
        return cartesian_impedance_torque(
            state, model, reference, gains, posture_q_rad, integral_force_n
        )


def plain_loop(loop: ControlLoop) -> ControlLoop:
    """Switch ``loop`` (before its first tick) to the plain stages: reference generator,
    impedance law and torque safety. Returns it."""
    config = loop.config
    loop.cartesian = PlainCartesianReferenceGenerator(  # type: ignore[assignment]
        config.reference, config.period_s, config.cartesian_gains
    )
    loop.law = PlainCartesianLaw()  # type: ignore[assignment]
    loop.safety.process = loop.safety.process_reference  # type: ignore[method-assign]
    return loop
