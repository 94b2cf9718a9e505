"""Small spaces, configs and batches for the agent tests (tiny images keep them fast on CPU)."""

from __future__ import annotations

from collections.abc import Sequence

import gymnasium
import numpy as np
import torch

from robot_rl.agents.config import SACConfig
from robot_rl.agents.sac import SACAgent
from robot_rl.data.batch import Batch

CAMERAS = ("front", "wrist")


def spaces(
    image_size: int = 16,
    cameras: Sequence[str] = CAMERAS,
    state_dim: int = 5,
    action_dim: int = 4,
) -> tuple[gymnasium.spaces.Dict, gymnasium.spaces.Box]:
    obs = {
        name: gymnasium.spaces.Box(0, 255, (image_size, image_size, 3), np.uint8)
        for name in cameras
    }
    obs["state"] = gymnasium.spaces.Box(-np.inf, np.inf, (state_dim,), np.float32)
    action = gymnasium.spaces.Box(-1.0, 1.0, (action_dim,), np.float32)
    return gymnasium.spaces.Dict(obs), action


def small_config(**overrides: object) -> SACConfig:
    """Narrow networks on CPU; everything else at its default unless overridden."""
    fields: dict[str, object] = dict(
        hidden_dims=(32, 32),
        latent_dim=16,
        state_latent_dim=8,
        num_spatial_features=2,
        device="cpu",
    )
    fields.update(overrides)
    return SACConfig(**fields)


def make_agent(
    seed: int = 0,
    image_size: int = 16,
    cameras: Sequence[str] = CAMERAS,
    state_dim: int = 5,
    action_dim: int = 4,
    **overrides: object,
) -> SACAgent:
    obs_space, action_space = spaces(image_size, cameras, state_dim, action_dim)
    return SACAgent(obs_space, action_space, small_config(**overrides), seed=seed)


def random_obs(
    agent: SACAgent, batch_size: int, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    obs = {
        name: torch.randint(0, 256, (batch_size, *shape), dtype=torch.uint8, generator=generator)
        for name, shape in agent.spec.image_shapes.items()
    }
    obs["state"] = torch.randn(batch_size, agent.spec.state_dim, generator=generator)
    return obs


def random_batch(
    agent: SACAgent, batch_size: int = 16, seed: int = 0, discount: float = 0.9
) -> Batch:
    """Random observations, actions in [-1, 1], rewards ~ N(0, 1), a quarter of them terminal."""
    g = torch.Generator().manual_seed(seed)
    terminal = torch.arange(batch_size) % 4 == 0
    return Batch(
        obs=random_obs(agent, batch_size, g),
        actions=torch.rand(batch_size, agent.spec.action_dim, generator=g) * 2 - 1,
        rewards=torch.randn(batch_size, generator=g),
        next_obs=random_obs(agent, batch_size, g),
        discounts=torch.where(terminal, 0.0, discount),
        gripper_penalties=torch.where(torch.arange(batch_size) % 3 == 0, 0.1, 0.0),
        intervened=torch.zeros(batch_size, dtype=torch.bool),
    )
