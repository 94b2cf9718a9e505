"""The default workspace box is one the Panda reaches gripper-down, and the Panda's forward
kinematics agrees with the documented ready pose.

Reachability is checked kinematically over a 3 x 3 x 3 grid of the box (corners, edge and face
centres, the centre): a damped least-squares inverse kinematics, warm-started from the previous
grid point, must put the TCP on the point with the gripper pointing down, inside the soft joint
limits the controller enforces, at a pose whose positional Jacobian is not near-singular.
Joint speeds while moving there are checked on the twin (tests/sim/test_loop.py), where the
velocity guard is the last bound.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from robot_rl.controllers.kinematics import (
    panda_tcp_jacobian_position,
    panda_tcp_position,
    panda_tcp_transform,
    rotation_to_quat_xyzw,
)
from robot_rl.controllers.loop import PANDA_READY_Q_RAD
from robot_rl.controllers.reference import Workspace
from robot_rl.controllers.torque_safety import SafetyConfig

from robot_rl.interfaces import PANDA_LIMITS

READY_Q = np.asarray(PANDA_READY_Q_RAD)
MARGIN_RAD = SafetyConfig().joint_margin_rad
Q_LO = PANDA_LIMITS.joint_pos_min_rad + MARGIN_RAD
Q_HI = PANDA_LIMITS.joint_pos_max_rad - MARGIN_RAD
DOWN_ROTATION = np.diag([1.0, -1.0, -1.0])  # tool z down, tool x along base x
# Over the old box's unreachable corners this fell to 0.01; over the default box it stays above
# 0.16 (the folded poses at its near face, x = 0.3 m, are the least favourable).
MIN_SINGULAR_VALUE_M_PER_RAD = 0.15


def test_ready_pose_tcp_matches_frankas_figures():
    # Franka documents the flange of the ready pose at (0.307, 0, 0.590) m, pointing down; the
    # Franka Hand's TCP is 0.1034 m further along the tool axis.
    transform = panda_tcp_transform(READY_Q)
    np.testing.assert_allclose(transform[:3, 3], [0.307, 0.0, 0.590 - 0.1034], atol=1e-3)
    assert transform[2, 2] == pytest.approx(-1.0, abs=1e-3)  # tool z axis points down


def test_rotation_to_quaternion_round_trips_the_ready_orientation():
    quat = rotation_to_quat_xyzw(panda_tcp_transform(READY_Q)[:3, :3])
    # gripper down with the hand's -45 degree mount undone by joint 7 at +45 degrees: (1, 0, 0, 0)
    np.testing.assert_allclose(np.abs(quat), [1.0, 0.0, 0.0, 0.0], atol=1e-3)


def test_forward_kinematics_refuses_a_wrong_shape():
    with pytest.raises(ValueError, match=r"shape \(6,\)"):
        panda_tcp_position(np.zeros(6))


def _pose_error(q: np.ndarray, goal_m: np.ndarray) -> np.ndarray:
    transform = panda_tcp_transform(q)
    rot = transform[:3, :3]
    rot_err = 0.5 * sum(np.cross(rot[:, i], DOWN_ROTATION[:, i]) for i in range(3))
    return np.concatenate((goal_m - transform[:3, 3], rot_err))


def _solve(goal_m: np.ndarray, q0: np.ndarray) -> np.ndarray:
    """Damped least squares toward (goal, gripper down), staying inside the soft limits."""
    q = q0.copy()
    for _ in range(200):
        error = _pose_error(q, goal_m)
        if np.linalg.norm(error[:3]) < 1e-5 and np.linalg.norm(error[3:]) < 1e-4:
            break
        jac = np.empty((6, 7))
        for i in range(7):
            dq = np.zeros(7)
            dq[i] = 1e-6
            jac[:, i] = -(_pose_error(q + dq, goal_m) - error) / 1e-6
        step = jac.T @ np.linalg.solve(jac @ jac.T + 1e-3 * np.eye(6), error)
        posture = (np.eye(7) - np.linalg.pinv(jac) @ jac) @ (READY_Q - q)
        q = np.clip(q + np.clip(step, -0.2, 0.2) + 0.05 * posture, Q_LO, Q_HI)
    return q


def test_every_point_of_the_default_box_is_reachable_gripper_down():
    ws = Workspace()
    axes = [np.linspace(lo, hi, 3) for lo, hi in zip(ws.pos_min_m, ws.pos_max_m, strict=True)]
    q = READY_Q.copy()
    for point in itertools.product(*axes):
        goal = np.asarray(point)
        q = _solve(goal, q)
        error = _pose_error(q, goal)
        assert np.linalg.norm(error[:3]) < 1e-3, f"{point}: TCP {error[:3]} m off"
        assert np.linalg.norm(error[3:]) < 1e-2, f"{point}: not gripper-down"
        assert ((q > Q_LO + 1e-6) & (q < Q_HI - 1e-6)).all(), f"{point}: at a joint limit"
        # Not near a singular pose: the positional Jacobian keeps every direction (a TCP speed of
        # v needs joint speeds of at most v / sigma_min along the least favourable direction).
        sigma_min = np.linalg.svd(panda_tcp_jacobian_position(q), compute_uv=False).min()
        assert sigma_min > MIN_SINGULAR_VALUE_M_PER_RAD, f"{point}: sigma_min {sigma_min:.3f}"


def test_the_old_default_box_failed_this_check():
    # What the issue found: (0.75, 0.4, 0.55), inside the old box, is out of reach gripper-down.
    goal = np.array([0.75, 0.4, 0.55])
    q = _solve(goal, READY_Q.copy())
    assert np.linalg.norm(_pose_error(q, goal)[:3]) > 0.05
