"""Torque post-processing: the last stage before a torque reaches the arm.

Order, each stage seeing the previous one's output:
1. non-finite guard: a NaN/inf torque is replaced by pure joint damping (flagged);
2. joint-limit repulsion: a spring-damper pushes joints back from position limits;
3. joint-velocity guard: on a joint faster than ``velocity_guard_fraction`` of its limit, torque
   that would speed it up further is cut and damping brakes the excess (clamp); when any joint
   passes ``velocity_hold_fraction`` of its limit the whole arm gets pure damping (hold);
4. per-joint clamp to the torque limits;
5. torque-rate limit against the torque sent on the previous tick;
6. braking margin. The rate limit lets a torque fall by at most s = R T Nm a tick (R the arm's
   torque-rate limit, T the period), so a torque cannot be taken away at once: sent now and
   then ramped to zero, torque tau_j still gives joint j the impulse sign(tau_j) T (|tau_j| +
   s / 2)^2 / (2 s) (an upper bound of the tick-by-tick sum), and every joint i gains
   (M^-1 impulse)_i of speed on the way (M the mass matrix: the joints are coupled). When that
   would carry a joint past ``braking_target_fraction`` of its limit (or, for a joint already
   past it, faster than it is), the output moves toward "every torque one step nearer the
   hold's pure damping" as far as needed (bisection). Both ends are within the torque and rate
   limits, so any point between is too, and nothing after this stage can undo it. Toward
   damping, not toward zero: damping only takes energy out, and with the joints coupled (and
   the Coriolis torque, which the test does not model, at work) a zero torque let a joint coast
   past the hold while the test refused the damping that would have braked it. The damping is
   itself capped joint by joint (held while the rate limit lets it fall, a hard brake on a
   light joint would throw it back the other way).
   The same stage keeps joints off their position limits: for a joint moving toward one (within
   0.6 rad of it), the distance it needs to stop, were the torque sent now and then ramped to
   full braking at the rate limit (its inertia taken as M_ii, and its braking torque as no more
   than its single-joint cap allows), must fit before a stop line half the repulsion margin
   (0.05 rad) inside the limit. A joint that fails this brakes with all it has. The repulsion
   spring of stage 2 cannot stop a joint at speed: pushed at full torque, every joint struck its
   limit on the twin at 0.6-0.86x its speed limit; with this test each stops 0.021-0.045 rad
   short.
The output is checked once more; if it is still not finite the previous torque is reused.

Why stage 6: the guard of stage 3 cuts a torque only once the joint is fast, and the rate
limit then takes |tau| / R to remove it, so a law that pushes hard (a thrash, a bug) carried
joints past their limit on the twin: full torque on one joint took joints 1-3 to 1.2x their
limit (the wrist joints to the twin's own 1.0x clamp; a wrist joint, m about 0.007 kg m^2, gains
0.15 rad/s per Nm in one tick). With it, each joint alone under full, positive-feedback or
sign-flipping torque stays under 0.91x its limit. M comes from the model the loop passes in;
without one a diagonal M of ``inertia_floor_kg_m2`` stands in (conservative). Not modelled:
Coriolis and centrifugal torque. With every joint pushed at once, joints still reach 0.96-1.1x
their speed limit on the twin (and the twin's own 1.0x clamp on a wrist joint), though none
strikes a position limit: this bounds a runaway joint, not every adversarial law, and franky's
own limits stay underneath. Without a model the position test is off.

A cap per joint on its own (1 / (M^-1)_ii, ahead of the clamp) was tried and dropped: it treats
joints 1 and 3, nearly parallel at the ready pose, as if each could turn without the other, and
it cut the scripted reach's ordinary torques on 18 % of its ticks (and BC's reach, cloned from
those demos, fell to 3 of 6); the coupled test sees their torques cancel and leaves a normal
reach alone (no tick of the scripted reach touched).
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field

import numpy as np
from robot_rl.controllers.cartesian_impedance import _INV
from robot_rl.controllers.gains import DampingGains
from robot_rl.controllers.joint_impedance import damping_torque

from robot_rl.interfaces import ArmLimits

# Bits of SafetyFlags.bits, per tick.
FLAG_NONFINITE = 1
FLAG_REPULSION = 2
FLAG_CLAMPED = 4
FLAG_RATE_LIMITED = 8
FLAG_VELOCITY = 16  # the velocity guard cut or braked a joint's torque
FLAG_VELOCITY_HOLD = 32  # a joint neared its speed limit: pure damping this tick
FLAG_BRAKING_MARGIN = 64  # the output moved toward damping so that it can be ramped away in time

_BISECTION_STEPS = 12  # stage 6 finds its point to 1 / 4096 of the way
# Stage 6 checks the stopping distance of joints nearer than this to their stop line: from 0.9x
# its speed limit, joint 1 at 5 kg m^2 with 40 Nm pushing it on stops within 0.3 rad.
_POSITION_WATCH_RAD = 0.6
# The gufunc reports a singular mass matrix as an invalid value; it is checked and replaced.
warnings.filterwarnings(
    "ignore", "invalid value encountered in inv", RuntimeWarning, re.escape(__name__)
)

# Lower bounds of the Panda's effective joint inertias 1 / (M^-1)_ii, kg m^2: 0.8 of the least
# seen over 3 000 random configurations of the twin's model (hand attached, no load; a load only
# adds inertia). Used only when no mass matrix is given.
PANDA_INERTIA_FLOOR_KG_M2 = (0.03, 0.32, 0.014, 0.08, 0.0096, 0.019, 0.0039)


@dataclass(frozen=True)
class SafetyConfig:
    """How close to a limit the repulsion starts, and how hard it pushes."""

    joint_margin_rad: float = 0.1
    repulsion_stiffness_nm_per_rad: float = 40.0
    repulsion_damping_nm_s_per_rad: float = 5.0
    velocity_guard_fraction: float = 0.85
    velocity_guard_damping_nm_s_per_rad: float = 20.0
    velocity_hold_fraction: float = 0.95
    braking_target_fraction: float = 0.9
    inertia_floor_kg_m2: tuple[float, ...] = PANDA_INERTIA_FLOOR_KG_M2
    damping: DampingGains = field(default_factory=DampingGains)

    def __post_init__(self) -> None:
        if not 0.0 < self.velocity_guard_fraction < self.velocity_hold_fraction <= 1.0:
            raise ValueError(
                f"velocity_guard_fraction={self.velocity_guard_fraction}, velocity_hold_fraction="
                f"{self.velocity_hold_fraction}; need 0 < guard < hold <= 1"
            )
        if not 0.0 < self.braking_target_fraction <= self.velocity_hold_fraction:
            raise ValueError(
                f"braking_target_fraction={self.braking_target_fraction}; allowed: 0 < it <= "
                f"velocity_hold_fraction ({self.velocity_hold_fraction})"
            )
        floor = self.inertia_floor_kg_m2
        if len(floor) != 7 or not all(isinstance(m, (int, float)) and m > 0 for m in floor):
            raise ValueError(
                f"inertia_floor_kg_m2={floor!r}; allowed: 7 numbers > 0 (kg m^2, joints 1-7)"
            )


class TorqueSafety:
    """Stateful post-processor (remembers the last torque for the rate limit)."""

    def __init__(self, limits: ArmLimits, period_s: float, config: SafetyConfig | None = None):
        self.limits = limits
        self.config = config or SafetyConfig()
        # A hair under the arm's limit so that rounding never puts a command over it.
        self.max_step_nm = limits.torque_rate_max_nm_per_s * period_s * (1.0 - 1e-6)
        self.last_tau_nm = np.zeros(len(limits.joint_torque_max_nm))
        c = self.config
        self._soft_min = limits.joint_pos_min_rad + c.joint_margin_rad
        self._soft_max = limits.joint_pos_max_rad - c.joint_margin_rad
        self._vel_guard = c.velocity_guard_fraction * limits.joint_vel_max_rad_s
        self._vel_hold = c.velocity_hold_fraction * limits.joint_vel_max_rad_s
        # 2 R, R the rate at which stage 5 lets a torque fall (Nm/s)
        self._fall_gain = 2.0 * self.max_step_nm / period_s
        self._floor_inv = np.diag(1.0 / np.asarray(c.inertia_floor_kg_m2, float))
        self._period_s = period_s
        # the same limits as Python floats, for ``process``
        self._soft_min_f = tuple(self._soft_min.tolist())
        self._soft_max_f = tuple(self._soft_max.tolist())
        self._vel_guard_f = tuple(self._vel_guard.tolist())
        self._vel_hold_f = tuple(self._vel_hold.tolist())
        self._vel_brake = c.braking_target_fraction * limits.joint_vel_max_rad_s
        # where a joint must be able to stop: inside its hard limit by half the repulsion margin
        self._stop_min = limits.joint_pos_min_rad + 0.5 * c.joint_margin_rad
        self._stop_max = limits.joint_pos_max_rad - 0.5 * c.joint_margin_rad
        self._stop_min_f = tuple(self._stop_min.tolist())
        self._stop_max_f = tuple(self._stop_max.tolist())
        self._vel_brake_f = tuple(self._vel_brake.tolist())
        self._torque_max_f = tuple(np.asarray(limits.joint_torque_max_nm, float).tolist())

    def reset(self, tau_nm: np.ndarray | None = None) -> None:
        """Forget the rate-limit history (only when the arm is known to carry this torque)."""
        self.last_tau_nm = np.zeros_like(self.last_tau_nm) if tau_nm is None else tau_nm.copy()

    def _inverse_inertia(self, mass_matrix: np.ndarray | None) -> np.ndarray:
        """M^-1 from the mass matrix when given and sound, else the floor's diagonal one."""
        if mass_matrix is None or np.shape(mass_matrix) != (7, 7):
            return self._floor_inv
        try:
            if _INV is None:  # pragma: no cover - a numpy without the gufunc
                m_inv = np.linalg.inv(mass_matrix)
            else:  # a singular matrix comes back as NaN (its warning is filtered), checked below
                m_inv = _INV(mass_matrix, signature="d->d")
        except (np.linalg.LinAlgError, ValueError, TypeError):
            return self._floor_inv
        total = float(m_inv.sum())
        if total - total != 0.0 or not all(d > 0.0 for d in m_inv.diagonal().tolist()):
            return self._floor_inv  # not a mass matrix (NaN, singular, not positive definite)
        return m_inv

    def process(
        self,
        tau_nm: np.ndarray,
        q_rad: np.ndarray,
        dq_rad_s: np.ndarray,
        mass_matrix: np.ndarray | None = None,
    ) -> tuple[np.ndarray, int]:
        """Return (safe torque (7,) Nm, flag bits). ``mass_matrix`` (7, 7), the arm's inertia
        now, sizes the braking margin (stage 6); without it a fixed lower bound does. Stages 1-5
        run per joint on Python floats (seven joints: a numpy call costs more than the
        arithmetic), in the same operations and order as ``process_reference``, which they match
        to the bit; stage 6 checks on floats and, where the check fails, runs the one numpy
        function both call."""
        flags = 0
        c = self.config
        tau = tau_nm.tolist()
        q = q_rad.tolist()
        dq = dq_rad_s.tolist()
        # NaN or inf (inf - inf is NaN); a sum that overflows is checked value by value
        total = sum(tau)
        if total - total != 0.0 and not all(t - t == 0.0 for t in tau):
            flags |= FLAG_NONFINITE
            tau = damping_torque(np.nan_to_num(dq_rad_s), c.damping).tolist()

        soft_min, soft_max, guard = self._soft_min_f, self._soft_max_f, self._vel_guard_f
        near_limit = fast = False
        for qi, vi, lo, hi, g in zip(q, dq, soft_min, soft_max, guard, strict=True):
            if qi < lo or qi > hi:
                near_limit = True
            if abs(vi) > g:
                fast = True
        if near_limit:
            flags |= FLAG_REPULSION
            k, d = c.repulsion_stiffness_nm_per_rad, c.repulsion_damping_nm_s_per_rad
            for i, qi in enumerate(q):
                if qi < soft_min[i]:
                    tau[i] = tau[i] + (k * (soft_min[i] - qi) - d * _fmin(dq[i], 0.0))
            for i, qi in enumerate(q):
                if qi > soft_max[i]:
                    tau[i] = tau[i] + (k * (soft_max[i] - qi) - d * _fmax(dq[i], 0.0))

        if fast:
            flags |= FLAG_VELOCITY
            if any(abs(v) > h for v, h in zip(dq, self._vel_hold_f, strict=True)):
                flags |= FLAG_VELOCITY_HOLD  # hold: bring the whole arm to rest
                tau = damping_torque(dq_rad_s, c.damping).tolist()
            else:  # clamp: nothing may speed a fast joint up; brake what is over the guard
                tau = [
                    0.0 if (abs(v) > g and t * v > 0) else t
                    for t, v, g in zip(tau, dq, guard, strict=True)
                ]
            gd = c.velocity_guard_damping_nm_s_per_rad
            tau = [
                t - gd * (v - _fmin(_fmax(v, -g), g))
                for t, v, g in zip(tau, dq, guard, strict=True)
            ]

        # clamp to the torque limits, then the rate limit against the previous torque (a NaN
        # passes both comparisons untouched, as through np.minimum / np.maximum)
        m = self.max_step_nm
        out = []
        clamped = limited = False
        for t, lim, last in zip(tau, self._torque_max_f, self.last_tau_nm.tolist(), strict=True):
            a = lim if t > lim else (-lim if t < -lim else t)
            if a != t:  # also for NaN
                clamped = True
            wanted = a - last
            if wanted > m:  # compare steps, not sums: rounding alone must not flag
                out.append(last + m)
                limited = True
            elif wanted < -m:
                out.append(last + -m)
                limited = True
            else:
                out.append(last + wanted)
        if clamped:
            flags |= FLAG_CLAMPED
        if limited:
            flags |= FLAG_RATE_LIMITED
        total = sum(out)
        if total - total != 0.0 and not all(t - t == 0.0 for t in out):  # a non-finite state
            flags |= FLAG_NONFINITE
            self.last_tau_nm = self.last_tau_nm.copy()
            return self.last_tau_nm, flags
        # stage 6's check (as ``_braking_margin`` makes it), here on floats where it passes; a
        # joint near its position limit goes to the numpy form, which has the stopping distance
        m_inv = self._inverse_inertia(mass_matrix)
        near = mass_matrix is not None and any(
            (v > 0.0 and hi - qi < _POSITION_WATCH_RAD)
            or (v < 0.0 and qi - lo < _POSITION_WATCH_RAD)
            for qi, v, lo, hi in zip(q, dq, self._stop_min_f, self._stop_max_f, strict=True)
        )
        if not near:
            t_s, half, two_step = self._period_s, 0.5 * m, 2.0 * m
            impulse = [
                ((t > 0.0) - (t < 0.0)) * ((abs(t) + half) * (abs(t) + half) / two_step) * t_s
                for t in out
            ]
            gained = m_inv.dot(np.array(impulse)).tolist()
            if all(
                abs(v + g) <= _fmax(b, abs(v))
                for v, g, b in zip(dq, gained, self._vel_brake_f, strict=True)
            ):
                self.last_tau_nm = np.array(out)
                return self.last_tau_nm, flags
        result, braked = self._braking_margin(
            np.array(out), q_rad, dq_rad_s, m_inv, _diagonal(mass_matrix)
        )
        if braked:
            flags |= FLAG_BRAKING_MARGIN
        self.last_tau_nm = result
        return self.last_tau_nm, flags

    def process_reference(
        self,
        tau_nm: np.ndarray,
        q_rad: np.ndarray,
        dq_rad_s: np.ndarray,
        mass_matrix: np.ndarray | None = None,
    ) -> tuple[np.ndarray, int]:
        """``process`` written plainly in numpy (the specification ``process`` is checked
        against); same state, same result."""
        flags = 0
        c = self.config
        if not np.isfinite(tau_nm).all():
            flags |= FLAG_NONFINITE
            tau_nm = damping_torque(np.nan_to_num(dq_rad_s), c.damping)
        else:
            tau_nm = tau_nm.copy()

        below = q_rad < self._soft_min
        above = q_rad > self._soft_max
        if (below | above).any():
            flags |= FLAG_REPULSION
            k, d = c.repulsion_stiffness_nm_per_rad, c.repulsion_damping_nm_s_per_rad
            tau_nm += np.where(below, k * (self._soft_min - q_rad) - d * np.minimum(dq_rad_s, 0), 0)
            tau_nm += np.where(above, k * (self._soft_max - q_rad) - d * np.maximum(dq_rad_s, 0), 0)

        speed = np.abs(dq_rad_s)
        fast = speed > self._vel_guard
        if fast.any():
            flags |= FLAG_VELOCITY
            if (speed > self._vel_hold).any():  # hold: bring the whole arm to rest
                flags |= FLAG_VELOCITY_HOLD
                tau_nm = damping_torque(dq_rad_s, c.damping)
            else:  # clamp: nothing may speed a fast joint up; brake what is over the guard
                tau_nm = np.where(fast & (tau_nm * dq_rad_s > 0), 0.0, tau_nm)
            excess = dq_rad_s - np.clip(dq_rad_s, -self._vel_guard, self._vel_guard)
            tau_nm -= c.velocity_guard_damping_nm_s_per_rad * excess

        limit = self.limits.joint_torque_max_nm
        clamped = np.minimum(np.maximum(tau_nm, -limit), limit)
        if (clamped != tau_nm).any():
            flags |= FLAG_CLAMPED
        m = self.max_step_nm
        wanted = clamped - self.last_tau_nm
        step = np.minimum(np.maximum(wanted, -m), m)
        out = self.last_tau_nm + step
        if (np.abs(wanted) > m).any():  # compare steps, not sums: rounding alone must not flag
            flags |= FLAG_RATE_LIMITED
        if not np.isfinite(out).all():  # only reachable if the state itself was not finite
            flags |= FLAG_NONFINITE
            out = self.last_tau_nm.copy()
        else:
            m_inv = self._inverse_inertia(mass_matrix)
            out, braked = self._braking_margin(out, q_rad, dq_rad_s, m_inv, _diagonal(mass_matrix))
            if braked:
                flags |= FLAG_BRAKING_MARGIN
        self.last_tau_nm = out
        return out, flags

    def _single_joint_cap(
        self, tau_nm: np.ndarray, dq_rad_s: np.ndarray, m_inv: np.ndarray
    ) -> np.ndarray:
        """``tau_nm`` capped joint by joint, each as if the only torque (effective inertia
        1 / (M^-1)_ii): (|tau| + s / 2)^2 <= 2 R m (v_target - w), w the joint's speed in tau's
        direction. For the damping that stage 6 falls back on."""
        along = np.where(tau_nm >= 0.0, dq_rad_s, -dq_rad_s)  # the speed in tau's direction
        room = (self._fall_gain / np.diagonal(m_inv)) * (self._vel_brake - along)
        half = 0.5 * self.max_step_nm
        a = np.abs(tau_nm) + half
        over = a * a > room
        if not over.any():
            return tau_nm
        root = np.sqrt(np.maximum(room, 0.0)) - half
        return np.where(over, np.copysign(np.maximum(root, 0.0), tau_nm), tau_nm)

    def _stopping_distance(
        self, speed: np.ndarray, tau_along: np.ndarray, inertia: np.ndarray, torque: np.ndarray
    ) -> np.ndarray:
        """How far joints moving at ``speed`` (> 0, toward a limit) travel before they stop, when
        ``tau_along`` (Nm, positive: pushing them on) is sent for this tick and then ramped at the
        rate limit to full braking torque and held there. ``inertia``: the joints' M_ii, more
        than the inertia they show with the other joints free, so the distance is not short;
        ``torque``: their torque limits."""
        r = self.max_step_nm / self._period_s
        dt = self._period_s
        # this tick at tau_along, then the ramp from there
        u = speed + tau_along * dt / inertia
        x0 = speed * dt + tau_along * dt * dt / (2.0 * inertia)
        u = np.maximum(u, 0.0)
        t1 = (tau_along + torque) / r  # when the ramp reaches full braking torque
        t_stop = (tau_along + np.sqrt(tau_along * tau_along + 2.0 * r * u * inertia)) / r
        early = t_stop <= t1
        ts = np.where(early, t_stop, t1)
        u1 = u + (tau_along * ts - 0.5 * r * ts * ts) / inertia
        x1 = u * ts + (0.5 * tau_along * ts * ts - r * ts * ts * ts / 6.0) / inertia
        tail = np.where(early, 0.0, np.maximum(u1, 0.0) ** 2 * inertia / (2.0 * torque))
        return x0 + x1 + tail

    def _braking_margin(
        self,
        out: np.ndarray,
        q_rad: np.ndarray,
        dq_rad_s: np.ndarray,
        m_inv: np.ndarray,
        inertia: np.ndarray | None,
    ) -> tuple[np.ndarray, bool]:
        """Stage 6: ``out``, or a point between it and "one step nearer the damping" (full
        braking for a joint that could not stop before its position limit), so that ramping it
        away cannot carry any joint past its braking target through the coupling of the joints,
        nor past its position limit (see the module's docstring)."""
        if not (np.isfinite(dq_rad_s).all() and np.isfinite(q_rad).all()):
            return out, False  # the hold and the NaN guard have already done what can be done
        s, t = self.max_step_nm, self._period_s
        bound = np.maximum(self._vel_brake, np.abs(dq_rad_s))
        # joints moving toward a limit, and the room left before their stop line
        toward_max = dq_rad_s > 0.0
        room = np.where(toward_max, self._stop_max - q_rad, q_rad - self._stop_min)
        watch = (dq_rad_s != 0.0) & (room < _POSITION_WATCH_RAD)
        if inertia is None:
            watch[:] = False  # without a model the position test has no inertia to go on
        speed = np.abs(dq_rad_s)
        direction = np.where(toward_max, 1.0, -1.0)
        limit = self.limits.joint_torque_max_nm
        if watch.any():
            w_speed, w_dir, w_room = speed[watch], direction[watch], room[watch]
            # the braking torque a joint gets: its limit, or less where the single-joint cap
            # (which keeps a brake from throwing a light joint back) holds it at rest
            at_rest = np.sqrt(self._fall_gain / np.diagonal(m_inv) * self._vel_brake) - 0.5 * s
            w_inertia, w_limit = inertia[watch], np.minimum(limit, at_rest)[watch]

        def ok(tau: np.ndarray) -> bool:
            a = np.abs(tau) + 0.5 * s
            after = dq_rad_s + m_inv.dot(np.sign(tau) * (a * a / (2.0 * s)) * t)
            if not (np.abs(after) <= bound).all():
                return False
            if not watch.any():
                return True
            along = tau[watch] * w_dir
            return bool(
                (self._stopping_distance(w_speed, along, w_inertia, w_limit) <= w_room).all()
            )

        if ok(out):
            return out, False
        last = self.last_tau_nm
        damping = np.clip(damping_torque(dq_rad_s, self.config.damping), -limit, limit)
        if watch.any():  # a joint that cannot stop before its limit brakes with all it has
            d = self._stopping_distance(w_speed, damping[watch] * w_dir, w_inertia, w_limit)
            target = damping[watch]
            damping[watch] = np.where(d > w_room, -w_dir * w_limit, target)
        # the brake itself within a single joint's cap: held while the rate limit lets it fall,
        # a hard brake on a light joint would throw it back the other way
        damping = self._single_joint_cap(damping, dq_rad_s, m_inv)
        brake = last + np.clip(damping - last, -s, s)
        if not ok(brake):
            return brake, True  # as near the damping as the rate limit allows
        lo, hi = 0.0, 1.0  # ok(brake + lo * (out - brake)) holds, ok(... hi ...) does not
        for _ in range(_BISECTION_STEPS):
            mid = 0.5 * (lo + hi)
            if ok(brake + mid * (out - brake)):
                lo = mid
            else:
                hi = mid
        return brake + lo * (out - brake), True


def _fmax(a: float, b: float) -> float:
    """np.maximum on two floats (a NaN propagates)."""
    return b if (b > a or b != b) else a


def _fmin(a: float, b: float) -> float:
    """np.minimum on two floats (a NaN propagates)."""
    return b if (b < a or b != b) else a


def _diagonal(mass_matrix: np.ndarray | None) -> np.ndarray | None:
    """The joints' inertias M_ii from a sound mass matrix, else None."""
    if mass_matrix is None or np.shape(mass_matrix) != (7, 7):
        return None
    diag = np.diagonal(mass_matrix).astype(float)
    return diag if (np.isfinite(diag).all() and (diag > 0.0).all()) else None
