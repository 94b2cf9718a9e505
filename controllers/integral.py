"""A bounded, leaky integral force on the Cartesian position error (what the impedance spring
leaves: a gravity model that is off by a few hundred grams, joint friction, an unmodelled tool).

Per axis (base frame) and per control tick of ``dt`` seconds::

    f <- (1 - leak * dt) f + Ki * e * dt      while the reference rests and |e| <= error_band
    f <- (1 - leak * dt) f                    resting, |e| beyond the band (contact: no wind-up)
    f <- (1 - moving_leak * dt) f             while the reference moves
    f <- clip(f, -force_max, force_max)       (anti-windup: the stored force itself is clipped)

Integrating only while the reference rests (speed under ``rest_speed_m_s``) keeps the term to
what it is for, a static force the spring leaves: on a moving reference the error is mostly lag
(friction, inertia), and integrating it winds a force that lags the motion (on franky-sim a
circle at 0.5 Hz was pushed 1.5 mm outward). Once the reference moves, the stored force fades
within about 0.5 s: at rest it also holds the arm against stiction, a force that is wrong as soon
as the joints slide (kept through a circle it pushed the TCP 1 mm down).

The force is zeroed when the loop is not tracking (watchdog hold or damp, software stop, fault,
a joint-space move, a restart), so it never pushes an arm the operator has stopped, and a
stale integral never carries over to a new pose. Preallocated; no allocation per tick.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class IntegralConfig:
    """Gains of the integral term (0 gain: off).

    Why these values, for a Franka under the default 2000 N/m translational stiffness:
    ``gain_n_per_m_s`` 4000 is the stiffness over an integral time of 0.5 s, slow against the
    impedance's own settling (about 0.1 s) so the PI stays well damped; the leak (time constant
    10 s) lets a force that is no longer needed fade, while it costs little of the integral's
    static stiffness (K + Ki / leak = 42 kN/m: a 6 N model error leaves 0.14 mm);
    ``force_max_n`` 10 N covers a 1 kg error in the payload model and the arm's joint friction at
    the TCP (about 2-4 N), and is what the spring gives at 5 mm, so the integral never outweighs
    the impedance; ``error_band_m`` 5 mm (half the
    1 cm error clip) keeps a fast move or a contact from winding it up."""

    gain_n_per_m_s: float = 4000.0
    leak_per_s: float = 0.1
    force_max_n: float = 10.0
    error_band_m: float = 0.005
    rest_speed_m_s: float = 0.005  # the reference is at rest below this speed (m/s)
    moving_leak_per_s: float = 2.0  # how fast the force fades while the reference moves (1/s)

    def __post_init__(self) -> None:
        for name in ("gain_n_per_m_s", "leak_per_s", "force_max_n", "error_band_m",
                     "rest_speed_m_s", "moving_leak_per_s"):  # fmt: skip
            value = getattr(self, name)
            if not (np.isfinite(value) and value >= 0.0):
                raise ValueError(f"IntegralConfig.{name}={value!r}; must be finite and >= 0")


class PositionIntegrator:
    """The integral force (3,) N, base frame (see the module docstring)."""

    def __init__(self, config: IntegralConfig, period_s: float) -> None:
        self.config = config
        self.period_s = period_s
        self.force_n = np.zeros(3)
        self._decay = max(0.0, 1.0 - config.leak_per_s * period_s)
        self._moving_decay = max(0.0, 1.0 - config.moving_leak_per_s * period_s)
        self._gain_dt = config.gain_n_per_m_s * period_s
        self._rest_speed2 = config.rest_speed_m_s**2
        self._enabled = config.gain_n_per_m_s > 0.0 and config.force_max_n > 0.0

    @property
    def enabled(self) -> bool:
        return self._enabled

    def reset(self) -> None:
        self.force_n.fill(0.0)

    def update(self, error_m: np.ndarray, reference_twist: np.ndarray | None = None) -> np.ndarray:
        """Advance one period with the position error ``error_m`` (3,) m (reference minus TCP)
        and the reference's twist (6,) (linear part first, m/s; None: at rest); returns the force
        (3,) N (the same array each call: copy it to keep it)."""
        if not self._enabled:
            return self.force_n
        band, limit = self.config.error_band_m, self.config.force_max_n
        decay, gain_dt = self._decay, self._gain_dt
        if reference_twist is not None:
            vx, vy, vz = reference_twist[:3].tolist()
            if vx * vx + vy * vy + vz * vz > self._rest_speed2:
                band = -1.0  # moving: nothing integrated (|e| <= -1 never holds), and it fades
                decay = self._moving_decay
        # Three axes in plain floats: a few microseconds, where numpy's per-call cost is ~1 us.
        out = self.force_n.tolist()
        for i, e in enumerate(error_m.tolist()):
            f = out[i] * decay
            if abs(e) <= band:  # False for NaN: a non-finite error adds nothing
                f += gain_dt * e
            out[i] = min(max(f, -limit), limit)
        self.force_n[:] = out
        return self.force_n
