"""A task scene on the twin: the twin, its 1 kHz control loop, the task bodies and cameras.

This is what an environment (or a robot server in sim mode) drives at the policy rate: send a TCP
target and a gripper command, let the loop run one policy period, read success and frames.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from robot_rl.controllers.loop import ControlLoop, LoopConfig
from robot_rl.controllers.targets import CartesianTarget
from robot_rl.sim.cameras import DEFAULT_CAMERAS, CameraSpec, SimCamera
from robot_rl.sim.tasks import GripperAction, Task, make_task
from robot_rl.sim.twin import PandaTwin, TwinConfig

from robot_rl.interfaces import Frame, RobotState

GRIPPER_OPEN_WIDTH_M = 0.08
GRIPPER_SPEED_M_S = 0.1
GRASP_FORCE_N = 60.0


@dataclass(frozen=True)
class SceneConfig:
    """task: a name from ``sim.tasks.TASKS``; policy_period_s: time one ``step`` advances."""

    task: str = "reach"
    seed: int = 0
    policy_period_s: float = 0.1
    cameras: tuple[CameraSpec, ...] = DEFAULT_CAMERAS
    twin: TwinConfig = field(default_factory=TwinConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)

    def __post_init__(self) -> None:
        if not 0.01 <= self.policy_period_s <= 1.0:
            raise ValueError(f"policy_period_s={self.policy_period_s}; allowed 0.01..1.0 s")


@dataclass(frozen=True)
class SceneStep:
    """After one policy step: sparse reward (1 on success, else 0), success, sim time (s)."""

    reward: float
    success: bool
    time_s: float


@dataclass(frozen=True)
class ExpertRun:
    success: bool
    steps: int
    time_s: float


class TwinScene:
    """One task on one twin. ``reset(seed)`` re-randomizes; ``step`` runs one policy period."""

    def __init__(self, config: SceneConfig | None = None, task: Task | None = None):
        self.config = config = config or SceneConfig()
        self.task = task or make_task(config.task)
        self.twin = PandaTwin(config.twin)
        self.task.build(self.twin)
        self.loop = ControlLoop(self.twin, config.loop)
        self.cameras = {spec.camera_id: SimCamera(self.twin, spec) for spec in config.cameras}
        self._ticks_per_step = max(1, round(config.policy_period_s / config.twin.period_s))
        self._gripper: GripperAction = None
        self.episode_time_s = 0.0
        self.reset(config.seed)

    def reset(self, seed: int) -> None:
        """Place the arm and objects from ``seed``; the loop then holds the arm where it is."""
        self.task.reset(self.twin, np.random.default_rng(seed))
        self.loop.restart()
        self._gripper = None
        if self.task.grasp_at_reset:
            self.command_gripper("close")
            self.loop.run_for(0.3)  # let the grasp force build before the episode starts
        self.episode_time_s = 0.0

    def command_gripper(self, action: GripperAction) -> None:
        """Open or close the fingers (non-blocking: they move as the loop ticks); None, or the
        command already under way, changes nothing. ValueError for any other action."""
        if action is None or action == self._gripper:
            return  # re-sending a command would restart the finger motion
        if action == "open":
            self.loop.gripper_move(GRIPPER_OPEN_WIDTH_M, GRIPPER_SPEED_M_S)
        elif action == "close":
            self.loop.gripper_grasp(0.0, GRASP_FORCE_N, GRIPPER_SPEED_M_S)
        else:
            raise ValueError(f"gripper action {action!r}; allowed 'open', 'close' or None")
        self._gripper = action

    def step(self, target: CartesianTarget | None, gripper: GripperAction = None) -> SceneStep:
        """Send a target (None keeps the last) and gripper command, then run one policy period."""
        if target is not None:
            self.loop.set_cartesian_target(target)
        self.command_gripper(gripper)
        for _ in range(self._ticks_per_step):
            self.loop.tick()
        self.episode_time_s += self._ticks_per_step * self.config.twin.period_s
        success = self.task.success(self.twin)
        return SceneStep(float(success), success, self.episode_time_s)

    def state(self) -> RobotState:
        return self.twin.read_state()

    def success(self) -> bool:
        return self.task.success(self.twin)

    def render(self) -> dict[str, Frame]:
        """One frame from every camera, stamped with sim time."""
        return {name: cam.read() for name, cam in self.cameras.items()}

    def run_expert(self, max_time_s: float | None = None) -> ExpertRun:
        """Let the task's scripted expert act until success or ``max_time_s`` (task default)."""
        limit = self.task.max_episode_s if max_time_s is None else max_time_s
        expert = self.task.expert()
        steps = 0
        while self.episode_time_s < limit:
            action = expert.act(self.twin)
            result = self.step(action.target, action.gripper)
            steps += 1
            if result.success:
                return ExpertRun(True, steps, self.episode_time_s)
        return ExpertRun(False, steps, self.episode_time_s)

    def close(self) -> None:
        self.twin.close()
