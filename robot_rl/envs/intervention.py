"""Human-in-the-loop interventions: an intervener may replace the policy's action on any step.

``InterventionWrapper`` asks its intervener each step; when it answers with an action, that action
is executed and reported as ``info["action"]`` with ``info["intervened"] = True`` (the actor records
the executed action, so the learner and the demo buffer see what the arm actually did).

``ScriptedIntervener`` stands in for the operator in sim: it watches the task's scripted expert and
takes over when the policy strays (moves against the expert's direction, or works the gripper
against it, for ``patience`` steps in a row), drives for ``takeover_steps`` steps, then hands back.
With ``episode_fraction`` below 1 it watches only that share of the episodes (a seeded draw at each
reset), as an operator who does not rescue every attempt: in the rest the policy acts alone and its
buffer meets the states a rescue cuts short (where it ends up when it strays and nobody steps in).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import gymnasium as gym
import numpy as np

from robot_rl.envs.twin_env import TwinEnv
from robot_rl.sim.tasks import Expert


class Intervener(Protocol):
    def reset(self, env: TwinEnv) -> None: ...

    def action(self, env: TwinEnv, policy_action: np.ndarray) -> np.ndarray | None:
        """The action to execute instead of ``policy_action``, or None to let the policy act."""
        ...


@dataclass(frozen=True)
class ScriptedIntervenerConfig:
    patience: int = 3  # straying steps in a row before taking over
    takeover_steps: int = 5
    min_expert_step: float = 0.2  # ignore direction when the expert barely moves (|a| below this)
    episode_fraction: float = 1.0  # the share of episodes it watches (a seeded draw per episode)

    def __post_init__(self) -> None:
        if not 0.0 <= self.episode_fraction <= 1.0:
            raise ValueError(
                f"intervener.episode_fraction must be in [0, 1], got {self.episode_fraction}"
            )


class ScriptedIntervener:
    """Takes over from a straying policy with the task's scripted expert (see module docstring)."""

    def __init__(self, config: ScriptedIntervenerConfig | None = None, seed: int = 0) -> None:
        self.config = config or ScriptedIntervenerConfig()
        self._rng = np.random.default_rng(seed)
        self._expert: Expert | None = None
        self._straying = 0
        self._driving = 0
        self.watching = True  # whether it may take over in this episode

    def reset(self, env: TwinEnv) -> None:
        self._expert = env.task.expert()
        self._straying = 0
        self._driving = 0
        self.watching = bool(self._rng.random() < self.config.episode_fraction)  # random() < 1

    def action(self, env: TwinEnv, policy_action: np.ndarray) -> np.ndarray | None:
        if self._expert is None:
            raise RuntimeError("ScriptedIntervener.action before reset: wrap the env first")
        if not self.watching:
            return None
        expert = env.expert_action(self._expert.act(env.scene.twin))
        if self._driving > 0:
            self._driving -= 1
            return expert
        if self._strays(policy_action, expert):
            self._straying += 1
        else:
            self._straying = 0
        if self._straying >= self.config.patience:
            self._straying = 0
            self._driving = self.config.takeover_steps - 1
            return expert
        return None

    def _strays(self, policy: np.ndarray, expert: np.ndarray) -> bool:
        xyz_e, xyz_p = expert[:3], policy[:3]
        against = (
            np.linalg.norm(xyz_e) >= self.config.min_expert_step and float(xyz_p @ xyz_e) <= 0.0
        )
        # A gripper command opposite to the expert's (close vs open) is straying too.
        gripper_against = expert[-1] * policy[-1] < -0.25
        return bool(against or gripper_against)


class InterventionWrapper(gym.Wrapper):
    """Lets an intervener replace actions; adds ``intervened`` and ``action`` to ``info``."""

    def __init__(self, env: TwinEnv, intervener: Intervener) -> None:
        super().__init__(env)
        self.intervener = intervener
        self.interventions = 0  # steps taken over in this episode

    def reset(self, **kwargs: Any) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        self.intervener.reset(self.env.unwrapped)
        self.interventions = 0
        return obs, info

    def step(
        self, action: np.ndarray
    ) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        override = self.intervener.action(self.env.unwrapped, np.asarray(action))
        executed = np.asarray(action if override is None else override, dtype=np.float32)
        obs, reward, terminated, truncated, info = self.env.step(executed)
        info["intervened"] = override is not None
        info["action"] = executed
        self.interventions += override is not None
        return obs, reward, terminated, truncated, info
