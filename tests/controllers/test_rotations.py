"""Invariants of the quaternion helpers (x, y, z, w) and rotation vectors (axis * angle, rad).

Reference values come from textbook formulas written out here (Rodrigues' rotation formula,
elementary rotation matrices), never from the functions under test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from robot_rl.controllers.rotations import (
    orientation_error,
    quat_angle_between,
    quat_conj,
    quat_exp,
    quat_from_euler_xyz,
    quat_log,
    quat_mul,
    quat_normalize,
    quat_to_matrix,
)

_component = st.floats(-1.0, 1.0, allow_nan=False)


@st.composite
def unit_quats(draw: st.DrawFn) -> np.ndarray:
    """Uniform-ish unit quaternions of either sign (w < 0 included on purpose)."""
    q = np.array([draw(_component) for _ in range(4)])
    n = float(np.linalg.norm(q))
    assume(n > 0.1)
    return q / n


@st.composite
def unit_axes(draw: st.DrawFn) -> np.ndarray:
    v = np.array([draw(_component) for _ in range(3)])
    n = float(np.linalg.norm(v))
    assume(n > 0.1)
    return v / n


def rotvec(axis: np.ndarray, angle_rad: float) -> np.ndarray:
    return axis * angle_rad


def skew(v: np.ndarray) -> np.ndarray:
    return np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])


def rodrigues(r: np.ndarray) -> np.ndarray:
    """Rotation matrix of a rotation vector: I + sin(t) K + (1 - cos(t)) K^2, K = skew(axis)."""
    angle = float(np.linalg.norm(r))
    if angle == 0.0:
        return np.eye(3)
    k = skew(r / angle)
    return np.eye(3) + math.sin(angle) * k + (1.0 - math.cos(angle)) * k @ k


def same_rotation(a: np.ndarray, b: np.ndarray, atol: float = 1e-9) -> bool:
    """q and -q are the same rotation."""
    return bool(np.allclose(a, b, atol=atol) or np.allclose(a, -b, atol=atol))


# -- hand-written values -------------------------------------------------------------------------


def test_identity_has_zero_rotation_vector():
    np.testing.assert_array_equal(quat_log(np.array([0.0, 0.0, 0.0, 1.0])), np.zeros(3))
    np.testing.assert_array_equal(quat_exp(np.zeros(3)), [0.0, 0.0, 0.0, 1.0])


def test_quarter_turn_about_z():
    s = math.sqrt(0.5)
    np.testing.assert_allclose(
        quat_log(np.array([0.0, 0.0, s, s])), [0, 0, math.pi / 2], atol=1e-12
    )
    np.testing.assert_allclose(quat_exp(np.array([0, 0, math.pi / 2])), [0, 0, s, s], atol=1e-12)


def test_half_turn_about_x_is_the_gripper_down_quaternion():
    np.testing.assert_allclose(quat_exp(np.array([math.pi, 0.0, 0.0])), [1, 0, 0, 0], atol=1e-12)
    # A half turn is its own inverse: either sign of the axis is a correct answer, angle pi.
    assert np.linalg.norm(quat_log(np.array([1.0, 0.0, 0.0, 0.0]))) == pytest.approx(math.pi)


def test_orientation_error_is_zero_at_identity():
    identity = np.array([0.0, 0.0, 0.0, 1.0])
    np.testing.assert_array_equal(orientation_error(identity, identity), np.zeros(3))
    np.testing.assert_array_equal(orientation_error(identity, -identity), np.zeros(3))


# -- log / exp -----------------------------------------------------------------------------------


@given(unit_quats())
def test_exp_of_log_gives_back_the_rotation(q):
    r = quat_log(q)
    assert np.linalg.norm(r) <= math.pi + 1e-12  # the short way round
    assert same_rotation(quat_exp(r), q)


@given(unit_axes(), st.floats(0.0, math.pi - 1e-6))
def test_log_of_exp_gives_back_the_rotation_vector(axis, angle):
    r = rotvec(axis, angle)
    np.testing.assert_allclose(quat_log(quat_exp(r)), r, atol=1e-9)


@given(unit_axes(), st.floats(0.0, 1e-6))
def test_small_angles_round_trip_to_relative_precision(axis, angle):
    r = rotvec(axis, angle)
    q = quat_exp(r)
    assert np.linalg.norm(q) == pytest.approx(1.0, abs=1e-15)
    # For small angles the absolute error must shrink with the angle, not stay at 1e-9.
    np.testing.assert_allclose(quat_log(q), r, rtol=1e-9, atol=1e-300)


@given(unit_axes(), st.floats(math.pi - 1e-6, math.pi))
def test_near_pi_round_trip_keeps_the_rotation(axis, angle):
    r = rotvec(axis, angle)
    back = quat_log(quat_exp(r))
    assert np.linalg.norm(back) == pytest.approx(angle, abs=1e-9)
    # At exactly pi the axis sign is arbitrary; the rotation is not.
    np.testing.assert_allclose(rodrigues(back), rodrigues(r), atol=1e-9)


@given(unit_axes(), st.floats(math.pi + 1e-3, 2 * math.pi - 1e-3))
def test_log_takes_the_short_way_round(axis, angle):
    # A turn of angle a > pi about n is the turn 2 pi - a about -n.
    np.testing.assert_allclose(
        quat_log(quat_exp(rotvec(axis, angle))), rotvec(-axis, 2 * math.pi - angle), atol=1e-9
    )


@given(st.lists(st.floats(-10.0, 10.0), min_size=3, max_size=3))
def test_exp_is_a_unit_quaternion_with_the_rodrigues_matrix(values):
    r = np.array(values)
    q = quat_exp(r)
    assert np.linalg.norm(q) == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(quat_to_matrix(q), rodrigues(r), atol=1e-9)


# -- sign handling and the orientation error --------------------------------------------------


@given(unit_quats(), unit_quats())
def test_orientation_error_ignores_quaternion_sign(q_desired, q_current):
    e = orientation_error(q_desired, q_current)
    assert np.linalg.norm(e) <= math.pi + 1e-12
    # Away from a half turn the error is unique, so flipping either sign must not change it.
    assume(np.linalg.norm(e) < math.pi - 1e-6)
    for qd, qc in ((-q_desired, q_current), (q_desired, -q_current), (-q_desired, -q_current)):
        np.testing.assert_allclose(orientation_error(qd, qc), e, atol=1e-9)


@given(unit_quats())
def test_orientation_error_is_zero_for_equal_orientations(q):
    np.testing.assert_allclose(orientation_error(q, q), np.zeros(3), atol=1e-12)
    np.testing.assert_allclose(orientation_error(q, -q), np.zeros(3), atol=1e-12)


@given(unit_quats(), unit_axes(), st.floats(0.0, math.pi - 1e-6))
def test_orientation_error_is_the_base_frame_rotation_from_current_to_desired(q_current, axis, a):
    r = rotvec(axis, a)
    q_desired = quat_mul(quat_exp(r), q_current)  # rotate by r about base-frame axes
    np.testing.assert_allclose(orientation_error(q_desired, q_current), r, atol=1e-9)


@given(unit_quats(), unit_quats())
def test_orientation_error_is_antisymmetric(a, b):
    e = orientation_error(a, b)
    assume(np.linalg.norm(e) < math.pi - 1e-6)
    np.testing.assert_allclose(orientation_error(b, a), -e, atol=1e-9)


# -- products, normalization, matrices ---------------------------------------------------------


@given(unit_quats(), unit_quats())
def test_product_composes_rotation_matrices(a, b):
    np.testing.assert_allclose(
        quat_to_matrix(quat_mul(a, b)), quat_to_matrix(a) @ quat_to_matrix(b), atol=1e-12
    )


@given(unit_quats())
def test_conjugate_is_the_inverse(q):
    np.testing.assert_allclose(quat_mul(q, quat_conj(q)), [0, 0, 0, 1], atol=1e-12)


@given(unit_quats())
def test_matrix_is_a_proper_rotation_and_sign_free(q):
    m = quat_to_matrix(q)
    np.testing.assert_allclose(m @ m.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(m) == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(quat_to_matrix(-q), m, atol=1e-15)


@given(unit_quats(), st.floats(0.01, 100.0))
def test_normalize_gives_unit_norm_nonnegative_w_same_rotation(q, scale):
    n = quat_normalize(q * scale)
    assert np.linalg.norm(n) == pytest.approx(1.0, abs=1e-12)
    assert n[3] >= 0.0
    assert same_rotation(n, q)


@given(
    st.floats(-math.pi, math.pi), st.floats(-math.pi / 2, math.pi / 2), st.floats(-math.pi, math.pi)
)
def test_euler_xyz_is_extrinsic_roll_then_pitch_then_yaw(roll, pitch, yaw):
    cr, sr = math.cos(roll), math.sin(roll)
    cp, sp = math.cos(pitch), math.sin(pitch)
    cy, sy = math.cos(yaw), math.sin(yaw)
    rx = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
    ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
    rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
    np.testing.assert_allclose(
        quat_to_matrix(quat_from_euler_xyz(roll, pitch, yaw)), rz @ ry @ rx, atol=1e-12
    )


@given(unit_quats(), unit_axes(), st.floats(0.0, math.pi))
def test_angle_between_is_the_relative_rotation_angle(q, axis, angle):
    other = quat_mul(quat_exp(rotvec(axis, angle)), q)
    assert quat_angle_between(q, other) == pytest.approx(angle, abs=1e-6)
    assert quat_angle_between(other, q) == pytest.approx(angle, abs=1e-6)
    assert quat_angle_between(q, -other) == pytest.approx(angle, abs=1e-6)
