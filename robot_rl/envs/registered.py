"""The entry point of the registered ``robot_rl/...`` ids (see ``robot_rl.envs.registration``)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from robot_rl.config import from_dict
from robot_rl.envs.twin_env import Detector, TwinEnv, TwinEnvConfig
from robot_rl.sim.cameras import DEFAULT_CAMERAS, SimCamera


class RegisteredTwinEnv(TwinEnv):
    """``TwinEnv`` with gymnasium's ``render_mode``: ``"rgb_array"`` renders the front camera,
    also in state mode, where the scene itself has no cameras."""

    def __init__(
        self,
        config: TwinEnvConfig,
        detector: Detector | None = None,
        render_mode: str | None = None,
    ) -> None:
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode={render_mode!r}; allowed: rgb_array")
        super().__init__(config, detector=detector)
        self.render_mode = render_mode
        self.metadata = {**self.metadata, "render_fps": round(1.0 / config.policy_period_s)}
        self._render_camera: SimCamera | None = None

    def render(self) -> np.ndarray:
        """(H, W, 3) uint8 RGB from the front camera at the config's image size."""
        if self.scene.cameras:
            return super().render()
        if self._render_camera is None:
            spec = next(c for c in DEFAULT_CAMERAS if c.camera_id == "front")
            spec = dataclasses.replace(
                spec, width=self.config.image_width, height=self.config.image_height
            )
            self._render_camera = SimCamera(self.scene.twin, spec)
        return self._render_camera.read().image


def make_twin(task: str, obs: str = "state", **kwargs: Any) -> RegisteredTwinEnv:
    """The entry point: a twin env for ``TwinEnvConfig(task=task, obs=obs, **kwargs)``, with a
    success detector when ``reward_model`` names one (as ``robot-rl train`` builds it)."""
    render_mode = kwargs.pop("render_mode", None)
    config = from_dict(TwinEnvConfig, {"task": task, "obs": obs, **kwargs})
    if config.remote is not None:
        raise ValueError("robot_rl/ ids build the in-process twin; leave 'remote' unset")
    detector = None
    if config.reward_model:
        from robot_rl.rewards.detector import load_detector

        detector = load_detector(config.reward_model, k=config.reward_k)
    return RegisteredTwinEnv(config, detector, render_mode)


__all__ = ["RegisteredTwinEnv", "make_twin"]
