"""Pick cube: grasp a 4 cm cube from the table and lift it at least 5 cm."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from robot_rl.controllers.targets import CartesianTarget
from robot_rl.sim.tasks.base import (
    ExpertAction,
    GripperAction,
    add_box,
    gripper_down_quat,
    held_by_both_fingers,
    reset_arm_to_pose,
    sample_box,
    step_toward,
)
from robot_rl.sim.twin import PandaTwin


@dataclass(frozen=True)
class PickCubeConfig:
    cube_size_m: float = 0.04
    cube_mass_kg: float = 0.1
    cube_low_m: tuple[float, float] = (0.4, -0.15)
    cube_high_m: tuple[float, float] = (0.6, 0.15)
    max_cube_yaw_rad: float = math.pi / 4
    start_low_m: tuple[float, float, float] = (0.4, -0.15, 0.2)
    start_high_m: tuple[float, float, float] = (0.6, 0.15, 0.35)
    max_start_yaw_rad: float = 0.4
    lift_m: float = 0.05


class PickCubeTask:
    name = "pick_cube"
    max_episode_s = 10.0
    grasp_at_reset = False

    def __init__(self, config: PickCubeConfig | None = None):
        self.config = config or PickCubeConfig()
        self.cube_id = -1
        self.cube_yaw_rad = 0.0

    def build(self, twin: PandaTwin) -> None:
        h = self.config.cube_size_m / 2
        self.cube_id = add_box(twin, (h, h, h), self.config.cube_mass_kg, (0.1, 0.6, 0.9, 1.0))

    def reset(self, twin: PandaTwin, rng: np.random.Generator) -> None:
        cfg = self.config
        start = sample_box(rng, cfg.start_low_m, cfg.start_high_m)
        yaw = rng.uniform(-cfg.max_start_yaw_rad, cfg.max_start_yaw_rad)
        reset_arm_to_pose(twin, start, gripper_down_quat(yaw))
        xy = sample_box(rng, cfg.cube_low_m, cfg.cube_high_m)
        self.cube_yaw_rad = float(rng.uniform(-cfg.max_cube_yaw_rad, cfg.max_cube_yaw_rad))
        c = twin.client
        quat = c.getQuaternionFromEuler([0.0, 0.0, self.cube_yaw_rad])
        c.resetBasePositionAndOrientation(self.cube_id, [xy[0], xy[1], cfg.cube_size_m / 2], quat)
        c.resetBaseVelocity(self.cube_id, [0.0, 0.0, 0.0], [0.0, 0.0, 0.0])

    def cube_pos_m(self, twin: PandaTwin) -> np.ndarray:
        return np.array(twin.client.getBasePositionAndOrientation(self.cube_id)[0])

    def success(self, twin: PandaTwin) -> bool:
        """The cube is held by both fingers with its bottom at least ``lift_m`` above the table."""
        lifted = self.cube_pos_m(twin)[2] - self.config.cube_size_m / 2 >= self.config.lift_m
        return bool(lifted and held_by_both_fingers(twin, self.cube_id))

    def features(self, twin: PandaTwin) -> np.ndarray:
        """(5,): cube minus TCP (m), lift as a fraction of ``lift_m``, both fingers touching."""
        cube = self.cube_pos_m(twin)
        return np.array(
            [
                *(cube - twin.read_state().ee_pos_m),
                (cube[2] - self.config.cube_size_m / 2) / self.config.lift_m,
                float(held_by_both_fingers(twin, self.cube_id)),
            ]
        )

    def expert(self) -> PickCubeExpert:
        return PickCubeExpert(self)


class PickCubeExpert:
    """Above the cube -> down around it -> close -> lift, finger yaw matched to the cube's."""

    def __init__(self, task: PickCubeTask, step_m: float = 0.025):
        self.task = task
        self.step_m = step_m
        self.phase = "approach"
        self._closing_steps = 0
        self._lift_goal: np.ndarray | None = None

    def act(self, twin: PandaTwin) -> ExpertAction:
        cube = self.task.cube_pos_m(twin)
        pos = twin.read_state().ee_pos_m
        quat = gripper_down_quat(self.task.cube_yaw_rad)
        above = cube + np.array([0.0, 0.0, 0.1])
        grasp = cube + np.array([0.0, 0.0, 0.005])
        gripper: GripperAction = "open"
        if self.phase == "approach":
            goal = above
            if np.linalg.norm(pos - above) < 0.01:
                self.phase = "descend"
        elif self.phase == "descend":
            goal = grasp
            if np.linalg.norm(pos - grasp) < 0.004:
                self.phase = "close"
        elif self.phase == "close":
            goal, gripper = grasp, "close"
            self._closing_steps += 1
            if self._closing_steps >= 6:  # 0.6 s: the fingers travel 4 cm at 0.1 m/s
                self.phase = "lift"
                # Fixed when the lift starts: a goal that followed the held cube would climb
                # with it for ever when the grasp is off and success never comes.
                self._lift_goal = grasp + np.array([0.0, 0.0, 0.12])
        else:
            goal, gripper = self._lift_goal, "close"
        return ExpertAction(CartesianTarget(step_toward(pos, goal, self.step_m), quat), gripper)
