"""The twin's named cameras: lookup by name, and what the fixed views cover."""

from __future__ import annotations

import itertools

import numpy as np
import pybullet
import pytest
from robot_rl.sim.cameras import DEFAULT_CAMERAS, SIDE, TWIN_CAMERAS, CameraSpec, twin_cameras
from robot_rl.sim.tasks.reach import ReachConfig
from robot_rl.sim.twin import READY_Q_RAD, PandaTwin


def test_twin_cameras_come_in_the_order_asked_at_the_size_asked() -> None:
    specs = twin_cameras(["side", "front"], 64, 48)
    assert [s.camera_id for s in specs] == ["side", "front"]
    assert all((s.width, s.height) == (64, 48) for s in specs)
    assert specs[0].eye_m == SIDE.eye_m  # the pose is the named camera's, only the size changes
    assert {c.camera_id for c in DEFAULT_CAMERAS} == {"front", "wrist"}  # side, top: opt-in
    assert {c.camera_id for c in TWIN_CAMERAS} == {"front", "wrist", "side", "top"}


@pytest.mark.parametrize(("names", "message"), [(["front", "roof"], r"\['roof'\] unknown"),
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


@pytest.mark.parametrize("name", ["side", "top"])
def test_side_and_top_cameras_frame_the_whole_reach_goal_box(name: str) -> None:
    """Every corner of the reach goal box, ball and all, lies inside the side and top cameras'
    images (the front camera loses goals near its top edge, which is why pixel reach adds them)."""
    spec = twin_cameras([name], 64, 64)[0]
    view = pybullet.computeViewMatrix(spec.eye_m, spec.target_m, spec.up)
    projection = pybullet.computeProjectionMatrixFOV(spec.fov_deg, 1.0, spec.near_m, spec.far_m)
    cfg = ReachConfig()
    ball_px = 2  # the ball's radius, at least this many pixels of margin from the edge
    for corner in itertools.product(*zip(cfg.goal_low_m, cfg.goal_high_m, strict=True)):
        ndc = _pixel(view, projection, np.asarray(corner))
        assert np.all(np.abs(ndc) < 1.0 - 2 * ball_px / spec.width), (corner, ndc)


def _link_pixels(twin: PandaTwin, spec: CameraSpec, links: list[int]) -> np.ndarray:
    """(row, col) of every pixel of the fixed camera ``spec`` that shows one of the robot's
    ``links`` (PyBullet's segmentation mask: after occlusion, so a hidden link has none)."""
    view = pybullet.computeViewMatrix(spec.eye_m, spec.target_m, spec.up)
    projection = pybullet.computeProjectionMatrixFOV(
        spec.fov_deg, spec.width / spec.height, spec.near_m, spec.far_m
    )
    _, _, _, _, seg = pybullet.getCameraImage(
        spec.width, spec.height, view, projection,
        flags=pybullet.ER_SEGMENTATION_MASK_OBJECT_AND_LINKINDEX,
        renderer=pybullet.ER_TINY_RENDERER, physicsClientId=twin.cid,
    )  # fmt: skip
    seg = np.asarray(seg).reshape(spec.height, spec.width)
    body, link = seg & ((1 << 24) - 1), (seg >> 24) - 1  # pixels of nothing are -1: body 2**24-1
    return np.argwhere((body == twin.robot_id) & np.isin(link, links))


def test_top_camera_frames_the_hand_at_every_corner_of_the_reach_goal_box(module_twin) -> None:
    """With the TCP at any corner of the reach goal box, the hand and fingers are in the top view
    at the pixel-reach size, off the image's border: where the front view cuts the hand off (the
    top of the box), the top view still shows where it is in x and y, beside the ball."""
    twin, spec = module_twin, twin_cameras(["top"], 64, 64)[0]
    links = [twin.hand_link, *twin.finger_idx]
    down = pybullet.getQuaternionFromEuler([np.pi, 0.0, 0.0])
    box = ReachConfig()
    for corner in itertools.product(*zip(box.goal_low_m, box.goal_high_m, strict=True)):
        twin.reset(np.asarray(READY_Q_RAD), 0.08)
        for _ in range(5):  # IK from the pose it reached, until the TCP settles on the corner
            q = pybullet.calculateInverseKinematics(
                twin.robot_id, twin.tcp_link, corner, down, maxNumIterations=200,
                physicsClientId=twin.cid,
            )[:7]  # fmt: skip
            twin.reset(np.asarray(q), 0.08)
        reached = twin.read_state().ee_pos_m
        assert np.linalg.norm(reached - corner) < 0.03, (corner, reached)  # joint limits allow it
        px = _link_pixels(twin, spec, links)
        assert len(px) > 0, f"TCP at {corner}: the hand is not in the top view"
        on_border = (px == 0) | (px == [spec.height - 1, spec.width - 1])
        assert not on_border.any(), f"TCP at {corner}: the top view cuts the hand off"
