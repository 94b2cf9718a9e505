"""What a task is: a scene on the twin with a seeded reset, a success predicate and an expert.

Tasks own their bodies (built once per twin) and re-place them on every reset. Experts read ground
truth (object poses) and answer with TCP targets at the policy rate; they exist to prove each task
is solvable, to record demos, and to act as a scripted intervener.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
import pybullet
from robot_rl.controllers.reference import GRIPPER_DOWN_QUAT_XYZW
from robot_rl.controllers.rotations import orientation_error, quat_from_euler_xyz, quat_mul
from robot_rl.controllers.targets import CartesianTarget
from robot_rl.sim.twin import READY_Q_RAD, PandaTwin

GripperAction = Literal["open", "close"] | None


@dataclass(frozen=True)
class ExpertAction:
    """What a scripted expert wants this policy step: a TCP target and maybe a gripper command."""

    target: CartesianTarget
    gripper: GripperAction = None


class Expert(Protocol):
    """A scripted solution for one episode; built by ``Task.expert()`` after a reset."""

    def act(self, twin: PandaTwin) -> ExpertAction: ...


class Task(Protocol):
    """A task scene. ``build`` adds bodies once; ``reset`` re-places them and the arm from ``rng``.

    ``grasp_at_reset`` asks the scene to close the gripper on whatever is between the fingers right
    after a reset (the peg starts in the hand).
    """

    name: str
    max_episode_s: float
    grasp_at_reset: bool

    def build(self, twin: PandaTwin) -> None: ...

    def reset(self, twin: PandaTwin, rng: np.random.Generator) -> None: ...

    def success(self, twin: PandaTwin) -> bool: ...

    def features(self, twin: PandaTwin) -> np.ndarray:
        """Ground-truth task features (float, (F >= 3,)) for learning from state.

        The first three are a displacement in metres in the base frame (what the TCP must close,
        e.g. object minus TCP); observers may rotate and rescale them like the TCP position. The
        rest should be of order one.
        """
        ...

    def expert(self) -> Expert: ...


def gripper_down_quat(yaw_rad: float = 0.0) -> np.ndarray:
    """TCP pointing down (x, y, z, w), turned by ``yaw_rad`` about the world z axis."""
    return quat_mul(
        quat_from_euler_xyz(0.0, 0.0, yaw_rad), np.asarray(GRIPPER_DOWN_QUAT_XYZW, float)
    )


def step_toward(current_m: np.ndarray, goal_m: np.ndarray, max_step_m: float) -> np.ndarray:
    """``goal_m`` if within ``max_step_m`` of ``current_m``, else the point that far toward it."""
    delta = goal_m - current_m
    dist = float(np.linalg.norm(delta))
    return goal_m.copy() if dist <= max_step_m else current_m + delta * (max_step_m / dist)


def sample_box(
    rng: np.random.Generator, low: tuple[float, ...], high: tuple[float, ...]
) -> np.ndarray:
    """A uniform sample in the axis-aligned box [low, high]."""
    return rng.uniform(np.asarray(low, float), np.asarray(high, float))


def add_box(
    twin: PandaTwin,
    half_extents_m: tuple[float, float, float],
    mass_kg: float,
    rgba: tuple[float, float, float, float],
    friction: float = 1.0,
) -> int:
    """A box body (static if ``mass_kg`` is 0); returns its PyBullet id."""
    c = twin.client
    shape = c.createCollisionShape(pybullet.GEOM_BOX, halfExtents=half_extents_m)
    visual = c.createVisualShape(pybullet.GEOM_BOX, halfExtents=half_extents_m, rgbaColor=rgba)
    body = c.createMultiBody(mass_kg, shape, visual, basePosition=[0.0, 0.0, -1.0])
    c.changeDynamics(body, -1, lateralFriction=friction, spinningFriction=0.001, frictionAnchor=1)
    return body


def held_by_both_fingers(twin: PandaTwin, body_id: int) -> bool:
    """True when both finger links touch ``body_id``."""
    c = twin.client
    return all(
        len(c.getContactPoints(bodyA=twin.robot_id, bodyB=body_id, linkIndexA=link)) > 0
        for link in twin.finger_idx
    )


def reset_arm_to_pose(
    twin: PandaTwin, pos_m: np.ndarray, quat_xyzw: np.ndarray, gripper_width_m: float = 0.08
) -> None:
    """Teleport the arm (at rest) to joint angles that put the TCP at the pose (scene setup only).

    Damped least-squares IK on the twin's own Jacobian, started from the ready posture and pulled
    toward it in the nullspace; raises RuntimeError if the pose is not reached within 0.1 mm and
    1 mrad.
    """
    lim = twin.limits
    lo, hi = lim.joint_pos_min_rad + 0.05, lim.joint_pos_max_rad - 0.05
    ready = np.asarray(READY_Q_RAD)
    q = ready.copy()
    pos_err = rot_err = float("inf")
    for _ in range(200):
        twin.reset(q, gripper_width_m)
        state = twin.read_state()
        err = np.concatenate(
            [pos_m - state.ee_pos_m, orientation_error(quat_xyzw, state.ee_quat_xyzw)]
        )
        pos_err, rot_err = float(np.linalg.norm(err[:3])), float(np.linalg.norm(err[3:]))
        if pos_err < 1e-4 and rot_err < 1e-3:
            return
        jac = twin.model().jacobian
        jac_pinv = jac.T @ np.linalg.inv(jac @ jac.T + 1e-4 * np.eye(6))
        nullspace = (np.eye(7) - jac_pinv @ jac) @ (ready - q)
        q = np.clip(q + jac_pinv @ np.clip(err, -0.1, 0.1) + 0.1 * nullspace, lo, hi)
    raise RuntimeError(
        f"cannot reach TCP pose {pos_m.tolist()} {quat_xyzw.tolist()} "
        f"(error {pos_err * 1e3:.1f} mm, "
        f"{np.degrees(rot_err):.2f} deg); choose a pose inside the workspace"
    )
