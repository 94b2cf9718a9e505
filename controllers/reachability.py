"""Can the arm reach every part of a workspace box with the tool at the box's nominal orientation?

A box drawn by hand (or pasted from ``robot-rl robot capture-pose`` at a few poses) can reach past
the arm. Targets clipped to such a box then pull the arm to its reach limit, where the Cartesian
law is near a singularity; on franky-sim a corner 2-3 cm beyond reach made torque mode thrash
before its task inertia was capped, and still makes tracker mode trip its speed guard. This
check finds such corners before a session does.

For each probe point (the 8 corners, the 6 face centres and the centre) it solves inverse
kinematics for the TCP pose (the point, the nominal orientation) by damped least squares on the
Panda/FR3 kinematics (``kinematics.py``: the FR3 shares the Panda's kinematic chain), with the
joints kept ``joint_margin_rad`` inside their limits (where the torque safety's repulsion
starts), from the home posture and from a few postures around it. A point is reachable when the
best solution is within ``tolerance_m`` and ``tolerance_rad``. Pure numpy, no I/O.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from robot_rl.controllers.kinematics import panda_tcp_transform, rotation_to_quat_xyzw
from robot_rl.controllers.reference import Workspace
from robot_rl.controllers.rotations import orientation_error

from robot_rl.interfaces import ArmLimits


@dataclass(frozen=True)
class ProbeResult:
    """One probe point: where it is, how close the arm's best posture got, and that posture."""

    name: str
    pos_m: tuple[float, float, float]
    position_error_m: float
    rotation_error_rad: float
    q_rad: tuple[float, ...]
    reachable: bool

    def line(self) -> str:
        where = ", ".join(f"{v:.3f}" for v in self.pos_m)
        if self.reachable:
            return f"{self.name} ({where}): reachable"
        return (
            f"{self.name} ({where}): out of reach, {self.position_error_m * 1e3:.0f} mm short "
            f"and {np.degrees(self.rotation_error_rad):.1f} deg off the nominal orientation"
        )


def probe_points(workspace: Workspace) -> list[tuple[str, np.ndarray]]:
    """The box's 8 corners, 6 face centres and centre, named."""
    lo, hi = np.asarray(workspace.pos_min_m, float), np.asarray(workspace.pos_max_m, float)
    mid = 0.5 * (lo + hi)
    points = []
    for corner in itertools.product((0, 1), repeat=3):
        pos = np.where(np.array(corner) == 1, hi, lo)
        label = "".join("+" if c else "-" for c in corner)
        points.append((f"corner x{label[0]} y{label[1]} z{label[2]}", pos))
    for axis, name in enumerate("xyz"):
        for side, sign in ((lo, "-"), (hi, "+")):
            pos = mid.copy()
            pos[axis] = side[axis]
            points.append((f"face {name}{sign}", pos))
    points.append(("centre", mid))
    return points


def _pose_error(q: np.ndarray, pos_m: np.ndarray, quat_xyzw: np.ndarray) -> np.ndarray:
    """(6,) position error (m) and orientation error (rotation vector, rad), base frame."""
    transform = panda_tcp_transform(q)
    now = rotation_to_quat_xyzw(transform[:3, :3])
    return np.concatenate([pos_m - transform[:3, 3], orientation_error(quat_xyzw, now)])


def solve_pose(
    pos_m: np.ndarray,
    quat_xyzw: np.ndarray,
    q_start: np.ndarray,
    q_min: np.ndarray,
    q_max: np.ndarray,
    iterations: int = 150,
    damping: float = 0.05,
    step_rad: float = 1e-6,
) -> tuple[np.ndarray, np.ndarray]:
    """Damped least squares from ``q_start``, each step projected into [q_min, q_max]: the
    posture with the least pose error found, and that error (6,)."""
    q = np.clip(np.asarray(q_start, float), q_min, q_max)
    error = _pose_error(q, pos_m, quat_xyzw)
    best_q, best_error = q, error
    eye6 = np.eye(6)
    for _ in range(iterations):
        jac = np.empty((6, 7))
        for i in range(7):
            dq = np.zeros(7)
            dq[i] = step_rad
            # the error falls as the pose moves toward the goal: its Jacobian is -J
            jac[:, i] = (error - _pose_error(q + dq, pos_m, quat_xyzw)) / step_rad
        step = jac.T @ np.linalg.solve(jac @ jac.T + damping**2 * eye6, error)
        q = np.clip(q + np.clip(step, -0.2, 0.2), q_min, q_max)
        error = _pose_error(q, pos_m, quat_xyzw)
        if np.linalg.norm(error) < np.linalg.norm(best_error):
            best_q, best_error = q, error
        if np.linalg.norm(error[:3]) < 1e-5 and np.linalg.norm(error[3:]) < 1e-4:
            break
    return best_q, best_error


def check_workspace_reach(
    workspace: Workspace,
    limits: ArmLimits,
    home_q_rad: np.ndarray,
    joint_margin_rad: float = 0.1,
    tolerance_m: float = 0.002,
    tolerance_rad: float = 0.02,
    starts: int = 4,
    seed: int = 0,
) -> list[ProbeResult]:
    """Every probe point of ``workspace``, solved with the tool at its nominal orientation."""
    q_min = np.asarray(limits.joint_pos_min_rad, float) + joint_margin_rad
    q_max = np.asarray(limits.joint_pos_max_rad, float) - joint_margin_rad
    if not (q_min < q_max).all():
        raise ValueError(f"joint_margin_rad={joint_margin_rad} leaves no joint range")
    quat = np.asarray(workspace.nominal_quat_xyzw, float)
    rng = np.random.default_rng(seed)
    home = np.clip(np.asarray(home_q_rad, float), q_min, q_max)
    seeds = [home] + [
        np.clip(home + rng.uniform(-0.5, 0.5, 7), q_min, q_max) for _ in range(starts - 1)
    ]
    results = []
    for name, pos in probe_points(workspace):
        best: tuple[np.ndarray, np.ndarray] | None = None
        for start in seeds:
            q, error = solve_pose(pos, quat, start, q_min, q_max)
            if best is None or np.linalg.norm(error) < np.linalg.norm(best[1]):
                best = (q, error)
            if (
                np.linalg.norm(error[:3]) <= tolerance_m
                and np.linalg.norm(error[3:]) <= tolerance_rad
            ):
                break
        assert best is not None
        q, error = best
        pos_err, rot_err = float(np.linalg.norm(error[:3])), float(np.linalg.norm(error[3:]))
        results.append(
            ProbeResult(
                name,
                tuple(float(v) for v in pos),
                pos_err,
                rot_err,
                tuple(float(v) for v in q),
                pos_err <= tolerance_m and rot_err <= tolerance_rad,
            )
        )
    return results
