"""Forward kinematics of the Franka Emika Panda to its tool centre point. Pure numpy, no I/O.

Franka's modified (Craig) Denavit-Hartenberg table from the FCI documentation: joint frame i is
``RotX(alpha_i) TransX(a_i) RotZ(q_i) TransZ(d_i)`` after frame i-1. The flange sits 0.107 m along
joint 7's z axis; the Franka Hand is mounted turned by -pi/4 about z, and its TCP lies 0.1034 m
further along z (the twin's ``panda_grasptarget``). Positions m, base frame; quaternions
(x, y, z, w).

Used to check joint-space targets against the Cartesian workspace before and while they run.
"""

from __future__ import annotations

import math

import numpy as np

# (a_m, d_m, alpha_rad) for joints 1..7 (modified DH).
PANDA_DH = (
    (0.0, 0.333, 0.0),
    (0.0, 0.0, -math.pi / 2),
    (0.0, 0.316, math.pi / 2),
    (0.0825, 0.0, math.pi / 2),
    (-0.0825, 0.384, -math.pi / 2),
    (0.0, 0.0, math.pi / 2),
    (0.088, 0.0, math.pi / 2),
)
FLANGE_D_M = 0.107
HAND_YAW_RAD = -math.pi / 4
TCP_OFFSET_M = 0.1034  # along the hand's z axis, from the flange


def _dh(a_m: float, d_m: float, alpha_rad: float, q_rad: float) -> np.ndarray:
    ca, sa = math.cos(alpha_rad), math.sin(alpha_rad)
    cq, sq = math.cos(q_rad), math.sin(q_rad)
    return np.array(
        [
            [cq, -sq, 0.0, a_m],
            [sq * ca, cq * ca, -sa, -d_m * sa],
            [sq * sa, cq * sa, ca, d_m * ca],
            [0.0, 0.0, 0.0, 1.0],
        ]
    )


_FLANGE_TO_TCP = _dh(0.0, FLANGE_D_M, 0.0, 0.0) @ np.array(
    [
        [math.cos(HAND_YAW_RAD), -math.sin(HAND_YAW_RAD), 0.0, 0.0],
        [math.sin(HAND_YAW_RAD), math.cos(HAND_YAW_RAD), 0.0, 0.0],
        [0.0, 0.0, 1.0, TCP_OFFSET_M],
        [0.0, 0.0, 0.0, 1.0],
    ]
)


def panda_tcp_transform(q_rad: np.ndarray) -> np.ndarray:
    """(4, 4) homogeneous transform of the TCP in the base frame for joint angles (7,) rad."""
    q = np.asarray(q_rad, dtype=float)
    if q.shape != (7,):
        raise ValueError(f"q_rad has shape {q.shape}; expected (7,)")
    transform = np.eye(4)
    for (a_m, d_m, alpha_rad), q_i in zip(PANDA_DH, q, strict=True):
        transform = transform @ _dh(a_m, d_m, alpha_rad, float(q_i))
    return transform @ _FLANGE_TO_TCP


def panda_tcp_position(q_rad: np.ndarray) -> np.ndarray:
    """(3,) TCP position, m, base frame."""
    return panda_tcp_transform(q_rad)[:3, 3].copy()


def panda_tcp_jacobian_position(q_rad: np.ndarray, step_rad: float = 1e-6) -> np.ndarray:
    """(3, 7) positional TCP Jacobian, m/rad, by central differences (for offline checks)."""
    q = np.asarray(q_rad, dtype=float)
    jac = np.empty((3, 7))
    for i in range(7):
        dq = np.zeros(7)
        dq[i] = step_rad
        jac[:, i] = (panda_tcp_position(q + dq) - panda_tcp_position(q - dq)) / (2 * step_rad)
    return jac


def rotation_to_quat_xyzw(rotation: np.ndarray) -> np.ndarray:
    """(4,) unit quaternion (x, y, z, w), w >= 0, of a (3, 3) rotation matrix."""
    m = rotation
    trace = m[0, 0] + m[1, 1] + m[2, 2]
    if trace > 0:
        s = 2.0 * math.sqrt(trace + 1.0)
        q = [(m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, s / 4]
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = 2.0 * math.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        q = [s / 4, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s, (m[2, 1] - m[1, 2]) / s]
    elif m[1, 1] > m[2, 2]:
        s = 2.0 * math.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
        q = [(m[0, 1] + m[1, 0]) / s, s / 4, (m[1, 2] + m[2, 1]) / s, (m[0, 2] - m[2, 0]) / s]
    else:
        s = 2.0 * math.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
        q = [(m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, s / 4, (m[1, 0] - m[0, 1]) / s]
    quat = np.asarray(q) / np.linalg.norm(q)
    return quat if quat[3] >= 0 else -quat
