"""The twin env's observations and actions over a robot client: the same policy runs against a
robot server, local or across the network (the twin served by ``robot-rl robot-server``, or a
real arm's server).

Observations and actions follow ``twin_env`` exactly (same ``TwinEnvConfig``, same state vector,
same reset-frame deltas), so a policy trained in one runs in the other. Time is the wall clock:
each step sends the target, a heartbeat half a period later (so the server's 100 ms watchdog
never sees a 10 Hz stream as stalled, without restarting the reference) and returns the newest
state at the next policy tick.
Success comes from the server's state (the twin's ground truth) unless a ``reward_fn`` is given
(a success detector on a real arm).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from robot_rl.actions import gripper_value_to_index
from robot_rl.data.batch import STATE_KEY
from robot_rl.envs.twin_env import (
    GRIPPER_ACTIONS,
    PROPRIO_DIM,
    ResetFrame,
    TwinEnvConfig,
    action_to_target,
    check_action,
    state_vector,
)
from robot_rl.interfaces import RobotState
from robot_rl.sim.tasks import make_task
from robot_rl.transport.camera_stream import CameraSubscriber
from robot_rl.transport.robot_server import RemoteState, RobotClient


class RemoteEnv(gym.Env):
    """See the module docstring. ``info``: success, gripper_penalty, state_age_s, seed."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}

    def __init__(
        self,
        config: TwinEnvConfig,
        client: RobotClient,
        cameras: CameraSubscriber | None = None,
        reward_fn: Callable[[RemoteState], float] | None = None,
        state_timeout_s: float = 1.0,
        max_skew_s: float = 0.05,
    ) -> None:
        if config.obs == "pixels" and cameras is None:
            raise ValueError("pixel observations need a CameraSubscriber for the env's cameras")
        self.config, self.client, self.cameras = config, client, cameras
        self.reward_fn = reward_fn
        self.state_timeout_s, self.max_skew_s = state_timeout_s, max_skew_s
        task = make_task(config.task)
        self.grasp_at_reset = task.grasp_at_reset
        self.max_episode_steps = config.max_episode_steps or round(
            task.max_episode_s / config.policy_period_s
        )
        first = client.latest(timeout_s=state_timeout_s)
        n_features = 0
        if config.obs == "state":
            if first.features is None:
                raise ValueError("obs 'state' needs task features; this server sends none")
            n_features = len(first.features)
        spaces: dict[str, gym.Space] = {
            STATE_KEY: gym.spaces.Box(-np.inf, np.inf, (PROPRIO_DIM + n_features,), np.float32)
        }
        if config.obs == "pixels":
            shape = (config.image_height, config.image_width, 3)
            for name in config.cameras:
                spaces[name] = gym.spaces.Box(0, 255, shape, np.uint8)
        self.observation_space = gym.spaces.Dict(spaces)
        action_dim = 3 + (3 if config.rotation_actions else 0) + 1
        self.action_space = gym.spaces.Box(-1.0, 1.0, (action_dim,), np.float32)
        self._reset = ResetFrame.of(first.state)
        self._latest = first
        self._steps = 0
        self._gripper_index = 2
        self._next_tick = time.monotonic()
        self._interrupt = threading.Event()

    def interrupt_step(self) -> None:
        """Cut the current step's wait short (from any thread): the operator took over or moved,
        so the next step, with their action, goes out now instead of at the next period."""
        self._interrupt.set()

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        episode_seed = int(self.np_random.integers(2**31 - 1))
        reply = self.client.reset(episode_seed)
        self._latest = self.client.latest(self.state_timeout_s, newer_than_seq=reply["state_seq"])
        self._reset = ResetFrame.of(self._latest.state)
        self._gripper_index = 0 if self.grasp_at_reset else 2
        self._steps = 0
        self._next_tick = time.monotonic() + self.config.policy_period_s
        info = {"success": bool(self._latest.meta.get("success", False)), "seed": episode_seed}
        return self._observation(), info

    def step(
        self, action: np.ndarray
    ) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        action = check_action(action, self.action_space)
        cfg = self.config
        state = self.client.latest(timeout_s=self.state_timeout_s)
        target = action_to_target(cfg, state.state, self._reset, action)
        index = int(gripper_value_to_index(float(action[-1])))
        toggled = index != 1 and index != self._gripper_index
        if index != 1:
            self._gripper_index = index
        gripper = GRIPPER_ACTIONS[index]
        period = cfg.policy_period_s
        start = max(time.monotonic(), self._next_tick - period)
        self.client.send_target(target, gripper)
        cut = self._interrupt.wait(max(0.0, start + period / 2 - time.monotonic()))
        if not cut:
            self.client.keep_alive()  # so the server's 100 ms watchdog never sees a 10 Hz stall
            cut = self._interrupt.wait(max(0.0, start + period - time.monotonic()))
        self._interrupt.clear()
        self._next_tick = time.monotonic() if cut else start + period
        self._latest = self.client.latest(timeout_s=self.state_timeout_s)
        self._steps += 1
        success = bool(self._latest.meta.get("success", False))
        reward = float(self.reward_fn(self._latest)) if self.reward_fn else float(success)
        terminated = success
        truncated = not terminated and self._steps >= self.max_episode_steps
        info = {
            "success": success,
            "gripper_penalty": cfg.gripper_penalty if toggled else 0.0,
            "state_age_s": time.monotonic() - self._latest.received_s,
        }
        return self._observation(), reward, terminated, truncated, info

    @property
    def reset_frame(self) -> ResetFrame:
        """The TCP pose at this episode's reset (the frame actions are in)."""
        return self._reset

    def robot_state(self) -> RobotState:
        """The newest state the robot server sent."""
        return self._latest.state

    def close(self) -> None:
        for part in (self.client, self.cameras):
            close = getattr(part, "close", None)
            if close is not None:
                close()

    def software_stop(self, stop: bool = True) -> None:
        """Latch (or clear) the robot server's software stop (damping; targets refused)."""
        self.client.software_stop(stop)

    def _observation(self) -> dict[str, np.ndarray]:
        features = self._latest.features if self.config.obs == "state" else None
        obs = {STATE_KEY: state_vector(self.config, self._latest.state, self._reset, features)}
        if self.cameras is not None and self.config.obs == "pixels":
            frames = self.cameras.wait_synchronized(self.max_skew_s, self.state_timeout_s)
            for name in self.config.cameras:
                obs[name] = frames[name].frame.image
        return obs
