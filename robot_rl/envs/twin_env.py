"""The arm env (``envs.arm_env``) over the in-process PyBullet twin, and ``make_env``, which
builds the env a config names: the twin, a robot behind a robot server (``env.remote``), or any
gymnasium env (``env.id``), with its success detector when ``env.reward_model`` names one.

``TwinBackend`` runs a target for one policy period through the twin's 1 kHz controller; success
and the task's ground-truth features come from the scene. ``TwinEnv`` adds what only a simulation
has: the scene, the task's scripted expert (``expert_action``) and rendering in state mode.
"""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from robot_rl.controllers.rotations import orientation_error
from robot_rl.controllers.targets import CartesianTarget
from robot_rl.envs.arm_env import (
    GRIPPER_ACTIONS,
    GRIPPER_OPEN_M,
    PROPRIO_DIM,
    ArmEnv,
    Detector,
    ResetFrame,
    RewardFn,
    action_to_target,
    check_action,
    delta_to_action,
    state_vector,
    twist_to_action,
)
from robot_rl.envs.config import EnvConfig, RemoteRobotConfig
from robot_rl.envs.gym_adapter import make_gym_env
from robot_rl.interfaces import RobotState
from robot_rl.sim.cameras import twin_cameras
from robot_rl.sim.scene import SceneConfig, TwinScene
from robot_rl.sim.tasks import GripperAction
from robot_rl.sim.tasks.base import ExpertAction
from robot_rl.transport.robot_status import RecentWarnings, TickRate

TwinEnvConfig = EnvConfig  # the env section's name in configs and code written before the split


class TwinBackend:
    """The in-process twin as an ``ArmBackend``."""

    def __init__(self, scene: TwinScene) -> None:
        self.scene = scene
        self._warnings: RecentWarnings | None = None  # attached when the console first asks
        self._sim_rate = TickRate(window_s=2.0)

    def robot_status(self) -> dict[str, Any]:
        """The twin's controller as a robot server reports it: its watchdog mode, the software
        stop, the lockstep loop's rate in sim time (``loop_hz`` is the target: a lockstep loop
        never misses a tick) and ``realtime_factor`` (sim seconds per wall second, 0 while the
        actor holds), the controller's and the twin's recent warnings. Reads plain attributes
        only, so it is safe while another thread steps the scene."""
        if self._warnings is None:
            self._warnings = RecentWarnings().attach()
        loop = self.scene.loop
        status = loop.status
        target_hz = 1.0 / loop.config.period_s
        sim_s = loop.telemetry.count * loop.config.period_s
        factor = self._sim_rate.update(round(sim_s * 1e6))
        out: dict[str, Any] = {
            "mode": int(status.mode) if status is not None else 1,
            "stopped": bool(loop.stopped), "faults": int(loop.faults),
            "rejected_targets": int(loop.rejected_targets), "loop_clock": "lockstep",
            "loop_hz": target_hz, "loop_hz_target": target_hz,
            "warnings": self._warnings.lines(), "warnings_total": self._warnings.total,
        }  # fmt: skip
        if factor is not None:
            out["realtime_factor"] = factor / 1e6
        return out

    def reset(self, seed: int) -> None:
        self.scene.reset(seed)

    def apply(self, target: CartesianTarget, gripper: GripperAction) -> None:
        self.scene.step(target, gripper)

    def state(self) -> RobotState:
        return self.scene.state()

    def features(self) -> np.ndarray:
        return self.scene.task.features(self.scene.twin)

    def success(self) -> bool:
        return self.scene.success()

    def frames(self) -> dict[str, np.ndarray]:
        return {name: frame.image for name, frame in self.scene.render().items()}

    def wrench(self) -> None:
        return None

    def info(self) -> dict[str, Any]:
        return {}

    def software_stop(self, stop: bool) -> None:
        if stop:
            self.scene.loop.software_stop()
        else:
            self.scene.loop.clear_stop()

    def close(self) -> None:
        if self._warnings is not None:
            self._warnings.detach()
        self.scene.close()


def success_reward(env: TwinEnv) -> float:
    """Sparse reward: 1 when the task's ground-truth success predicate holds, else 0."""
    return float(env.scene.success())


class TwinEnv(ArmEnv):
    """The arm env on the twin (see the module docstring)."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"]}

    def __init__(
        self,
        config: EnvConfig | None = None,
        reward_fn: RewardFn | None = None,
        detector: Detector | None = None,
    ) -> None:
        config = config or EnvConfig()
        if detector is not None and config.obs != "pixels":
            raise ValueError("a success detector scores camera frames: use obs 'pixels'")
        specs = (
            twin_cameras(config.cameras, config.image_width, config.image_height)
            if config.obs == "pixels"
            else ()
        )
        self.scene = TwinScene(
            SceneConfig(task=config.task, policy_period_s=config.policy_period_s, cameras=specs)
        )
        self.task = self.scene.task
        steps = config.max_episode_steps or round(self.task.max_episode_s / config.policy_period_s)
        n_features = len(self.task.features(self.scene.twin)) if config.obs == "state" else 0
        super().__init__(
            config, TwinBackend(self.scene), max_episode_steps=steps, n_features=n_features,
            grasp_at_reset=self.task.grasp_at_reset, detector=detector,
            reward_source="detector" if detector is not None else "success", reward_fn=reward_fn,
        )  # fmt: skip

    def render(self) -> np.ndarray:
        """The first camera's current frame (renders even in state mode)."""
        return next(iter(self.scene.render().values())).image

    def expert_action(self, expert_action: ExpertAction) -> np.ndarray:
        """The env action that moves toward a scripted expert's target (clipped to [-1, 1])."""
        state = self.scene.state()
        rotation = orientation_error(expert_action.target.quat_xyzw, state.ee_quat_xyzw)
        return delta_to_action(self.config, self.reset_frame,
                               expert_action.target.pos_m - state.ee_pos_m, rotation,
                               expert_action.gripper)  # fmt: skip


def load_env_detector(config: EnvConfig) -> Detector | None:
    """The success detector ``config.reward_model`` names (None when unset)."""
    if not config.reward_model:
        return None
    from robot_rl.rewards.detector import load_detector

    return load_detector(config.reward_model, k=config.reward_k)


def make_env(config: EnvConfig, reward_fn: RewardFn | None = None) -> gym.Env:
    """The env ``config`` names (see the module docstring), with its detector injected."""
    if config.id:  # an external gymnasium env through the adapter
        return make_gym_env(config.id, config.kwargs, config.adapter, config.max_episode_steps)
    if config.remote is not None:
        from robot_rl.envs.remote_env import connect_remote_env

        return connect_remote_env(config, load_env_detector(config))
    return TwinEnv(config, reward_fn, load_env_detector(config))


__all__ = [
    "GRIPPER_ACTIONS", "GRIPPER_OPEN_M", "PROPRIO_DIM", "RemoteRobotConfig", "ResetFrame",
    "TwinEnv", "TwinEnvConfig", "action_to_target", "check_action", "make_env",
    "state_vector", "success_reward", "twist_to_action",
]  # fmt: skip
