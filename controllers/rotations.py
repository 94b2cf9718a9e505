"""Quaternion and rotation-vector helpers.

Quaternions are (x, y, z, w) numpy arrays; rotation vectors are axis * angle (rad). Written with
scalar arithmetic because these run on 3- and 4-vectors at 1 kHz, where numpy call overhead
dominates.
"""

from __future__ import annotations

import math

import numpy as np


def quat_normalize(q: np.ndarray) -> np.ndarray:
    """Unit quaternion with w >= 0 (the same rotation)."""
    n = math.sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3])
    s = 1.0 / n if q[3] >= 0.0 else -1.0 / n
    return np.array([q[0] * s, q[1] * s, q[2] * s, q[3] * s])


def quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product a * b (apply b, then a)."""
    ax, ay, az, aw = a[0], a[1], a[2], a[3]
    bx, by, bz, bw = b[0], b[1], b[2], b[3]
    return np.array(
        [
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
            aw * bw - ax * bx - ay * by - az * bz,
        ]
    )


def quat_conj(q: np.ndarray) -> np.ndarray:
    """Inverse of a unit quaternion."""
    return np.array([-q[0], -q[1], -q[2], q[3]])


def quat_log(q: np.ndarray) -> np.ndarray:
    """Rotation vector (3,) of a unit quaternion, taking the short way round (angle <= pi)."""
    x, y, z, w = q[0], q[1], q[2], q[3]
    if w < 0.0:  # q and -q are the same rotation; pick the one with angle <= pi
        x, y, z, w = -x, -y, -z, -w
    s = math.sqrt(x * x + y * y + z * z)
    if s < 1e-9:
        return np.array([2.0 * x, 2.0 * y, 2.0 * z])
    k = 2.0 * math.atan2(s, w) / s
    return np.array([x * k, y * k, z * k])


def quat_exp(rotvec: np.ndarray) -> np.ndarray:
    """Unit quaternion of a rotation vector (3,)."""
    rx, ry, rz = rotvec[0], rotvec[1], rotvec[2]
    angle = math.sqrt(rx * rx + ry * ry + rz * rz)
    if angle < 1e-9:  # first-order expansion, renormalized
        n = 1.0 / math.sqrt(1.0 + 0.25 * angle * angle)
        return np.array([0.5 * rx * n, 0.5 * ry * n, 0.5 * rz * n, n])
    s = math.sin(0.5 * angle) / angle
    return np.array([rx * s, ry * s, rz * s, math.cos(0.5 * angle)])


def orientation_error(quat_desired: np.ndarray, quat_current: np.ndarray) -> np.ndarray:
    """Rotation vector (3,), base frame, that turns the current orientation into the desired one.

    log(q_desired * q_current^-1); the sign ambiguity of quaternions is handled in ``quat_log``.
    """
    return quat_log(quat_mul(quat_desired, quat_conj(quat_current)))


def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """3x3 rotation matrix of a unit quaternion."""
    x, y, z, w = q[0], q[1], q[2], q[3]
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def quat_from_euler_xyz(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """Quaternion of extrinsic x-y-z (roll, pitch, yaw) Euler angles, rad."""
    cr, sr = math.cos(roll / 2), math.sin(roll / 2)
    cp, sp = math.cos(pitch / 2), math.sin(pitch / 2)
    cy, sy = math.cos(yaw / 2), math.sin(yaw / 2)
    return np.array(
        [
            sr * cp * cy - cr * sp * sy,
            cr * sp * cy + sr * cp * sy,
            cr * cp * sy - sr * sp * cy,
            cr * cp * cy + sr * sp * sy,
        ]
    )


def quat_angle_between(a: np.ndarray, b: np.ndarray) -> float:
    """Angle (rad, in [0, pi]) of the rotation between two unit quaternions."""
    d = abs(float(a[0] * b[0] + a[1] * b[1] + a[2] * b[2] + a[3] * b[3]))
    return 2.0 * math.acos(min(1.0, d))


# Float forms of quat_mul / quat_exp / quat_log for the 1 kHz paths: the same arithmetic, in the
# same order, on Python floats in tuples (a numpy call costs about 1 us, a float operation about
# 30 ns). Quaternions are (x, y, z, w), rotation vectors (x, y, z).
QuatF = tuple[float, float, float, float]
Vec3F = tuple[float, float, float]


def quat_mul_f(a: QuatF | list[float], b: QuatF | list[float]) -> QuatF:
    """Hamilton product a * b (``quat_mul`` on floats)."""
    ax, ay, az, aw = a
    bx, by, bz, bw = b
    return (
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
        aw * bw - ax * bx - ay * by - az * bz,
    )


def quat_mul_conj_f(a: QuatF | list[float], b: QuatF | list[float]) -> QuatF:
    """a * b^-1 for a unit b (``quat_mul(a, quat_conj(b))`` on floats)."""
    ax, ay, az, aw = a
    bx, by, bz, bw = -b[0], -b[1], -b[2], b[3]
    return (
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
        aw * bw - ax * bx - ay * by - az * bz,
    )


def quat_log_f(q: QuatF | list[float]) -> Vec3F:
    """Rotation vector of a unit quaternion, the short way round (``quat_log`` on floats)."""
    x, y, z, w = q
    if w < 0.0:
        x, y, z, w = -x, -y, -z, -w
    s = math.sqrt(x * x + y * y + z * z)
    if s < 1e-9:
        return (2.0 * x, 2.0 * y, 2.0 * z)
    k = 2.0 * math.atan2(s, w) / s
    return (x * k, y * k, z * k)


def quat_exp_f(rx: float, ry: float, rz: float) -> QuatF:
    """Unit quaternion of a rotation vector (``quat_exp`` on floats)."""
    angle = math.sqrt(rx * rx + ry * ry + rz * rz)
    if angle < 1e-9:
        n = 1.0 / math.sqrt(1.0 + 0.25 * angle * angle)
        return (0.5 * rx * n, 0.5 * ry * n, 0.5 * rz * n, n)
    s = math.sin(0.5 * angle) / angle
    return (rx * s, ry * s, rz * s, math.cos(0.5 * angle))
