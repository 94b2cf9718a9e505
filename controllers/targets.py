"""Targets that callers send to the control loop, and their validation.

Validation is the first stage of the reference pipeline: a target that fails it raises
``InvalidTargetError`` naming the field, the value and what is allowed, and never reaches the arm.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from robot_rl.controllers.gains import CartesianGains

QUAT_NORM_TOLERANCE = 1e-3


class InvalidTargetError(ValueError):
    """A target was rejected before reaching the controller; the loop keeps its previous target."""


@dataclass(frozen=True)
class CartesianTarget:
    """Desired TCP pose, base frame, optionally with a twist feedforward and new stiffness.

    pos_m (3,); quat_xyzw (4,) unit; twist (6,) m/s and rad/s or None; stiffness (6,) N/m and
    Nm/rad or None to keep the current gains.
    """

    pos_m: np.ndarray
    quat_xyzw: np.ndarray
    twist: np.ndarray | None = None
    stiffness: np.ndarray | None = None


@dataclass(frozen=True)
class JointTarget:
    """Desired joint positions (7,) rad, optionally with joint velocities (7,) rad/s."""

    q_rad: np.ndarray
    dq_rad_s: np.ndarray | None = None


def _as_vector(name: str, value: object, size: int) -> np.ndarray:
    try:
        raw = np.asarray(value)
    except ValueError:  # ragged nesting
        raise InvalidTargetError(f"{name}={value!r} is ragged; expected {size} floats") from None
    if raw.dtype.kind not in "iuf":  # strings, booleans, objects: never guess a number
        raise InvalidTargetError(f"{name}={value!r} is not numeric; expected {size} floats")
    arr = raw.astype(float)
    if arr.shape != (size,):
        raise InvalidTargetError(f"{name} has shape {arr.shape}; expected ({size},)")
    if not np.isfinite(arr).all():
        raise InvalidTargetError(f"{name}={arr.tolist()} has NaN or inf; all values must be finite")
    return arr


def validate_cartesian_target(target: CartesianTarget) -> CartesianTarget:
    """Checked copy of ``target``, quaternion normalized (w >= 0); raises InvalidTargetError."""
    if not isinstance(target, CartesianTarget):
        raise InvalidTargetError(f"expected a CartesianTarget, got {type(target).__name__}")
    pos = _as_vector("pos_m", target.pos_m, 3)
    quat = _as_vector("quat_xyzw", target.quat_xyzw, 4)
    norm = float(np.linalg.norm(quat))
    if abs(norm - 1.0) > QUAT_NORM_TOLERANCE:
        raise InvalidTargetError(
            f"quat_xyzw={quat.tolist()} has norm {norm:.6f}; a unit quaternion (x, y, z, w) is "
            f"required (|norm - 1| <= {QUAT_NORM_TOLERANCE})"
        )
    quat = quat / norm if quat[3] >= 0 else -quat / norm
    twist = None if target.twist is None else _as_vector("twist", target.twist, 6)
    stiffness = None
    if target.stiffness is not None:
        stiffness = _as_vector("stiffness", target.stiffness, 6)
        max_lin, max_rot = CartesianGains.MAX_STIFFNESS
        upper = np.array([max_lin] * 3 + [max_rot] * 3)
        if (stiffness < 0).any() or (stiffness > upper).any():
            raise InvalidTargetError(
                f"stiffness={stiffness.tolist()} out of range; allowed 0..{max_lin} N/m (linear) "
                f"and 0..{max_rot} Nm/rad (angular)"
            )
    return CartesianTarget(pos, quat, twist, stiffness)


def validate_joint_target(target: JointTarget) -> JointTarget:
    """Checked copy of a joint target; raises InvalidTargetError."""
    if not isinstance(target, JointTarget):
        raise InvalidTargetError(f"expected a JointTarget, got {type(target).__name__}")
    q = _as_vector("q_rad", target.q_rad, 7)
    dq = None if target.dq_rad_s is None else _as_vector("dq_rad_s", target.dq_rad_s, 7)
    return JointTarget(q, dq)
