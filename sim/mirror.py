"""A render-only copy of a twin scene that follows another one's state: camera views for a twin
that runs behind a robot server.

The robot server's 1 kHz physics thread cannot stop ~40 ms per frame to render, and a second twin
would show its own episode. The mirror instead builds the same task (every task creates its bodies
in ``build`` and only moves them in ``reset``, so body ids match), and before each frame copies the
arm's joint angles, the finger width and every other body's pose from the state the server
publishes (``body_poses``). Physics never steps in the mirror.
"""

from __future__ import annotations

import numpy as np
from robot_rl.sim.scene import SceneConfig, TwinScene
from robot_rl.sim.twin import PandaTwin


def body_poses(twin: PandaTwin) -> np.ndarray:
    """(N, 7) position and xyzw quaternion of every body but the arm, in body-id order."""
    c = twin.client
    poses = []
    for i in range(c.getNumBodies()):
        body = c.getBodyUniqueId(i)
        if body == twin.robot_id:
            continue
        pos, quat = c.getBasePositionAndOrientation(body)
        poses.append([*pos, *quat])
    return np.asarray(poses, dtype=np.float64).reshape(-1, 7)


class TwinMirror:
    """Renders ``config``'s cameras for a scene whose state arrives from elsewhere."""

    def __init__(self, config: SceneConfig) -> None:
        self.scene = TwinScene(config)
        twin = self.scene.twin
        self._bodies = [twin.client.getBodyUniqueId(i) for i in range(twin.client.getNumBodies())]
        self._bodies = [b for b in self._bodies if b != twin.robot_id]

    def update(self, q_rad: np.ndarray, gripper_width_m: float, poses: np.ndarray) -> None:
        """Copy the arm, the fingers and the bodies' poses (from ``body_poses`` of the source)."""
        poses = np.asarray(poses, dtype=np.float64)
        if poses.shape != (len(self._bodies), 7):
            raise ValueError(
                f"{poses.shape[0]} body poses for {len(self._bodies)} bodies: the source runs "
                "another task than the mirror"
            )
        twin = self.scene.twin
        twin.reset(np.asarray(q_rad, dtype=np.float64), float(gripper_width_m))
        for body, pose in zip(self._bodies, poses, strict=True):
            twin.client.resetBasePositionAndOrientation(body, pose[:3], pose[3:])

    def render(self) -> dict[str, np.ndarray]:
        return {name: frame.image for name, frame in self.scene.render().items()}

    def close(self) -> None:
        self.scene.close()
