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
import re
import warnings
from dataclasses import dataclass, field

import numpy as np
from robot_rl.controllers.cartesian_impedance import CartesianReference
from robot_rl.controllers.gains import CartesianGains
from robot_rl.controllers.rotations import (
    QuatF,
    Vec3F,
    quat_conj,
    quat_exp,
    quat_exp_f,
    quat_log,
    quat_log_f,
    quat_mul,
    quat_mul_conj_f,
    quat_mul_f,
)
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

    def __post_init__(self) -> None:
        """A box every target is clipped to must be one: finite, each minimum under its maximum
        (a NaN or an inverted box from a hand-edited rig file would clip targets to nonsense)."""

        def numbers(name: str, values: tuple[float, ...], size: int) -> list[float]:
            try:
                out = [float(v) for v in values]
            except (TypeError, ValueError):
                out = []
            if len(out) != size or not all(math.isfinite(v) for v in out):
                raise ValueError(f"{name}={values!r}; allowed: {size} finite numbers")
            return out

        lo = numbers("pos_min_m", self.pos_min_m, 3)
        hi = numbers("pos_max_m", self.pos_max_m, 3)
        for axis, a, b in zip("xyz", lo, hi, strict=True):
            if not a < b:
                raise ValueError(
                    f"pos_min_m {axis}={a} is not below pos_max_m {axis}={b}; "
                    "the box needs each minimum under its maximum (metres)"
                )
        quat = numbers("nominal_quat_xyzw", self.nominal_quat_xyzw, 4)
        if abs(math.sqrt(sum(v * v for v in quat)) - 1.0) > 1e-3:
            raise ValueError(
                f"nominal_quat_xyzw={list(self.nominal_quat_xyzw)}; allowed: a unit "
                "quaternion (x, y, z, w)"
            )
        if any(v < 0.0 for v in numbers("rot_bound_rad", self.rot_bound_rad, 3)):
            raise ValueError(f"rot_bound_rad={list(self.rot_bound_rad)}; allowed: >= 0")
        if not (math.isfinite(self.reject_margin_m) and self.reject_margin_m >= 0.0):
            raise ValueError(f"reject_margin_m={self.reject_margin_m!r}; allowed: a number >= 0")

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
    # The reference's own acceleration (its ramps and brakes), fed forward off smooth segments,
    # passes a first-order filter with this time constant (0: unfiltered). Its profile is
    # bang-bang, so unfiltered it steps the torque by up to Lambda * accel at each ramp. The twin
    # (lockstep, exact 1 ms ticks) runs unfiltered: its 5 cm step overshoots under 5 mm and its
    # full-speed run into a box corner stays within 3 mm of the box, and its reach policy learned
    # better so (seeds 1-2 at 2k steps: 95/95 % unfiltered, 90/85 % at 20 ms). A loop on a real
    # arm's clock filters (the Franka backend's FRANKA_ACCEL_FEEDFORWARD_TIME_CONSTANT_S, 20 ms):
    # on franky-sim, targets without twist along a circle (20 Hz) rode the torque-rate limit on
    # 94 % of ticks unfiltered (83, 76, 69, 58, 44 % at 5, 10, 20, 50, 100 ms; circle mean 2.45,
    # 2.56, 2.05, 1.77, 1.48, 1.60 mm); the twin's two tests held up to 20 ms, failed from 50 ms.
    accel_feedforward_time_constant_s: float = 0.0
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


try:  # the LAPACK gufunc np.linalg.lstsq runs, without its ~20 us of Python wrapping
    from numpy.linalg import _umath_linalg as _lapack

    _LSTSQ = _lapack.lstsq
except (ImportError, AttributeError):  # pragma: no cover - a numpy without it: the public call
    _LSTSQ = None
# Called directly, the gufunc reports a failed solve as an invalid value (a RuntimeWarning;
# np.linalg.lstsq raises LinAlgError on it): the non-finite result is then redone through
# np.linalg.lstsq, which raises, so the warning would only repeat the error.
warnings.filterwarnings(
    "ignore", "invalid value encountered in lstsq", RuntimeWarning, re.escape(__name__)
)


def _joint_speed_ratio_f(
    jacobian: np.ndarray, twist: list[float], allowed_rad_s: tuple[float, ...]
) -> float:
    """``_joint_speed_ratio`` for the 1 kHz tick: the same least-squares solve (the gufunc
    ``np.linalg.lstsq`` wraps, so the same dq to the bit); a result that is not finite (a
    non-finite Jacobian) is redone through ``np.linalg.lstsq``, which raises where it did."""
    if _LSTSQ is None:  # pragma: no cover
        return _joint_speed_ratio(jacobian, np.asarray(twist), np.asarray(allowed_rad_s))
    rhs = np.array(twist)
    dq = _LSTSQ(jacobian, rhs[:, None], 1e-6, signature="ddd->ddid")[0].ravel().tolist()
    ratio = _nanmax([abs(v) / a for v, a in zip(dq, allowed_rad_s, strict=True)])
    if not math.isfinite(ratio):
        return _joint_speed_ratio(jacobian, rhs, np.asarray(allowed_rad_s))
    return ratio


# NaN-propagating min / max / max-of-list on floats, as np.minimum / np.maximum / np.max are
# (Python's min and max drop a NaN depending on the argument order).
def _fmax(a: float, b: float) -> float:
    return b if (b > a or b != b) else a


def _fmin(a: float, b: float) -> float:
    return b if (b < a or b != b) else a


def _nanmax(values: list[float]) -> float:
    out = -math.inf
    for v in values:
        if v > out:
            out = v
        elif v != v:
            return math.nan
    return out


class CartesianReferenceGenerator:
    """Turns sparse Cartesian targets into a per-tick reference (pose, twist) and smoothed gains.

    The per-tick state is kept in Python floats (position 3, quaternion 4, twist 6): at 1 kHz a
    numpy call on a 3-vector costs more than the arithmetic it does."""

    def __init__(self, config: ReferenceConfig, period_s: float, gains: CartesianGains):
        self.config = config
        self.period_s = period_s
        self.gains = gains
        self._stiffness_goal = gains.stiffness.copy()
        self._gains_settling = True  # a new stiffness goal is being filtered in (checked once)
        self._gain_alpha = period_s / (config.gain_time_constant_s + period_s)
        self._ff_alpha = period_s / (config.accel_feedforward_time_constant_s + period_s)
        self._ff = [0.0] * 6  # the acceleration last fed forward (before its bound)
        self.clipped_count = 0
        self.braked_ticks = 0  # ticks on which the box braked or stopped the reference
        self.joint_slowed_ticks = 0  # ticks on which the joint speeds capped the reference speed
        self._box_lo = np.asarray(config.workspace.pos_min_m, dtype=float)
        self._box_hi = np.asarray(config.workspace.pos_max_m, dtype=float)
        self._lo = tuple(self._box_lo.tolist())
        self._hi = tuple(self._box_hi.tolist())
        self._brake2 = 2.0 * config.box_brake_m_s2
        self._joint_allowed: tuple[float, ...] = ()
        self._joint_allowed_src: np.ndarray | None = None
        self._pos = [0.0, 0.0, 0.0]
        self._quat = [0.0, 0.0, 0.0, 1.0]
        self._twist = [0.0] * 6
        self._hold_segment(0.0)
        self._last_goal_time_s: float | None = None
        self._last_target_twist: list[float] | None = None  # the previous target's, if it had one
        self._target_period_s = config.nominal_target_period_s

    # -- segment bookkeeping -------------------------------------------------------------
    def _hold_segment(self, now_s: float) -> None:
        self._seg_t0 = now_s
        self._seg_T = 1.0
        self._seg_p0 = list(self._pos)
        self._seg_p1 = list(self._pos)
        self._seg_q0 = list(self._quat)
        self._seg_rot = [0.0, 0.0, 0.0]
        self._seg_v0 = [0.0] * 6
        self._seg_v1 = [0.0] * 6
        self._seg_accel = [0.0] * 6  # fed forward along a Hermite segment
        self._seg_accel_until_s = 0.0  # ... this long after its start
        self._seg_hermite = False
        self._segment_changed()

    def _segment_changed(self) -> None:
        """Derived per-segment values (the goal orientation, whether it ends at rest)."""
        self._seg_goal_q = quat_mul_f(quat_exp_f(*self._seg_rot), self._seg_q0)
        v1 = self._seg_v1
        if self._seg_hermite:
            self._rest_lin = not (v1[0] or v1[1] or v1[2])
            self._rest_rot = not (v1[3] or v1[4] or v1[5])
        else:
            self._rest_lin = self._rest_rot = True

    def reset(self, pos_m: np.ndarray, quat_xyzw: np.ndarray, now_s: float) -> None:
        """Start from a measured pose at rest (loop start, or watchdog hold)."""
        self._pos = np.asarray(pos_m, dtype=float).reshape(3).tolist()
        self._quat = np.asarray(quat_xyzw, dtype=float).reshape(4).tolist()
        self._twist = [0.0] * 6
        self._ff = [0.0] * 6
        self._hold_segment(now_s)
        self._last_goal_time_s = None
        self._last_target_twist = None

    def brake_to_rest(self, now_s: float) -> None:
        """Slow from the current speed to rest along a smooth (Hermite) segment, then hold: the
        watchdog's hold, without the jolt of stopping a moving reference in one tick."""
        cfg, v = self.config, np.array(self._twist)
        lin_speed, rot_speed = float(np.linalg.norm(v[:3])), float(np.linalg.norm(v[3:]))
        self._hold_segment(now_s)
        duration = max(lin_speed / cfg.box_brake_m_s2, rot_speed / cfg.max_angular_accel_rad_s2,
                       self.period_s)  # fmt: skip
        self._seg_t0 = now_s - self.period_s
        self._seg_T = duration
        self._seg_hermite = True
        self._seg_v0 = v.tolist()
        self._seg_v1 = [0.0] * 6
        half = 0.5 * duration  # constant deceleration to rest
        self._seg_p1 = [p + half * vi for p, vi in zip(self._pos, self._seg_v0[:3], strict=True)]
        self._seg_rot = [half * vi for vi in self._seg_v0[3:]]
        self._seg_accel = [-vi / duration for vi in self._seg_v0]
        self._seg_accel_until_s = duration  # at rest from there on
        self._last_goal_time_s = None
        self._last_target_twist = None
        self._segment_changed()

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
        self._seg_p0 = list(self._pos)
        self._seg_q0 = list(self._quat)
        p1 = np.asarray(pos, dtype=float).tolist()
        self._seg_p1 = p1
        self._seg_rot = list(quat_log_f(quat_mul_conj_f(np.asarray(quat, float).tolist(),
                                                        self._quat)))  # fmt: skip
        self._seg_hermite = target.twist is not None
        self._seg_v0 = list(self._twist)
        v1 = [0.0] * 6 if target.twist is None else np.asarray(target.twist, float).tolist()
        # A goal on a face of the box cannot move on through it: drop that part of its twist.
        for i in range(3):
            if (p1[i] >= self._hi[i] and v1[i] > 0) or (p1[i] <= self._lo[i] and v1[i] < 0):
                v1[i] = 0.0
        self._seg_v1 = v1
        # The acceleration the target stream asks for: the change of its twist over its period
        # (a circle's centripetal). Not the Hermite's own second derivative, which starts from
        # the reference's velocity and so holds the profile's corrections as well.
        prev = self._last_target_twist
        if target.twist is not None and prev is not None:
            period = self._target_period_s
            self._seg_accel = [(a - b) / period for a, b in zip(v1, prev, strict=True)]
        else:
            self._seg_accel = [0.0] * 6
        self._last_target_twist = v1 if target.twist is not None else None
        # Fed forward over the segment, and while a late next target is awaited as long as the
        # pose moves on at the goal's velocity (one more period); a goal at rest stays put.
        moving_on = any(v1)
        self._seg_accel_until_s = (2.0 if moving_on else 1.0) * self._seg_T
        if target.stiffness is not None:
            self._stiffness_goal = target.stiffness
            self._gains_settling = True
        self._segment_changed()
        return clipped

    def _segment_pose(self, now_s: float) -> tuple[Vec3F, QuatF]:
        T = self._seg_T
        t = now_s - self._seg_t0
        p0, p1, rot = self._seg_p0, self._seg_p1, self._seg_rot
        if self._seg_hermite:
            v0, v1 = self._seg_v0, self._seg_v1
            if t <= T:  # cubic Hermite from (p0, v0) to (p1, v1) over T (rotation from 0)
                s = t / T
                s2, s3 = s * s, s * s * s
                h0 = 2 * s3 - 3 * s2 + 1
                h1 = (s3 - 2 * s2 + s) * T
                h2 = -2 * s3 + 3 * s2
                h3 = (s3 - s2) * T
                p = (
                    h0 * p0[0] + h1 * v0[0] + h2 * p1[0] + h3 * v1[0],
                    h0 * p0[1] + h1 * v0[1] + h2 * p1[1] + h3 * v1[1],
                    h0 * p0[2] + h1 * v0[2] + h2 * p1[2] + h3 * v1[2],
                )
                z = h0 * 0.0
                r = (
                    z + h1 * v0[3] + h2 * rot[0] + h3 * v1[3],
                    z + h1 * v0[4] + h2 * rot[1] + h3 * v1[4],
                    z + h1 * v0[5] + h2 * rot[2] + h3 * v1[5],
                )
            else:  # late next target: keep the goal's velocity for at most one more period
                extra = min(t - T, T)
                p = (p1[0] + v1[0] * extra, p1[1] + v1[1] * extra, p1[2] + v1[2] * extra)
                r = (rot[0] + v1[3] * extra, rot[1] + v1[4] * extra, rot[2] + v1[5] * extra)
        else:
            s = min(t / T, 1.0)
            p = (
                p0[0] + s * (p1[0] - p0[0]),
                p0[1] + s * (p1[1] - p0[1]),
                p0[2] + s * (p1[2] - p0[2]),
            )
            r = (s * rot[0], s * rot[1], s * rot[2])
        return p, quat_mul_f(quat_exp_f(r[0], r[1], r[2]), self._seg_q0)

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
        pos, quat, twist = self._pos, self._quat, self._twist
        goal_p = self._seg_p1
        # The reference sits where the segment was a tick ago when it follows it exactly, so its
        # error is measured against that point; the segment's velocity carries it on to p_des.
        px, py, pz = pos
        lin_args = (((p_des[0] - p_prev[0]) / dt, (p_des[1] - p_prev[1]) / dt,
                     (p_des[2] - p_prev[2]) / dt),
                    (p_prev[0] - px, p_prev[1] - py, p_prev[2] - pz),
                    (goal_p[0] - px, goal_p[1] - py, goal_p[2] - pz) if self._rest_lin else None,
                    twist[:3], cfg.profile_accel_m_s2)  # fmt: skip
        wx, wy, wz = quat_log_f(quat_mul_conj_f(q_des, q_prev))
        rot_args = ((wx / dt, wy / dt, wz / dt),
                    quat_log_f(quat_mul_conj_f(q_prev, quat)),
                    quat_log_f(quat_mul_conj_f(self._seg_goal_q, quat)) if self._rest_rot
                    else None,
                    twist[3:], cfg.profile_angular_accel_rad_s2)  # fmt: skip
        v_lin = self._profile(*lin_args, cfg.max_linear_speed_m_s)
        v_rot = self._profile(*rot_args, cfg.max_angular_speed_rad_s)
        # (at rest there is nothing to check: a least-squares solve less on a holding tick)
        if (
            jacobian is not None
            and joint_speed_max_rad_s is not None
            and (v_lin[0] or v_lin[1] or v_lin[2] or v_rot[0] or v_rot[1] or v_rot[2])
        ):
            if joint_speed_max_rad_s is not self._joint_allowed_src:
                self._joint_allowed_src = joint_speed_max_rad_s
                self._joint_allowed = tuple(
                    (cfg.joint_speed_fraction * np.asarray(joint_speed_max_rad_s, dtype=float))
                    .tolist()
                )  # fmt: skip
            ratio = _joint_speed_ratio_f(jacobian, v_lin + v_rot, self._joint_allowed)
            if ratio > 1.0:
                self.joint_slowed_ticks += 1
                # the same profile under speed caps scaled down to this ratio's allowance
                v_lin = self._profile(*lin_args, _norm3(v_lin) / ratio)
                v_rot = self._profile(*rot_args, _norm3(v_rot) / ratio)
        lin_step, braked = self._keep_in_box([v_lin[0] * dt, v_lin[1] * dt, v_lin[2] * dt])
        sx, sy, sz = lin_step
        rx, ry, rz = v_rot[0] * dt, v_rot[1] * dt, v_rot[2] * dt
        self._pos = [px + sx, py + sy, pz + sz]
        self._quat = list(quat_mul_f(quat_exp_f(rx, ry, rz), quat))
        new_twist = [sx / dt, sy / dt, sz / dt, rx / dt, ry / dt, rz / dt]
        # Acceleration feedforward: along a smooth (twist-given) segment, the target stream's
        # (set_goal), also while a late next target is awaited (set_goal says how long); else the
        # reference's own change of speed (its ramps and brakes, and braking at the box). Not the
        # reference's own along a smooth segment: it holds the profile's corrections toward the
        # segment point, bang-bang at the acceleration limit when the tick's clock jitters, and
        # fed forward on franky-sim they swung the torque by 20-40 Nm a tick. (A loop on a
        # jittery clock gives the reference a smoothed one: loop.SmoothedClock.)
        if self._seg_hermite and not braked and now_s - self._seg_t0 <= self._seg_accel_until_s:
            accel = self._seg_accel
        else:
            f = self._ff_alpha
            accel = [a + f * ((new_twist[i] - twist[i]) / dt - a) for i, a in enumerate(self._ff)]
        self._ff = accel
        a_lin, a_rot = cfg.max_linear_accel_m_s2, cfg.max_angular_accel_rad_s2
        accel = [_fmin(_fmax(a, -a_lin), a_lin) for a in accel[:3]] + [
            _fmin(_fmax(a, -a_rot), a_rot) for a in accel[3:]
        ]
        self._twist = new_twist

        if self._gains_settling:
            if (self.gains.stiffness != self._stiffness_goal).any():
                k = self.gains.stiffness + self._gain_alpha * (
                    self._stiffness_goal - self.gains.stiffness
                )
                if np.abs(k - self._stiffness_goal).max() < 1e-6:
                    k = self._stiffness_goal.copy()
                self.gains = dataclasses.replace(self.gains, stiffness=k)
            else:
                self._gains_settling = False
        return CartesianReference(
            np.array(self._pos), np.array(self._quat), np.array(new_twist), np.array(accel)
        )

    def _profile(
        self,
        v_seg: Vec3F,
        error: Vec3F,
        to_goal: Vec3F | None,
        v_now: list[float],
        accel: float,
        speed: float,
    ) -> list[float]:
        """This tick's velocity (3,): the segment's velocity ``v_seg`` plus a closing speed along
        ``error`` (segment point - reference), its component toward ``to_goal`` (goal -
        reference; None when the segment does not end at rest) capped to what can still stop
        there, its norm capped at ``speed``, and at most ``accel * period`` away from ``v_now``."""
        dt = self.period_s
        ex, ey, ez = error
        dist = math.sqrt(ex * ex + ey * ey + ez * ez)
        vx, vy, vz = v_seg
        if dist > 0.0:
            c = _stop_speed(dist, accel, dt) / dist
            vx, vy, vz = vx + ex * c, vy + ey * c, vz + ez * c
        if to_goal is not None:
            gx, gy, gz = to_goal
            d_goal = math.sqrt(gx * gx + gy * gy + gz * gz)
            if d_goal > 0.0:
                nx, ny, nz = gx / d_goal, gy / d_goal, gz / d_goal
                over = (vx * nx + vy * ny + vz * nz) - _stop_speed(d_goal, accel, dt)
                if over > 0.0:
                    vx, vy, vz = vx - over * nx, vy - over * ny, vz - over * nz
        norm = math.sqrt(vx * vx + vy * vy + vz * vz)
        if norm > speed:
            f = speed / norm
            vx, vy, vz = vx * f, vy * f, vz * f
        wx, wy, wz = v_now
        dx, dy, dz = vx - wx, vy - wy, vz - wz
        dv_norm = math.sqrt(dx * dx + dy * dy + dz * dz)
        if dv_norm > accel * dt:
            f = accel * dt / dv_norm
            vx, vy, vz = wx + dx * f, wy + dy * f, wz + dz * f
        return [vx, vy, vz]

    def _keep_in_box(self, lin_step: list[float]) -> tuple[list[float], bool]:
        """This tick's position step, braked so the reference reaches a box face at rest and
        never moves further out of the box; (step, whether it was changed). Braking scales the
        whole step, so the reference keeps its direction (a diagonal move to a corner stays a
        straight line); a component into a face the reference already touches is dropped."""
        lo, hi = self._lo, self._hi
        pos = self._pos
        dt, brake2 = self.period_s, self._brake2
        step = [0.0, 0.0, 0.0]
        ratio = [0.0, 0.0, 0.0]
        for i in (0, 1, 2):
            s = lin_step[i]
            # Room to the face along the direction of motion (0 when at or beyond it); the speed
            # toward a face is capped at sqrt(2 a room), so braking at a completes at the face.
            room = _fmax(hi[i] - pos[i] if s > 0 else pos[i] - lo[i], 0.0)
            cap = math.sqrt(brake2 * room) * dt
            if cap > 0.0:
                step[i] = s
                ratio[i] = abs(s) / cap
            else:
                ratio[i] = abs(step[i]) / 1.0
        worst = _nanmax(ratio)
        # Changed: braked (scaled), a component dropped, or stopped at a face. Not "the step out
        # differs from the step in": (p + s) - p != s by rounding alone on most ticks, and a
        # braked tick feeds its acceleration forward.
        s0, s1, s2 = step
        changed = worst > 1.0 or s0 != lin_step[0] or s1 != lin_step[1] or s2 != lin_step[2]
        if worst > 1.0:
            step = [s / worst for s in step]
        out = [0.0, 0.0, 0.0]
        for i in (0, 1, 2):
            # Never past a face, unless already beyond it (then never further out).
            free = pos[i] + step[i]
            new = _fmax(_fmin(free, _fmax(hi[i], pos[i])), _fmin(lo[i], pos[i]))
            if new != free:
                changed = True
            out[i] = new - pos[i]
        self.braked_ticks += int(changed)
        return out, changed

    @property
    def goal_pos_m(self) -> np.ndarray:
        return np.array(self._seg_p1)


def _norm3(v: list[float]) -> float:
    return math.sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2])


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
