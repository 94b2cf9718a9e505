"""Reference pipeline: validated targets at 10-100 Hz -> a smooth 1 kHz reference with velocity.

Stages after validation (``robot_rl.controllers.targets``):
1. clip the target to the workspace box (position) and to bounds on the rotation away from a nominal
   orientation (rotation vector in the nominal frame, so no Euler-angle singularities);
   a position further than ``reject_margin_m`` outside the box is rejected as out of range; a
   twist feedforward is scaled down to the reference speed limits, and one more than
   ``TWIST_REJECT_FACTOR`` times over them is rejected (``bound_twist``);
2. interpolate from the current reference to the goal over the observed target period: linearly, or
   with a cubic Hermite segment when the target carries a twist (so streamed trajectories keep their
   velocity), extrapolating for at most one more period if the next target is late;
3. follow that segment with a motion profile: the reference's velocity is continuous and changes
   by at most ``profile_accel_m_s2`` / ``profile_angular_accel_rad_s2`` (vector norms), it
   brakes to rest on a goal that ends at rest (no overshoot), its speed stays under the linear
   and angular limits and, given the arm's Jacobian, under ``joint_speed_fraction`` of every
   joint's speed limit; a new target re-plans from the current velocity, so a 10 Hz stream of
   targets gives one smooth motion; the reference twist is its own finite difference;
4. keep the reference in the box on every tick: it brakes toward a face at
   ``box_brake_m_s2`` so that it reaches the face at rest (whatever a Hermite segment or its
   extrapolation asks for), scaling its whole step so it keeps its direction, and never moves
   further out of the box (a reference that starts outside, after a reset, may only move back in);
5. smooth stiffness changes with a first-order filter.
No clock inside: callers pass the time.

The default workspace box is one the Panda reaches gripper-down, away from its joint limits and
singular poses (tests/controllers/test_workspace_reach.py sweeps it); its corners are not the
arm's reach, which is a sphere about the shoulder.
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

    pos_min_m: tuple[float, float, float] = (0.3, -0.25, 0.015)
    pos_max_m: tuple[float, float, float] = (0.65, 0.25, 0.5)
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

    def outside_m(self, pos_m: np.ndarray) -> float:
        """How far (m, along the worst axis) ``pos_m`` lies outside the box; <= 0 inside."""
        lo, hi = np.asarray(self.pos_min_m), np.asarray(self.pos_max_m)
        return float(np.maximum(lo - pos_m, pos_m - hi).max())


@dataclass(frozen=True)
class ReferenceConfig:
    """Speed limits and timing of the reference pipeline."""

    # Speed caps, m/s and rad/s: a 10 Hz policy's largest step (5 cm, env xyz_step_m <= 0.05)
    # and a 0.15 rad turn per 100 ms, well under the Panda's Cartesian limits (1.7 m/s, 2.5 rad/s).
    max_linear_speed_m_s: float = 0.5
    max_angular_speed_rad_s: float = 1.5
    max_linear_accel_m_s2: float = 5.0  # bound on the acceleration feedforward
    box_brake_m_s2: float = 2.5  # deceleration toward a workspace face (0.5 m/s stops in 5 cm)
    max_angular_accel_rad_s2: float = 20.0
    # The reference's own motion profile: its velocity changes by at most these per second
    # (vector norms, m/s^2 and rad/s^2), so it never jumps from rest to full speed in one tick.
    # Why these values: rest to 0.5 m/s then takes 50 ms (1.5 rad/s: 150 ms), which the impedance
    # law follows under the 1000 Nm/s torque-rate limit, while a 10 Hz policy's 2 cm step
    # (0.2 m/s) still completes about within its 100 ms period; both sit under the Panda's own
    # Cartesian limits (13 m/s^2, 25 rad/s^2).
    profile_accel_m_s2: float = 10.0
    profile_angular_accel_rad_s2: float = 10.0
    # With the arm's Jacobian given, the reference slows down wherever its twist would need a joint
    # faster than this fraction of its limit (folded poses near the box's low near corners): the
    # tracking transient then stays under the torque safety's velocity guard (85 %).
    joint_speed_fraction: float = 0.5
    nominal_target_period_s: float = 0.1
    min_target_period_s: float = 0.01
    max_target_period_s: float = 0.1
    gain_time_constant_s: float = 0.05
    workspace: Workspace = field(default_factory=Workspace)


# A twist more than this many times over the reference speed limits is a bug or an attack, not a
# trajectory to follow: it is rejected rather than scaled down.
TWIST_REJECT_FACTOR = 2.0


def bound_twist(twist: np.ndarray, config: ReferenceConfig) -> tuple[np.ndarray, bool]:
    """(twist scaled into the speed limits, whether it was scaled); InvalidTargetError if it is
    more than ``TWIST_REJECT_FACTOR`` times over them. twist (6,) m/s then rad/s, base frame."""
    out = np.array(twist, dtype=float)
    scaled = False
    for part, limit, unit in ((slice(0, 3), config.max_linear_speed_m_s, "m/s"),
                              (slice(3, 6), config.max_angular_speed_rad_s, "rad/s")):  # fmt: skip
        peak = float(np.abs(out[part]).max())  # checked first: the norm of 1e308 overflows
        speed = float(np.linalg.norm(out[part])) if peak <= 1e150 else math.inf
        if speed > TWIST_REJECT_FACTOR * limit:
            raise InvalidTargetError(
                f"twist={[float(f'{v:.4g}') for v in out]} asks for {speed:.4g} {unit}; the "
                f"reference moves at most {limit} {unit} and twists above "
                f"{TWIST_REJECT_FACTOR * limit} {unit} are rejected"
            )
        if speed > limit:
            out[part] *= limit / speed
            scaled = True
    return out, scaled


def _stop_speed(dist: float, accel: float, period_s: float) -> float:
    """The highest speed (per second) from which braking by ``accel * period_s`` per tick (the
    position moves first, then the speed drops) ends exactly on ``dist`` at rest: the speeds
    run r + N a T, r + (N - 1) a T, ..., r with 0 <= r < a T, covering
    T ((N + 1) r + a T N (N + 1) / 2) = dist."""
    step = accel * period_s  # speed lost per tick
    n = math.floor(math.sqrt(0.25 + 2.0 * dist / (step * period_s)) - 0.5)
    r = (dist / period_s - step * n * (n + 1) / 2.0) / (n + 1)
    return n * step + min(max(r, 0.0), step)


def _joint_speed_ratio(jacobian: np.ndarray, twist: np.ndarray, allowed_rad_s: np.ndarray) -> float:
    """max_i |dq_i| / allowed_i for the least-norm joint speeds dq (7,) that give ``twist`` (6,)."""
    dq = np.linalg.lstsq(jacobian, twist, rcond=1e-6)[0]
    return float(np.max(np.abs(dq) / allowed_rad_s))


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
        self.braked_ticks = 0  # ticks on which the box braked or stopped the reference
        self.joint_slowed_ticks = 0  # ticks on which the joint speeds capped the reference speed
        self._box_lo = np.asarray(config.workspace.pos_min_m, dtype=float)
        self._box_hi = np.asarray(config.workspace.pos_max_m, dtype=float)
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
        self._seg_v1 = np.zeros(6) if target.twist is None else target.twist.copy()
        # A goal on a face of the box cannot move on through it: drop that part of its twist.
        lo, hi = self._box_lo, self._box_hi
        outward = ((pos >= hi) & (self._seg_v1[:3] > 0)) | ((pos <= lo) & (self._seg_v1[:3] < 0))
        self._seg_v1[:3][outward] = 0.0
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
        # Acceleration feedforward along smooth (twist-given) segments and while braking at the
        # box; a linear segment is followed with a bang-bang acceleration, not fed forward.
        if braked or self._seg_hermite:
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
        if worst > 1.0:
            step = step / worst
        new = pos + step
        # Never past a face, unless already beyond it (then never further out).
        new = np.minimum(new, np.maximum(hi, pos))
        new = np.maximum(new, np.minimum(lo, pos))
        step = new - pos
        changed = bool((step != lin_step).any())
        self.braked_ticks += int(changed)
        return step, changed

    @property
    def goal_pos_m(self) -> np.ndarray:
        return self._seg_p1


class JointReferenceGenerator:
    """Straight-line joint reference toward a goal, within per-joint speed and soft position
    limits."""

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
        """(q_ref (7,) rad, dq_ref (7,) rad/s) for this tick. All joints arrive together: the
        reference runs a straight line in joint space, as fast as its slowest joint allows (so
        the path between two checked poses is known)."""
        step = self.goal_rad - self.q_rad
        ratio = float(np.max(np.abs(step) / self.max_step_rad))
        if ratio > 1.0:
            step = step / ratio
        self.q_rad = self.q_rad + step
        return self.q_rad, step / self.period_s
