"""The render-only mirror shows what the source scene shows, from its published state alone."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from robot_rl.sim.cameras import DEFAULT_CAMERAS
from robot_rl.sim.mirror import TwinMirror, body_poses
from robot_rl.sim.scene import SceneConfig, TwinScene

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("task", ["pick_cube", "peg_insert"])
def test_the_mirror_renders_the_source_scene(task: str) -> None:
    cams = tuple(dataclasses.replace(c, width=64, height=64) for c in DEFAULT_CAMERAS)
    source = TwinScene(SceneConfig(task=task, cameras=cams))
    mirror = TwinMirror(SceneConfig(task=task, cameras=cams))
    try:
        source.reset(7)
        expert = source.task.expert()
        for _ in range(15):  # the arm and the objects move away from the mirror's reset
            action = expert.act(source.twin)
            source.step(action.target, action.gripper)
        state = source.state()
        mirror.update(state.q_rad, state.gripper_width_m, body_poses(source.twin))
        seen, shown = source.render(), mirror.render()
        before = {n: f.image.astype(int) for n, f in seen.items()}
        for name, image in shown.items():
            assert np.abs(image.astype(int) - before[name]).mean() < 1.0  # the same picture
        fresh = TwinScene(SceneConfig(task=task, cameras=cams))  # an unmirrored scene differs
        fresh.reset(8)
        other = fresh.render()["front"].image.astype(int)
        fresh.close()
        assert np.abs(other - before["front"]).mean() > 1.0
        with pytest.raises(ValueError, match="another task"):
            mirror.update(state.q_rad, state.gripper_width_m, np.zeros((1, 7)))
    finally:
        source.close()
        mirror.close()
