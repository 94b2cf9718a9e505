"""Rendered cameras of the twin: fixed ``front``, ``side`` and ``top`` views and a ``wrist`` view
riding on the hand (``front`` and ``wrist`` by default).

Frames are uint8 (H, W, 3) RGB rendered with PyBullet's TinyRenderer (CPU, no display needed),
stamped with the twin's simulated time. Implements ``robot_rl.interfaces.Camera``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pybullet
from robot_rl.sim.twin import PandaTwin

from robot_rl.interfaces import Frame


@dataclass(frozen=True)
class CameraSpec:
    """Where a camera looks from. ``mount`` is 'world' (fixed) or 'hand' (eye/target in hand frame).

    eye_m, target_m, up: (3,) in the world frame, or in the hand frame for a hand mount.
    """

    camera_id: str
    mount: str = "world"
    eye_m: tuple[float, float, float] = (1.0, 0.3, 0.42)
    target_m: tuple[float, float, float] = (0.5, 0.0, 0.15)
    up: tuple[float, float, float] = (0.0, 0.0, 1.0)
    width: int = 128
    height: int = 128
    fov_deg: float = 50.0
    near_m: float = 0.02
    far_m: float = 3.0

    def __post_init__(self) -> None:
        if self.mount not in ("world", "hand"):
            raise ValueError(
                f"camera {self.camera_id}: mount={self.mount!r}; allowed 'world', 'hand'"
            )
        if not (8 <= self.width <= 1920 and 8 <= self.height <= 1080):
            raise ValueError(
                f"camera {self.camera_id}: {self.width}x{self.height}; allowed 8..1920 x 8..1080"
            )


FRONT = CameraSpec("front")
# Wrist camera: behind and above the fingers on the hand, looking down the gripper's z axis.
WRIST = CameraSpec(
    "wrist",
    mount="hand",
    eye_m=(0.09, 0.0, 0.03),
    target_m=(0.0, 0.0, 0.2),
    up=(1.0, 0.0, 0.0),
    fov_deg=70.0,
    near_m=0.01,
    far_m=2.0,
)
# Side camera: a second fixed view from the robot's right, looking across the workspace, so x and
# height show directly where the front camera sees them along its line of sight. Off by default.
SIDE = CameraSpec("side", eye_m=(0.5, -0.75, 0.5), target_m=(0.5, 0.0, 0.25), fov_deg=45.0)
# Top camera: a fixed view from 1.3 m up, over the goal box, looking down, so the hand's x and
# y show at every height of the reach goal box (the front view loses the hand at the top of the
# box, where its y reads nowhere else). Beyond the goal box it is weaker: at the workspace box's
# far low corners the forearm hides the hand from above, and its near corners reach the image's
# edge. Off by default.
TOP = CameraSpec(
    "top", eye_m=(0.6, 0.0, 1.3), target_m=(0.5, 0.0, 0.2), up=(-1.0, 0.0, 0.0), fov_deg=38.0
)
DEFAULT_CAMERAS = (FRONT, WRIST)
TWIN_CAMERAS = (FRONT, WRIST, SIDE, TOP)  # every camera the twin knows, by name


def twin_cameras(
    names: tuple[str, ...] | list[str], width: int, height: int
) -> tuple[CameraSpec, ...]:
    """The twin's cameras called ``names``, in that order, rendering ``width`` x ``height``.
    Raises ValueError naming an unknown camera."""
    known = {c.camera_id: c for c in TWIN_CAMERAS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"cameras {unknown} unknown; allowed: {sorted(known)}")
    if len(set(names)) != len(names):
        raise ValueError(f"cameras {list(names)} name a camera twice")
    return tuple(dataclasses.replace(known[n], width=width, height=height) for n in names)


class SimCamera:
    """Renders one camera of a twin on demand."""

    def __init__(self, twin: PandaTwin, spec: CameraSpec):
        self.twin = twin
        self.spec = spec
        self._seq = 0
        self._projection = pybullet.computeProjectionMatrixFOV(
            spec.fov_deg, spec.width / spec.height, spec.near_m, spec.far_m
        )
        self._fixed_view = (
            pybullet.computeViewMatrix(spec.eye_m, spec.target_m, spec.up)
            if spec.mount == "world"
            else None
        )

    @property
    def camera_id(self) -> str:
        return self.spec.camera_id

    def _view_matrix(self) -> list[float]:
        if self._fixed_view is not None:
            return self._fixed_view
        tw = self.twin
        pos, quat = pybullet.getLinkState(tw.robot_id, tw.hand_link, physicsClientId=tw.cid)[4:6]
        rot = np.array(pybullet.getMatrixFromQuaternion(quat)).reshape(3, 3)
        eye = np.asarray(pos) + rot @ np.asarray(self.spec.eye_m)
        target = np.asarray(pos) + rot @ np.asarray(self.spec.target_m)
        up = rot @ np.asarray(self.spec.up)
        return pybullet.computeViewMatrix(eye.tolist(), target.tolist(), up.tolist())

    def read(self) -> Frame:
        """Render now. Takes tens of ms at 128x128 on a laptop CPU: call at the policy rate."""
        s = self.spec
        _, _, rgba, _, _ = pybullet.getCameraImage(
            s.width,
            s.height,
            self._view_matrix(),
            self._projection,
            renderer=pybullet.ER_TINY_RENDERER,
            flags=pybullet.ER_NO_SEGMENTATION_MASK,
            physicsClientId=self.twin.cid,
        )
        image = np.asarray(rgba, dtype=np.uint8).reshape(s.height, s.width, 4)[:, :, :3].copy()
        self._seq += 1
        return Frame(image=image, stamp_s=self.twin.time_s, seq=self._seq, camera_id=s.camera_id)
