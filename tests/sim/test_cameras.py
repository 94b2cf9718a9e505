"""The twin's named cameras: lookup by name, and what the fixed views cover."""

from __future__ import annotations

import itertools

import numpy as np
import pybullet
import pytest
from robot_rl.sim.cameras import DEFAULT_CAMERAS, SIDE, TWIN_CAMERAS, twin_cameras
from robot_rl.sim.tasks.reach import ReachConfig


def test_twin_cameras_come_in_the_order_asked_at_the_size_asked() -> None:
    specs = twin_cameras(["side", "front"], 64, 48)
    assert [s.camera_id for s in specs] == ["side", "front"]
    assert all((s.width, s.height) == (64, 48) for s in specs)
    assert specs[0].eye_m == SIDE.eye_m  # the pose is the named camera's, only the size changes
    assert {c.camera_id for c in DEFAULT_CAMERAS} == {"front", "wrist"}  # side is opt-in
    assert {c.camera_id for c in TWIN_CAMERAS} == {"front", "wrist", "side"}


@pytest.mark.parametrize(("names", "message"), [(["front", "top"], r"\['top'\] unknown"),
                                                (["front", "front"], "twice")])  # fmt: skip
def test_twin_cameras_refuse_unknown_and_repeated_names(names: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        twin_cameras(names, 64, 64)


def _pixel(view: list[float], projection: list[float], point: np.ndarray) -> np.ndarray:
    """Normalised device coordinates (x, y in [-1, 1] inside the image) of a world point."""
    v = np.asarray(view).reshape(4, 4).T  # pybullet matrices are column-major
    p = np.asarray(projection).reshape(4, 4).T
    clip = p @ v @ np.append(point, 1.0)
    assert clip[3] > 0, "the point is behind the camera"
    return clip[:2] / clip[3]


def test_side_camera_frames_the_whole_reach_goal_box() -> None:
    """Every corner of the reach goal box, ball and all, lies inside the side camera's image
    (the front camera loses goals near its top edge, which is why pixel reach adds this view)."""
    spec = twin_cameras(["side"], 64, 64)[0]
    view = pybullet.computeViewMatrix(spec.eye_m, spec.target_m, spec.up)
    projection = pybullet.computeProjectionMatrixFOV(spec.fov_deg, 1.0, spec.near_m, spec.far_m)
    cfg = ReachConfig()
    ball_px = 2  # the ball's radius, at least this many pixels of margin from the edge
    for corner in itertools.product(*zip(cfg.goal_low_m, cfg.goal_high_m, strict=True)):
        ndc = _pixel(view, projection, np.asarray(corner))
        assert np.all(np.abs(ndc) < 1.0 - 2 * ball_px / spec.width), (corner, ndc)
