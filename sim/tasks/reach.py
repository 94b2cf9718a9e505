"""Reach: bring the TCP to a goal shown as a red ball (visual only: no contact).

The ball is drawn larger than the success radius so a policy from pixels can see it: at the
front camera's ~0.6 m and 128 px over 50 degrees, a 3 cm radius covers ~13 px across (the old
2 cm, ~9 px, was a few pixels once shaded); success still needs the TCP within 1.5 cm of its
centre.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pybullet
from robot_rl.controllers.targets import CartesianTarget
from robot_rl.sim.tasks.base import (
    ExpertAction,
    gripper_down_quat,
    reset_arm_to_pose,
    sample_box,
    step_toward,
)
from robot_rl.sim.twin import PandaTwin


@dataclass(frozen=True)
class ReachConfig:
    start_low_m: tuple[float, float, float] = (0.35, -0.2, 0.2)
    start_high_m: tuple[float, float, float] = (0.6, 0.2, 0.4)
    goal_low_m: tuple[float, float, float] = (0.35, -0.25, 0.1)
    goal_high_m: tuple[float, float, float] = (0.65, 0.25, 0.4)
    min_goal_distance_m: float = 0.1
    success_radius_m: float = 0.015
    max_start_yaw_rad: float = 0.4
    goal_visual_radius_m: float = 0.03
    goal_rgba: tuple[float, float, float, float] = (1.0, 0.05, 0.05, 1.0)


class ReachTask:
    name = "reach"
    max_episode_s = 6.0
    grasp_at_reset = False

    def __init__(self, config: ReachConfig | None = None):
        self.config = config or ReachConfig()
        self.goal_m = np.zeros(3)
        self._goal_id = -1

    def build(self, twin: PandaTwin) -> None:
        c = twin.client
        visual = c.createVisualShape(
            pybullet.GEOM_SPHERE,
            radius=self.config.goal_visual_radius_m,
            rgbaColor=list(self.config.goal_rgba),
        )
        self._goal_id = c.createMultiBody(0.0, -1, visual, basePosition=[0.0, 0.0, -1.0])

    def reset(self, twin: PandaTwin, rng: np.random.Generator) -> None:
        cfg = self.config
        start = sample_box(rng, cfg.start_low_m, cfg.start_high_m)
        for _ in range(100):
            self.goal_m = sample_box(rng, cfg.goal_low_m, cfg.goal_high_m)
            if np.linalg.norm(self.goal_m - start) >= cfg.min_goal_distance_m:
                break
        yaw = rng.uniform(-cfg.max_start_yaw_rad, cfg.max_start_yaw_rad)
        reset_arm_to_pose(twin, start, gripper_down_quat(yaw))
        twin.client.resetBasePositionAndOrientation(
            self._goal_id, self.goal_m.tolist(), [0, 0, 0, 1]
        )

    def success(self, twin: PandaTwin) -> bool:
        dist = np.linalg.norm(twin.read_state().ee_pos_m - self.goal_m)
        return bool(dist <= self.config.success_radius_m)

    def features(self, twin: PandaTwin) -> np.ndarray:
        """(3,) m: goal minus TCP position, base frame."""
        return self.goal_m - twin.read_state().ee_pos_m

    def expert(self) -> ReachExpert:
        return ReachExpert(self)


class ReachExpert:
    """Straight line to the goal at about 0.25 m/s, gripper pointing down."""

    def __init__(self, task: ReachTask, step_m: float = 0.025):
        self.task = task
        self.step_m = step_m

    def act(self, twin: PandaTwin) -> ExpertAction:
        pos = twin.read_state().ee_pos_m
        goal = step_toward(pos, self.task.goal_m, self.step_m)
        return ExpertAction(CartesianTarget(goal, gripper_down_quat(0.0)))
