"""What a task is: a scene on the twin with a seeded reset, a success predicate and a scripted expert."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
import pybullet

from controllers.reference import GRIPPER_DOWN_QUAT_XYZW
from controllers.rotations import quat_angle_between
from controllers.targets import CartesianTarget
from sim.twin import PandaTwin

GripperAction = Literal["open", "close"] | None


@dataclass(frozen=True)
class ExpertAction:
    """What a scripted expert wants this policy step: a TCP target and optionally a gripper command."""

    target: CartesianTarget
    gripper: GripperAction = None


class Expert(Protocol):
    """A scripted solution; it may read ground truth from the twin and the task."""

    def reset(self) -> None: ...

    def act(self, twin: PandaTwin, time_s: float) -> ExpertAction: ...


class Task(Protocol):
    """A task scene. ``build`` adds bodies once; ``reset`` re-randomizes them from ``rng``."""

    name: str
    max_episode_s: float

    def build(self, twin: PandaTwin) -> None: ...

    def reset(self, twin: PandaTwin, rng: np.random.Generator) -> None: ...

    def success(self, twin: PandaTwin) -> bool: ...

    def expert(self) -> Expert: ...


def gripper_down_quat(yaw_rad: float = 0.0) -> np.ndarray:
    """TCP pointing down, turned by ``yaw_rad`` about the world z axis."""
    down = np.asarray(GRIPPER_DOWN_QUAT_XYZW, dtype=float)
    yaw = np.array(pybullet.getQuaternionFromEuler([0.0, 0.0, yaw_rad]))
    # world-frame yaw applied after pointing down
    x1, y1, z1, w1 = yaw
    x2, y2, z2, w2 = down
    return np.array(
        [
            w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
            w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
            w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
            w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
        ]
    )


def reset_arm_to_pose(
    twin: PandaTwin, pos_m: np.ndarray, quat_xyzw: np.ndarray, gripper_width_m: float = 0.08
) -> None:
    """Teleport the arm (at rest) to joint angles that put the TCP at the pose (scene setup only).

    Uses PyBullet's damped-least-squares IK from the ready posture, refined a few times; raises
    RuntimeError if the pose is not reached within 1 mm / 0.01 rad.
    """
    from sim.twin import READY_Q_RAD

    lim = twin.limits
    twin.reset(np.asarray(READY_Q_RAD), gripper_width_m)
    for _ in range(5):
        q = pybullet.calculateInverseKinematics(
            twin.robot_id, twin.tcp_link, pos_m.tolist(), quat_xyzw.tolist(),
            lowerLimits=lim.joint_pos_min_rad.tolist() + [0.0, 0.0],
            upperLimits=lim.joint_pos_max_rad.tolist() + [0.04, 0.04],
            jointRanges=(lim.joint_pos_max_rad - lim.joint_pos_min_rad).tolist() + [0.04, 0.04],
            restPoses=list(READY_Q_RAD) + [0.04, 0.04],
            maxNumIterations=200, residualThreshold=1e-6, physicsClientId=twin.cid,
        )
        twin.reset(np.clip(q[:7], lim.joint_pos_min_rad, lim.joint_pos_max_rad), gripper_width_m)
        state = twin.read_state()
        pos_err = float(np.linalg.norm(state.ee_pos_m - pos_m))
        rot_err = quat_angle_between(state.ee_quat_xyzw, quat_xyzw)
        if pos_err < 1e-3 and rot_err < 1e-2:
            return
    raise RuntimeError(
        f"cannot reach TCP pose {pos_m.tolist()} {quat_xyzw.tolist()} (error {pos_err * 1e3:.1f} mm, "
        f"{np.degrees(rot_err):.2f} deg); choose a pose inside the workspace"
    )
