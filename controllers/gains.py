"""Gain sets for the impedance laws, with units in every name."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def _vec(values: list[float]) -> np.ndarray:
    return np.asarray(values, dtype=float)


@dataclass(frozen=True)
class CartesianGains:
    """Cartesian impedance gains. Six-vectors are (x, y, z, rx, ry, rz), base frame.

    stiffness: N/m (linear) and Nm/rad (angular).
    damping_ratio: 1.0 is critical damping against the task-space inertia at the current pose.
    error_clip: per-axis bound on the pose error (m, rad); it bounds the spring force in contact to
        about stiffness * clip, as SERL does.
    nullspace_*: joint-space posture spring-damper acting only in the task's nullspace, scaled by
        the mass matrix (so every posture mode has this natural frequency and damping ratio, however
        light it is) and capped per joint.
    friction_coulomb_nm (7,): Coulomb friction feedforward per joint, Nm, signed by the joint
        velocity the reference asks for (smoothed over ``friction_velocity_rad_s``); never by the
        measured one, so it adds no feedback. Zero by default (the twin has no joint friction); a
        real arm sets it below its identified friction (``FrankaConfig.friction_coulomb_nm``).
    """

    stiffness: np.ndarray = field(
        default_factory=lambda: _vec([2000.0, 2000.0, 2000.0, 150.0, 150.0, 150.0])
    )
    damping_ratio: np.ndarray = field(default_factory=lambda: _vec([1.0] * 6))
    error_clip: np.ndarray = field(default_factory=lambda: _vec([0.01, 0.01, 0.01, 0.1, 0.1, 0.1]))
    nullspace_natural_freq_rad_s: float = 3.0
    nullspace_damping_ratio: float = 1.0
    nullspace_torque_cap_nm: float = 5.0
    friction_coulomb_nm: np.ndarray = field(default_factory=lambda: np.zeros(7))
    friction_velocity_rad_s: float = 0.05

    # Largest stiffness a target may ask for; beyond this the loop rejects the gains.
    MAX_STIFFNESS = (5000.0, 300.0)  # (N/m, Nm/rad)


@dataclass(frozen=True)
class JointGains:
    """Joint impedance gains, (7,) each: stiffness Nm/rad, damping ratio (1.0 = critical)."""

    stiffness_nm_per_rad: np.ndarray = field(
        default_factory=lambda: _vec([600.0, 600.0, 600.0, 600.0, 250.0, 150.0, 50.0])
    )
    damping_ratio: np.ndarray = field(default_factory=lambda: _vec([1.0] * 7))


@dataclass(frozen=True)
class DampingGains:
    """Pure joint damping used to bring the arm to rest (watchdog, NaN fallback), Nm s/rad."""

    damping_nm_s_per_rad: np.ndarray = field(
        default_factory=lambda: _vec([20.0, 20.0, 20.0, 20.0, 4.0, 4.0, 2.0])
    )
