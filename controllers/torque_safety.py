"""Torque post-processing: the last stage before a torque reaches the arm.

Order, each stage seeing the previous one's output:
1. non-finite guard: a NaN/inf torque is replaced by pure joint damping (flagged);
2. joint-limit repulsion: a spring-damper pushes joints back from position limits;
3. joint-velocity guard: on a joint faster than ``velocity_guard_fraction`` of its limit, torque
   that would speed it up further is cut and damping brakes the excess (clamp); when any joint
   passes ``velocity_hold_fraction`` of its limit the whole arm gets pure damping (hold);
4. per-joint clamp to the torque limits;
5. torque-rate limit against the torque sent on the previous tick (last, so nothing undoes it).
The output is checked once more; if it is still not finite the previous torque is reused.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
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


@dataclass(frozen=True)
class SafetyConfig:
    """How close to a limit the repulsion starts, and how hard it pushes."""

    joint_margin_rad: float = 0.1
    repulsion_stiffness_nm_per_rad: float = 40.0
    repulsion_damping_nm_s_per_rad: float = 5.0
    velocity_guard_fraction: float = 0.85
    velocity_guard_damping_nm_s_per_rad: float = 20.0
    velocity_hold_fraction: float = 0.95
    damping: DampingGains = field(default_factory=DampingGains)

    def __post_init__(self) -> None:
        if not 0.0 < self.velocity_guard_fraction < self.velocity_hold_fraction <= 1.0:
            raise ValueError(
                f"velocity_guard_fraction={self.velocity_guard_fraction}, velocity_hold_fraction="
                f"{self.velocity_hold_fraction}; need 0 < guard < hold <= 1"
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
        # the same limits as Python floats, for ``process``
        self._soft_min_f = tuple(self._soft_min.tolist())
        self._soft_max_f = tuple(self._soft_max.tolist())
        self._vel_guard_f = tuple(self._vel_guard.tolist())
        self._vel_hold_f = tuple(self._vel_hold.tolist())
        self._torque_max_f = tuple(np.asarray(limits.joint_torque_max_nm, float).tolist())

    def reset(self, tau_nm: np.ndarray | None = None) -> None:
        """Forget the rate-limit history (only when the arm is known to carry this torque)."""
        self.last_tau_nm = np.zeros_like(self.last_tau_nm) if tau_nm is None else tau_nm.copy()

    def process(
        self, tau_nm: np.ndarray, q_rad: np.ndarray, dq_rad_s: np.ndarray
    ) -> tuple[np.ndarray, int]:
        """Return (safe torque (7,) Nm, flag bits). The stages run per joint on Python floats
        (seven joints: a numpy call costs more than the arithmetic), in the same operations and
        order as ``process_reference``, which they match to the bit."""
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
        self.last_tau_nm = np.array(out)
        return self.last_tau_nm, flags

    def process_reference(
        self, tau_nm: np.ndarray, q_rad: np.ndarray, dq_rad_s: np.ndarray
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
        self.last_tau_nm = out
        return out, flags


def _fmax(a: float, b: float) -> float:
    """np.maximum on two floats (a NaN propagates)."""
    return b if (b > a or b != b) else a


def _fmin(a: float, b: float) -> float:
    """np.minimum on two floats (a NaN propagates)."""
    return b if (b < a or b != b) else a
